"""harness.run_dir and harness.atomic: the run directory's files, their readers and their writers."""

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import simple_parsing

from harness import atomic
from harness import spec as config
from harness.cluster.status import run_status
from harness.run_dir import JsonlAppender, RunDir, read_jsonl, run_state
from harness.spec import Experiment, SpecError, init_run_dir, read_spec
from tests.helpers import REPO, harness


@pytest.fixture
def spec(tmp_path: Path) -> Experiment:
    base = config.load_experiment_file(REPO / "experiments/shakespeare.py")[0]
    return config.resolve(simple_parsing.replace(base, {"run_dir": str(tmp_path / "run"), "optim.lr": 3e-3}))


def test_init_writes_and_checks_the_spec(spec: Experiment) -> None:
    run = RunDir(spec.run_dir)
    assert init_run_dir(run, spec) == {}
    assert read_spec(run) == spec
    assert init_run_dir(run, spec) == {}  # the same spec again

    lower = simple_parsing.replace(spec, {"optim.lr": 1e-3})
    assert init_run_dir(run, lower) == {"optim.lr": (3e-3, 1e-3)}
    assert read_spec(run) == lower  # the accepted change is recorded

    deeper = simple_parsing.replace(lower, {"model.n_layer": 5})
    with pytest.raises(SpecError, match=r"model\.n_layer: 4 -> 5"):
        init_run_dir(run, deeper)
    assert read_spec(run) == lower  # a refused spec is not written

    with pytest.raises(SpecError, match=r"optim\.lr: 0\.001 -> 0\.0003"):
        init_run_dir(run, simple_parsing.replace(lower, {"optim.lr": 3e-4}), allow="none")
    assert read_spec(run) == lower


