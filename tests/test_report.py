"""analysis.report on a real seed sweep (3 seeds x 2 learning rates of the tiny GPT), opened in a real
browser: Debian's headless Chromium draws it (no console errors, not blank) and its DOM holds the
runs' numbers, samples as text, inline images and links to files that exist."""

import base64
import math
import os
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
from matplotlib.image import imread
from scipy import stats

from analysis import report
from harness import records
from harness.run_dir import RunDir
from tests.helpers import PNG, SWEEP_LRS, SWEEP_PROMPT, SWEEP_SEEDS

pytestmark = pytest.mark.slow
# Debian's chromium, headless, with nothing that reaches for the network or a profile of ours.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-logging=stderr", "--v=0"]
WINDOW = (1280, 2000)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium binary, installed from Debian's packages when missing (root only)."""
    if shutil.which("chromium"):
        return shutil.which("chromium")
    if os.geteuid() != 0:
        pytest.skip("chromium is not installed, and installing it with apt-get needs root")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    install = ["apt-get", "install", "-y", "chromium"]
    done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1200)
    if done.returncode != 0:  # a fresh machine may have no package lists yet
        subprocess.run(["apt-get", "update"], capture_output=True, env=env, timeout=600)
        done = subprocess.run(install, capture_output=True, text=True, env=env, timeout=1200)
    if done.returncode != 0 or not shutil.which("chromium"):
        pytest.skip(f"apt-get install -y chromium failed: {done.stderr.strip()[-400:]}")
    return shutil.which("chromium")


def browse(chromium: str, page: Path, profile: Path, *mode: str) -> subprocess.CompletedProcess:
    """Chromium on file://page with `mode` (--screenshot=PNG or --dump-dom); its log on stderr."""
    return subprocess.run([chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *mode, page.resolve().as_uri()],
                          capture_output=True, text=True, timeout=180, check=True)


def console_messages(log: str) -> list[str]:
    """What the page wrote to the console (errors, uncaught exceptions), as Chromium logs it:
    `[pid:tid:time:INFO:CONSOLE:line] "message", source: URL`. A page without scripts writes none."""
    return [line for line in log.splitlines() if ":CONSOLE" in line]


def screenshot(chromium: str, page: Path, tmp_path: Path) -> tuple[np.ndarray, list[str]]:
    png = tmp_path / f"{page.stem}.png"
    done = browse(chromium, page, tmp_path / "profile", f"--screenshot={png}", f"--window-size={WINDOW[0]},{WINDOW[1]}")
    return imread(png), console_messages(done.stderr)


