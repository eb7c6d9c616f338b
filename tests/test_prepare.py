"""harness.prepare: shards and manifest match an independent tokenisation; kill/resume is byte-identical."""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from harness.data.prepare import main
from harness.data.sources import SourceError, SplitRule
from harness.data.tokenizer import EOT, GPT2_RANKS_SHA256, gpt2_encoding
from tests.helpers import harness, launch

# ----------------------------------------------------------------------------- helpers


def run_prepare(*args: str) -> subprocess.CompletedProcess:
    """`python -m harness.prepare ARGS` as a real process."""
    return harness("harness.prepare", *args, check=False, timeout=300)


def start_prepare(*args: str, log: Path) -> subprocess.Popen:
    """`python -m harness.prepare ARGS` started in its own process group, output to `log`."""
    return launch("harness.prepare", *args, log=log)


def read_shard(path: Path) -> np.ndarray:
    """A .bin shard read without harness.shards: 256 int32 header words, then uint16 tokens."""
    header = np.fromfile(path, dtype=np.int32, count=256)
    tokens = np.fromfile(path, dtype=np.uint16, offset=1024)
    assert (header[0], header[1], header[2]) == (20240520, 1, len(tokens)), path
    assert not header[3:].any(), path
    return tokens


def split_stream(out: Path, manifest: dict, split: str) -> np.ndarray:
    return np.concatenate([read_shard(out / e["file"]) for e in manifest["splits"][split]["shards"]])


def doc_tokens(text: str) -> np.ndarray:
    return np.array([EOT, *gpt2_encoding().encode_ordinary(text)], dtype=np.uint16)


def expected_splits(texts: list[str], rule: SplitRule) -> dict[str, list[np.ndarray]]:
    """Each document's tokens (EOT first), tokenised one by one, in the split the rule assigns it."""
    splits = {"train": [], "val": []}
    for i, text in enumerate(texts):
        splits["val" if rule.is_val_document(i) else "train"].append(doc_tokens(text))
    return splits


