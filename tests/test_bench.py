"""The benchmark suite runs at CI size and prints its figures as one JSON line (speed is not asserted)."""

import json
from pathlib import Path

import pytest

from tests.hellaswag_data import hellaswag_dir
from tests.helpers import harness

pytestmark = pytest.mark.slow

SMALL = ["--n-layer", "1", "--n-head", "2", "--n-embd", "32", "--micro-batch", "2", "--seq-len", "32"]


def bench(*args: str) -> dict:
    proc = harness("harness.bench", *args)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout  # one JSON line, then the readable table
    out = json.loads(lines[0])
    assert set(out["machine"]) == {"device", "torch", "date"}
    return out


def positive(out: dict, *keys: str) -> None:
    for k in keys:
        assert isinstance(out[k], int | float) and out[k] > 0, (k, out[k])


def test_train_bench_with_reference() -> None:
    out = bench("train", *SMALL, "--steps", "2", "--warmup", "1", "--reference")
    positive(out, "ms_per_step", "tokens_per_s", "reference_ms_per_step", "speedup_vs_reference", "params")
    assert out["tokens_per_s"] == pytest.approx(2 * 32 / (out["ms_per_step"] / 1e3), rel=0.01)
    assert out["mfu"] is None  # no peak known for a CPU


def test_train_bench_under_torchrun() -> None:
    proc = harness("harness.bench", "train", *SMALL, "--steps", "2", "--warmup", "1", "--peak-tflops", "1", nproc=2)
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("{")]  # rank 0 only
    out = json.loads(line)
    assert out["world_size"] == 2 and out["tokens_per_s_per_rank"] * 2 == pytest.approx(out["tokens_per_s"], abs=2)
    positive(out, "mfu")


def test_data_and_tokenize_benches(shakespeare_dir: Path) -> None:
    positive(bench("data", "--data", str(shakespeare_dir), "--seconds", "0.5"), "tokens_per_s")
    out = bench("tokenize", "--workers", "1")
    positive(out, "tokens_per_s_one_process", "tokens_per_s_per_worker")
    assert out["tokens"] > 1_000_000


def test_checkpoint_bench() -> None:
    out = bench("checkpoint", *SMALL)
    positive(out, "sync_total_s", "async_blocked_s", "async_total_s", "load_s", "bytes")
    assert out["async_blocked_s"] <= out["async_total_s"]


def test_hellaswag_bench() -> None:
    out = bench("hellaswag", *SMALL, "--data", str(hellaswag_dir()), "--limit", "8")
    assert out["examples"] == 8
    positive(out, "examples_per_s", "seconds")


def test_gpu_acceptance_command_in_cpu_mode(shakespeare_dir: Path, eval_data: Path, tmp_path: Path) -> None:
    """The acceptance command's CPU mode: every check it makes on a GPU, with a tiny model, so that
    the command cannot rot between the sessions that have a GPU."""
    out = tmp_path / "gpu.json"
    proc = harness("harness.bench", "gpu", "--cpu", "--data", str(shakespeare_dir), "--hellaswag",
                   str(hellaswag_dir()), "--eval-data", str(eval_data), "--out", str(out))
    result = json.loads(out.read_text())
    assert json.loads(proc.stdout.splitlines()[0]) == result
    assert result["mode"] == "cpu (tiny model)" and result["problems"] == [] and "PASS" in proc.stdout
    assert result["environment"]["sdpa_kernel"] in ("flash", "math")  # the CPU has no memory-efficient kernel
    tp = result["throughput"]
    positive(tp["eager"], "tokens_per_s")
    positive(tp["compiled"], "tokens_per_s")
    shares = [k["share"] for k in tp["top_kernels"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1.0001
    resume = result["resume"]
    assert resume["identical"] and resume["deterministic"] and resume["max_diff"] == 0
    assert resume["resumed_from_step"] in (4, 8) and resume["compared_steps"] == 12 - resume["resumed_from_step"]
    assert result["auto_micro_batch"]["chosen"] == 8  # the CPU fallback
    hs = result["hellaswag"]
    assert hs["examples"] == 16 and 0 <= hs["acc_norm"] <= 1 and hs["seconds"] > 0
    suite = result["suite"]
    assert suite["examples"] == 40 and len(suite["tasks"]) == 10 and suite["export_agrees"] is True


def test_prepare_bench_pairs_harness_with_the_reference() -> None:
    out = bench("prepare", "--pairs", "1", "--workers", "2")
    positive(out, "harness_seconds", "reference_seconds", "time_ratio", "harness_peak_mb", "reference_peak_mb")
    assert out["harness_left_running"] == 0  # no process of harness.prepare outlives it


def test_comm_bench_prints_bus_bandwidth_as_nccl_tests_does() -> None:
    proc = harness("harness.bench", "comm", "--max-bytes", "65536", "--steps", "3", nproc=2)
    (line,) = [x for x in proc.stdout.splitlines() if x.startswith("{")]  # rank 0 only
    out = json.loads(line)
    assert out["world_size"] == 2 and [s["bytes"] for s in out["sizes"]] == [1024, 4096, 16384, 65536]
    for s in out["sizes"]:  # 2 ranks: busbw = algbw x 2(n-1)/n = algbw
        assert s["busbw_gbps"] == s["algbw_gbps"] > 0
        assert s["algbw_gbps"] == pytest.approx(s["bytes"] / (s["us"] / 1e6) / 1e9, rel=0.05, abs=0.001)
    assert "busbw (GB/s)" in proc.stdout
    alone = harness("harness.bench", "comm", check=False)
    assert alone.returncode != 0 and "run it under torchrun" in alone.stderr