class Dom(HTMLParser):
    """The parts of a DOM the tests read: every table's rows of cell texts, image sources, link
    targets, the tags used, and the text of <pre> elements."""

    def __init__(self, text: str):
        super().__init__()
        self.tables: list[list[list[str]]] = []
        self.images, self.links, self.tags, self.pre = [], [], set(), []
        self._cell: list[str] | None = None
        self._in_pre = False
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.add(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "img":
            self.images.append(a["src"])
        elif tag == "a":
            self.links.append(a["href"])
        elif tag == "pre":
            self._in_pre = True
            self.pre.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "pre":
            self._in_pre = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_pre:
            self.pre[-1] += data


def final_val_loss(run_dir: Path) -> float:
    val = [r for r in records.read(RunDir(run_dir)) if r["kind"] == "val"]
    return max(val, key=lambda r: r["step"])["loss"]


@pytest.fixture(scope="module")
def page(seed_sweep: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The report of the whole sweep, written beside its run directories."""
    out = next(iter(seed_sweep.values())).parent / "report.html"
    report.main([str(out.parent), "--out", str(out)])
    return out


@pytest.fixture(scope="module")
def dom(chromium: str, page: Path, tmp_path_factory: pytest.TempPathFactory) -> Dom:
    done = browse(chromium, page, tmp_path_factory.mktemp("profile"), "--dump-dom")
    assert not console_messages(done.stderr), console_messages(done.stderr)
    return Dom(done.stdout)


# ----------------------------------------------------------------------------- the browser


def test_the_browser_catches_a_broken_page(chromium: str, tmp_path: Path) -> None:
    """The checks below can fail: a page with a script error logs it, and an empty page is blank."""
    bad = tmp_path / "bad.html"
    bad.write_text("<!DOCTYPE html><html><body><script>console.error('boom'); no_such_function();</script>"
                   "</body></html>")
    image, messages = screenshot(chromium, bad, tmp_path)
    assert any('"boom"' in m for m in messages) and any("no_such_function" in m for m in messages)
    assert image.std() == 0


def test_report_renders_without_errors_and_is_not_blank(chromium: str, page: Path, tmp_path: Path) -> None:
    image, messages = screenshot(chromium, page, tmp_path)
    assert not messages
    assert image.shape[:2] == (WINDOW[1], WINDOW[0])
    gray = image[..., :3].mean(axis=2)
    # Text, tables and figures: a real share of the window is drawn, in many shades.
    assert gray.std() > 0.05 and (gray < 0.9).mean() > 0.02 and len(np.unique(gray)) > 50


# ----------------------------------------------------------------------------- what the page holds


def test_tables_hold_the_runs_numbers(seed_sweep: dict, dom: Dom) -> None:
    best, summary = dom.tables[:2]  # the sweep's best five first, then every run
    assert [row[0] for row in best[1:]] == [d.name for d in sorted(seed_sweep.values(), key=final_val_loss)[:5]]
    header = summary[0]
    by_run = {row[header.index("run")]: row for row in summary[1:]}
    assert sorted(by_run) == sorted(d.name for d in seed_sweep.values())
    for run_dir in seed_sweep.values():
        row = by_run[run_dir.name]
        assert row[header.index("final_val_loss")] == f"{final_val_loss(run_dir):.4f}"
        assert row[header.index("state")] == "finished"

    groups = next(t for t in dom.tables if t[0][:3] == ["group", "metric", "n"])
    cells = {(row[0], row[1]): row for row in groups[1:]}
    t975 = stats.t.ppf(0.975, len(SWEEP_SEEDS) - 1)
    finals = {}
    for lr in SWEEP_LRS:
        finals[lr] = np.array([final_val_loss(seed_sweep[(lr, s)]) for s in SWEEP_SEEDS])
        mean, half = finals[lr].mean(), t975 * finals[lr].std(ddof=1) / math.sqrt(len(SWEEP_SEEDS))
        row = cells[(f"optim.lr={float(lr)}", "final_val_loss")]
        assert row[2:4] == ["3", f"{mean:.4f}"]
        assert row[-2:] == [f"{mean - half:.4f}", f"{mean + half:.4f}"]

    pairs = next(t for t in dom.tables if t[0][0] == "metric")
    final_pair = next(row for row in pairs[1:] if row[0] == "final_val_loss")
    a, b = (finals[next(lr for lr in SWEEP_LRS if f"optim.lr={float(lr)}" == label)] for label in final_pair[1:3])
    p = stats.ttest_ind(b, a, equal_var=False).pvalue
    assert final_pair[pairs[0].index("p_value")] == f"{p:.3g}"


def test_each_run_shows_its_differing_fields_state_and_sample(seed_sweep: dict, dom: Dom) -> None:
    differing = [t for t in dom.tables if [row[0] for row in t] == ["optim.lr", "seed"]]
    shown = sorted((float(t[0][1]), int(t[1][1])) for t in differing)
    assert shown == sorted((float(lr), seed) for lr, seed in seed_sweep)
    # Every sample (at steps 0 and 12) as logged; its markup is text: no <i> element anywhere.
    logged = [r["text"] for d in seed_sweep.values() for r in records.read(RunDir(d)) if r["kind"] == "sample"]
    assert len(logged) == 2 * len(seed_sweep) and sorted(dom.pre) == sorted(logged)
    assert all(text.startswith(SWEEP_PROMPT) for text in dom.pre)
    assert "i" not in dom.tags and "script" not in dom.tags and "link" not in dom.tags


def test_images_are_inline_and_links_reach_the_files(seed_sweep: dict, page: Path, dom: Dom) -> None:
    # loss, throughput, lr, ledger, the best five of the six runs (no HellaSwag in these runs) and the comparison.
    assert len(dom.images) == 6
    for src in dom.images:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix) and base64.b64decode(src[len(prefix):]).startswith(PNG)
    files = [link for link in dom.links if not link.startswith("#")]
    for link in files:
        assert not link.startswith(("/", "file:", "http")), link
        assert (page.parent / unquote(link)).exists(), link
    targets = {(page.parent / unquote(link)).resolve() for link in files}
    for run_dir in seed_sweep.values():
        rd = RunDir(run_dir)
        assert {rd.config.resolve(), rd.metrics.resolve()} <= targets
        assert [p.name for p in rd.checkpoint_dirs()] == ["step_00000006", "step_00000012"]
        assert {p.resolve() for p in rd.checkpoint_dirs()} <= targets
    anchors = [link[1:] for link in dom.links if link.startswith("#")]
    assert len(anchors) == len(seed_sweep) and all(f'id="{a}"' in page.read_text() for a in anchors)


def test_report_of_one_run_has_no_comparison(seed_sweep: dict, tmp_path: Path) -> None:
    out = tmp_path / "sub" / "one.html"
    report.main([str(seed_sweep[(SWEEP_LRS[0], 1)]), "--out", str(out)])
    text = out.read_text()
    assert "Comparison" not in text and "differs from the other runs" not in text
    assert "../../" in text  # links climb from the page's folder to the run's