def check_dataset(out: Path, expected: dict[str, list[np.ndarray]], shard_tokens: int) -> dict:
    """Manifest, shard files and token streams of `out` against the expected documents of each split."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format"] == "harness-shards-v1"
    assert manifest["tokenizer"] == {"name": "gpt2", "vocab_size": 50257, "eot": 50256,
                                     "ranks_sha256": GPT2_RANKS_SHA256}
    assert re.fullmatch(r"[0-9a-f]{16}", manifest["fingerprint"])
    assert manifest["config"]["shard_tokens"] == shard_tokens
    listed = {e["file"] for s in manifest["splits"].values() for e in s["shards"]}
    assert {p.name for p in out.iterdir()} == listed | {"manifest.json"}  # no progress.npz, no *.tmp
    for split, docs in expected.items():
        entry = manifest["splits"][split]
        shards = entry["shards"]
        assert [e["file"] for e in shards] == [f"{split}_{i:06d}.bin" for i in range(len(shards))]
        for i, e in enumerate(shards):
            path = out / e["file"]
            data = path.read_bytes()
            tokens = read_shard(path)
            assert e["tokens"] == len(tokens) > 0
            assert e["bytes"] == len(data) == 1024 + 2 * len(tokens)
            assert e["sha256"] == hashlib.sha256(data).hexdigest()
            assert e["documents"] == int((tokens == EOT).sum())  # documents that start in this shard
            assert len(tokens) == shard_tokens if i < len(shards) - 1 else len(tokens) <= shard_tokens
        stream = split_stream(out, manifest, split)
        want = np.concatenate(docs)
        assert len(stream) == len(want) == entry["tokens"] == sum(e["tokens"] for e in shards)
        np.testing.assert_array_equal(stream, want)
        assert entry["documents"] == len(docs)
        assert entry["samples_at_1024"] == len(want) // 1024
        starts = np.cumsum([0] + [len(d) for d in docs[:-1]])  # every document starts with EOT
        np.testing.assert_array_equal(np.flatnonzero(stream == EOT), starts)
    return manifest


# ----------------------------------------------------------------------------- shakespeare


def test_cli_shakespeare_matches_direct_count(tmp_path, play_texts, shakespeare_dir):
    out = tmp_path / "shakespeare"
    r = run_prepare("shakespeare", "--out", str(out), "--shard-tokens", "300000", "--workers", "2")
    assert r.returncode == 0, r.stderr
    assert f"wrote {out / 'manifest.json'}" in r.stdout

    assert len(play_texts) == 38
    expected = expected_splits(play_texts, SplitRule(val_fraction=0.1))
    assert (len(expected["train"]), len(expected["val"])) == (35, 3)  # plays 9, 19 and 29 are val
    manifest = check_dataset(out, expected, shard_tokens=300_000)
    assert len(manifest["splits"]["train"]["shards"]) >= 4
    assert manifest["source"] == "shakespeare"

    # The session fixture (other shard size, in-process, 2 workers) holds the same token streams.
    fixture = check_dataset(shakespeare_dir, expected, shard_tokens=200_000)
    for split in ("train", "val"):
        np.testing.assert_array_equal(split_stream(out, manifest, split),
                                      split_stream(shakespeare_dir, fixture, split))
    assert fixture["fingerprint"] != manifest["fingerprint"]  # other shards, other dataset identity


# ----------------------------------------------------------------------------- local files

N_PLAYS = 12  # a subset keeps the three formats quick


@pytest.fixture(scope="module")
def play_files(tmp_path_factory, play_texts):
    """The first plays as .txt files, one .jsonl (field text) and one .parquet (field content)."""
    root = tmp_path_factory.mktemp("play_files")
    texts = play_texts[:N_PLAYS]
    (root / "txt").mkdir()
    for i, text in enumerate(texts):
        (root / "txt" / f"play_{i:02d}.txt").write_text(text, encoding="utf-8")
    (root / "jsonl").mkdir()
    with open(root / "jsonl" / "plays.jsonl", "w", encoding="utf-8") as f:
        for i, text in enumerate(texts):
            f.write(json.dumps({"title": f"play {i}", "text": text}) + "\n")
    (root / "parquet").mkdir()
    table = pa.table({"id": list(range(N_PLAYS)), "content": texts})
    pq.write_table(table, root / "parquet" / "plays.parquet", row_group_size=5)  # rows in 3 groups
    return root


def test_local_formats_give_identical_streams(tmp_path, play_files, play_texts):
    runs = {  # different worker counts too: the output must not depend on them
        "txt": [f"{play_files}/txt/*.txt", "--workers", "2"],
        "jsonl": [f"{play_files}/jsonl/*.jsonl", "--workers", "0"],
        "parquet": [f"{play_files}/parquet/*.parquet", "--text-field", "content", "--workers", "1"],
    }
    expected = expected_splits(play_texts[:N_PLAYS], SplitRule(val_fraction=0.25))
    assert (len(expected["train"]), len(expected["val"])) == (9, 3)
    manifests = {}
    for fmt, args in runs.items():
        out = tmp_path / fmt
        main(["--files", args[0], *args[1:], "--out", str(out), "--shard-tokens", "100000",
              "--val-fraction", "0.25"])
        manifests[fmt] = check_dataset(out, expected, shard_tokens=100_000)
        assert manifests[fmt]["source"] == "files"
        assert manifests[fmt]["config"]["detail"]["files"] == args[0]
    assert manifests["parquet"]["config"]["detail"]["text_field"] == "content"
    assert manifests["txt"]["config"]["detail"]["matched"] == N_PLAYS
    for split in ("train", "val"):
        streams = [split_stream(tmp_path / fmt, manifests[fmt], split) for fmt in runs]
        for s in streams[1:]:
            np.testing.assert_array_equal(s, streams[0])
        shards = [manifests[fmt]["splits"][split]["shards"] for fmt in runs]
        assert shards[0] == shards[1] == shards[2]  # same names, sizes, document counts, checksums
    assert len({m["fingerprint"] for m in manifests.values()}) == 1


def test_jsonl_row_without_text_field_names_file_and_row(tmp_path, play_texts):
    path = tmp_path / "in" / "plays.jsonl"
    path.parent.mkdir()
    rows = [{"text": play_texts[0]}, {"text": play_texts[1]}, {"body": play_texts[2]}]
    rows.append({"text": play_texts[3]})
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "out"
    # workers=1: the error is raised while feeding the worker pool and must come back intact
    with pytest.raises(SourceError, match=re.escape(f"{path} row 2: no field 'text'")):
        main(["--files", str(path), "--out", str(out), "--workers", "1"])
    assert not (out / "manifest.json").exists()

    no_field = tmp_path / "in2" / "rows.jsonl"  # a file where no row has the field
    no_field.parent.mkdir()
    no_field.write_text(json.dumps({"body": "x"}) + "\n")
    with pytest.raises(SourceError, match=re.escape(f"{no_field} row 0: no field 'text'")):
        main(["--files", str(no_field), "--out", str(tmp_path / "out2"), "--workers", "0"])


def test_val_tokens_takes_the_head_of_the_stream(tmp_path, play_files, play_texts):
    n = 100_000
    out = tmp_path / "out"
    main(["--files", f"{play_files}/txt/*.txt", "--out", str(out), "--val-tokens", str(n),
          "--shard-tokens", "30000", "--workers", "0"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["config"]["split"] == {"val_tokens": n, "val_fraction": 0.0}
    docs = [doc_tokens(t) for t in play_texts[:N_PLAYS]]
    stream = np.concatenate(docs)
    starts = np.cumsum([0] + [len(d) for d in docs[:-1]])
    assert stream[n] != EOT  # the cut falls inside a document

    val, train = split_stream(out, manifest, "val"), split_stream(out, manifest, "train")
    assert manifest["splits"]["val"]["tokens"] == len(val) == n
    np.testing.assert_array_equal(val, stream[:n])
    np.testing.assert_array_equal(train, stream[n:])
    assert manifest["splits"]["train"]["tokens"] == len(stream) - n
    assert [e["tokens"] for e in manifest["splits"]["val"]["shards"]] == [30000, 30000, 30000, 10000]
    # the document cut in two counts once, in val, where it starts
    assert manifest["splits"]["val"]["documents"] == int((starts < n).sum())
    assert manifest["splits"]["train"]["documents"] == int((starts >= n).sum())
    assert manifest["splits"]["train"]["documents"] + manifest["splits"]["val"]["documents"] == N_PLAYS


# ----------------------------------------------------------------------------- kill and resume


def snapshot(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.iterdir())}


def manifest_without_time(d: Path) -> dict:
    m = json.loads((d / "manifest.json").read_text())
    assert m.pop("prepare_seconds") >= 0
    return m


@pytest.mark.slow
def test_killed_prepare_resumes_byte_identical(tmp_path, play_texts, capsys):
    files = tmp_path / "files"
    files.mkdir()
    for copy in range(8):  # ~12M tokens: several seconds with one worker
        for i, text in enumerate(play_texts):
            (files / f"c{copy}_p{i:02d}.txt").write_text(text, encoding="utf-8")
    a, b = tmp_path / "a", tmp_path / "b"
    args = ["--files", f"{files}/*.txt", "--shard-tokens", "50000", "--workers", "1"]

    # Kill a run (its whole process group: the worker too) once it has written a few shards.
    proc = start_prepare(*args, "--out", str(b), log=tmp_path / "b_killed.log")
    try:
        deadline = time.monotonic() + 120
        while len(list(b.glob("train_*.bin"))) < 3:
            assert proc.poll() is None, "prepare finished before it could be killed"
            assert time.monotonic() < deadline
            time.sleep(0.005)
        assert proc.poll() is None, "prepare finished before it could be killed"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert not (b / "manifest.json").exists()
    assert (b / "progress.npz").exists()  # it stopped mid-run, after recording progress
    written = len(list(b.glob("train_*.bin")))

    # Resuming with another shard size is refused, and leaves the partial run as it was.
    before = {k: v for k, v in snapshot(b).items() if not k.endswith(".tmp")}
    with pytest.raises(SystemExit, match="unfinished preparation with other settings"):
        main([*args[:2], "--shard-tokens", "40000", *args[4:], "--out", str(b)])
    assert snapshot(b) == before

    # Resume it, and meanwhile (two cores) make an uninterrupted run of the same command.
    resumed = start_prepare(*args, "--out", str(b), log=tmp_path / "b_resumed.log")
    whole = start_prepare(*args, "--out", str(a), log=tmp_path / "a.log")
    try:
        assert resumed.wait(timeout=300) == 0, (tmp_path / "b_resumed.log").read_text()
        assert whole.wait(timeout=300) == 0, (tmp_path / "a.log").read_text()
    finally:
        for p in (resumed, whole):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert re.search(r"resuming .* at document [1-9]", (tmp_path / "b_resumed.log").read_text())
    assert 3 <= written < len(list(a.glob("train_*.bin")))

    assert not list(a.glob("*.tmp")) and not list(b.glob("*.tmp"))
    assert not (a / "progress.npz").exists() and not (b / "progress.npz").exists()
    snap_a, snap_b = snapshot(a), snapshot(b)
    assert sorted(snap_a) == sorted(snap_b)
    for name in snap_a:
        if name != "manifest.json":
            assert snap_a[name] == snap_b[name], name
    assert manifest_without_time(a) == manifest_without_time(b)

    # Re-running a finished preparation changes nothing.
    mtimes = {p.name: p.stat().st_mtime_ns for p in b.iterdir()}
    capsys.readouterr()
    main([*args, "--out", str(b)])
    assert "already prepared" in capsys.readouterr().err
    assert snapshot(b) == snap_b
    assert {p.name: p.stat().st_mtime_ns for p in b.iterdir()} == mtimes
    # ... and other settings on a finished directory are refused.
    with pytest.raises(SystemExit, match="already holds a dataset prepared with other settings"):
        main([*args[:2], "--shard-tokens", "40000", *args[4:], "--out", str(b)])
    assert snapshot(b) == snap_b


@pytest.mark.parametrize("source", ["fineweb-edu-10b", "openwebtext"])
def test_hub_sources_fail_fast_without_network(source: str, tmp_path: Path) -> None:
    """No network (as on this machine and many compute nodes): an error in seconds, naming the
    dataset and saying how to use local files, instead of datasets' retries."""
    import socket

    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
        pytest.skip("huggingface.co is reachable from here")
    except OSError:
        pass
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"} | {"HF_HOME": str(tmp_path / "hf")}
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "harness.prepare", source, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode != 0 and time.time() - t0 < 30
    assert "is unreachable" in proc.stderr and "--files" in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "manifest.json").exists()