def test_a_cut_short_last_line_is_skipped_with_one_warning(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b"\n\n{"a": 3}\n[1, 2]\n{"a": 4, "b": [')
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rows = read_jsonl(path)
    assert rows == [{"a": 1}, {"a": 3}]
    assert len(caught) == 1 and "skipping 3 truncated or corrupt line(s) (line 2, 5, 6)" in str(caught[0].message)
    assert read_jsonl(tmp_path / "missing.jsonl") == []


def test_an_append_after_a_half_line_starts_a_new_line(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_text('{"a": 1}\n{"a": 2, "b"')  # a writer killed mid-line
    out = JsonlAppender(path)
    out.write({"a": 3})
    out.close()
    assert path.read_text() == '{"a": 1}\n{"a": 2, "b"\n{"a": 3}\n'
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert read_jsonl(path) == [{"a": 1}, {"a": 3}]


def test_small_files_are_fsynced_before_and_after_the_rename(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A rename that reaches the disk before the file's data leaves an empty file after a crash: the
    data must be fsync'd before the rename, and the directory after it."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd: int) -> None:
        events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        real_fsync(fd)

    def replace(src: str | Path, dst: str | Path) -> None:
        events.append(("rename", str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    target = tmp_path / "config.json"
    atomic.write_text(target, "{}\n")
    assert target.read_text() == "{}\n"
    tmp = str(atomic.temporary_name(target))
    assert events == [("fsync", tmp), ("rename", tmp, str(target)), ("fsync", str(tmp_path))]
    assert os.listdir(tmp_path) == ["config.json"]


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic.replacing(target, "w") as f:
        f.write("half of the new")
        raise RuntimeError("killed mid-write")
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["summary.json"]


def test_run_state_rule() -> None:
    now = 1000.0
    start = {"kind": "start", "time": 10.0}
    assert run_state([], now) == "new"
    assert run_state([start, {"kind": "train", "time": 900.0}], now) == "running"
    assert run_state([start, {"kind": "train", "time": 20.0}], now) == "interrupted"
    for reason, state in [("finished", "finished"), ("preempted", "preempted"), ("failed", "failed"),
                          ("nonfinite", "failed (non-finite loss)")]:
        assert run_state([start, {"kind": "stop", "time": 20.0, "reason": reason}], now) == state
    restarted = [start, {"kind": "stop", "time": 20.0, "reason": "preempted"}, {"kind": "start", "time": 999.0}]
    assert run_state(restarted, now) == "running"  # a start after the stop: the stop no longer decides


def test_status_survives_a_half_line_in_the_error_records(spec: Experiment) -> None:
    """The crash that writes an error record can cut it short: status must still show the run, with
    the last whole error."""
    run = RunDir(spec.run_dir)
    init_run_dir(run, spec)
    out = JsonlAppender(run.metrics)
    out.write({"kind": "start", "step": 0, "restart": 0, "time": 1.0, "world_size": 1, "device": "cpu (2 threads)",
               "hosts": ["n1"]})
    out.write({"kind": "stop", "step": 3, "reason": "failed", "restart": 0, "time": 2.0})
    out.close()
    run.record_error(rank=0, host="n1", step=3, error="RuntimeError: boom", traceback="")
    with open(run.errors, "a") as f:
        f.write('{"time": 3.0, "rank": 1, "host": "n2", "step": 3, "error": "Runtime')  # cut short
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        status = run_status(run)
    assert status["state"] == "FAILED" and status["error"] == "RuntimeError: boom"
    assert status["layout"] == "1 node x 1 proc (cpu)"


def test_status_names_the_layout_of_a_cpu_run(spec: Experiment) -> None:
    run = RunDir(spec.run_dir)
    init_run_dir(run, spec)
    assert run_status(run)["layout"] == "1 node x 1 proc (cpu)"  # from the spec: no start yet
    out = JsonlAppender(run.metrics)
    out.write({"kind": "start", "step": 0, "restart": 0, "time": 1.0, "world_size": 16, "device": "NVIDIA H100",
               "hosts": ["a"] * 8 + ["b"] * 8})
    out.close()
    assert run_status(run)["layout"] == "2 nodes x 8 procs (gpu)"


def test_dry_run_works_without_slurm_and_names_the_data_to_prepare(tmp_path: Path) -> None:
    """On a laptop: no srun, no sbatch. The dry run shows the job, and says how to prepare the data
    this spec needs, by its source."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()  # a PATH with no Slurm commands on it
    run = tmp_path / "run"
    proc = harness("harness.submit", "experiments/fineweb_10b.py", "--data.dir", str(tmp_path / "fineweb-edu-10b"),
                   "--run_dir", str(run), "--dry-run", env={"PATH": str(bin_dir)})
    assert "#SBATCH --nodes=1" in proc.stdout and "#SBATCH --gpus-per-node=8" in proc.stdout
    assert "#SBATCH --signal=USR2@120" in proc.stdout and "#SBATCH --requeue" in proc.stdout
    assert "--nproc-per-node=8" in proc.stdout and f"-m harness.train {run}" in proc.stdout
    assert f"python -m harness.prepare fineweb-edu-10b --out {tmp_path / 'fineweb-edu-10b'}" in proc.stdout
    assert not run.exists()  # a dry run writes nothing


def test_a_missing_data_dir_names_its_source_or_the_choices(tmp_path: Path) -> None:
    proc = harness("harness.train", "experiments/fineweb_10b.py", "--data.dir", str(tmp_path / "fineweb-edu-10b"),
                   "--run_dir", str(tmp_path / "run"), check=False)
    assert proc.returncode != 0
    assert f"python -m harness.prepare fineweb-edu-10b --out {tmp_path / 'fineweb-edu-10b'}" in proc.stderr
    assert "shakespeare" not in proc.stderr
    proc = harness("harness.train", "experiments/fineweb_10b.py", "--data.dir", str(tmp_path / "mine"),
                   "--run_dir", str(tmp_path / "run"), check=False)
    assert "SOURCE: shakespeare, fineweb-edu-10b, openwebtext" in proc.stderr and "--files 'GLOB'" in proc.stderr


def test_after_step_command_reads_the_run_state(spec: Experiment) -> None:
    """sbatch/train.sh asks `harness.cluster after-step` what to do; outside a job it only answers."""
    run = RunDir(spec.run_dir)
    init_run_dir(run, spec)
    out = JsonlAppender(run.metrics)
    out.write({"kind": "start", "time": 1.0})
    out.write({"kind": "stop", "time": 2.0, "reason": "preempted"})
    out.close()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    proc = subprocess.run([sys.executable, "-m", "harness.cluster", "after-step", spec.run_dir], cwd=REPO, env=env,
                          capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == "preempted"
    assert json.loads(run.config.read_text())["name"] == "shakespeare"
