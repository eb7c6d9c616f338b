"""harness.cluster.health and .nodes: the preflight's figures and verdicts, stragglers; the node script."""

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from harness.cluster import health, nodes
from harness.cluster.job import node_script
from harness.distributed import DistEnv
from harness.spec import ClusterConfig

CPU = torch.device("cpu")


def record(host: str, rank: int, tflops: float, gbps: float = 10.0, mbps: float | None = 500.0) -> dict:
    return {"host": host, "rank": rank, "matmul_tflops": tflops, "memory_gbps": gbps, "read_mbps": mbps,
            "busbw_gbps": {"1048576": 0.3}}


def test_figures_are_measured_for_real(shakespeare_dir: Path) -> None:
    assert 0.001 < health.matmul_tflops(CPU) < 100  # fp32 512^3 on a CPU: a few tens of GFLOP/s to a few TFLOP/s
    assert 0.1 < health.memory_gbps(CPU) < 1000
    shard = shakespeare_dir / "train_000000.bin"
    assert health.shard_read_mbps([shard], rank=0) > 1
    assert health.shard_read_mbps([], rank=0) is None  # no shards: nothing to read


def test_one_process_has_no_allreduce() -> None:
    assert health.allreduce(DistEnv(0, 0, 1, CPU, None), (1024,)) == {}


def test_a_host_far_below_the_others_is_bad() -> None:
    cfg = ClusterConfig()
    rows = nodes.verdicts([record("n1", 0, 1.0), record("n2", 1, 0.3), record("n3", 2, 0.9)], cfg)
    bad = {r["host"]: r["reasons"] for r in rows if r["verdict"] == "bad"}
    assert list(bad) == ["n2"] and "0.3 < 0.5 x the other hosts' median 0.95" in bad["n2"][0]
    # Two hosts: each is judged against the other, so only the slow one is bad.
    rows = nodes.verdicts([record("n1", 0, 1.0), record("n2", 1, 0.3)], cfg)
    assert [r["verdict"] for r in rows] == ["ok", "bad"]
    # A host's worst rank speaks for it: one slow GPU of eight makes the node bad.
    rows = nodes.verdicts([record("a", 0, 1.0), record("a", 1, 0.2), record("b", 2, 1.0), record("b", 3, 1.0)], cfg)
    assert [(r["host"], r["ranks"], r["matmul_tflops"], r["verdict"]) for r in rows] == [
        ("a", [0, 1], 0.2, "bad"), ("b", [2, 3], 1.0, "ok")]


def test_read_rates_are_judged_by_their_floor_only() -> None:
    """A shared filesystem's read rate swings with other tenants' I/O: a slower read is no fault."""
    rows = nodes.verdicts([record("n1", 0, 1.0, mbps=600.0), record("n2", 1, 1.0, mbps=100.0)], ClusterConfig())
    assert [r["verdict"] for r in rows] == ["ok", "ok"]


def test_floors_judge_even_a_single_host() -> None:
    cfg = ClusterConfig(preflight_min_tflops=2.0, preflight_min_read_mbps=100)
    (row,) = nodes.verdicts([record("n1", 0, 1.0, mbps=50.0)], cfg)
    assert row["verdict"] == "bad"
    assert row["reasons"] == ["matmul TFLOP/s 1 < floor 2", "shard read MB/s 50 < floor 100"]
    (row,) = nodes.verdicts([record("n1", 0, 3.0, mbps=None)], cfg)  # no shards to read: not judged on them
    assert row["verdict"] == "ok"


def test_a_slow_interconnect_is_reported_but_blames_no_host() -> None:
    rows = nodes.verdicts([record("n1", 0, 1.0), record("n2", 1, 1.0)], ClusterConfig(preflight_min_busbw_gbps=1.0))
    assert all(r["verdict"] == "ok" and "all-reduce busbw below 1 GB/s: 1 MiB 0.3 GB/s" in r["warnings"][0]
               for r in rows)
    text = nodes.table(rows)
    assert text.splitlines()[0].split() == ["host", "ranks", "matmul", "TFLOP/s", "memory", "GB/s", "read", "MB/s",
                                            "busbw", "1MiB", "verdict"]
    assert "warning: n1: all-reduce busbw below" in text


def test_the_slowest_host_against_the_others() -> None:
    assert nodes.straggler([1.0, 1.1, 3.0], ["n1", "n2", "n3"]) == ("n3", pytest.approx(3.0 / 1.05))
    assert nodes.straggler([1.0, 2.0], ["n1", "n1"]) is None  # one host: no one to compare with
    assert nodes.straggler([1.0, 4.0, 1.0, 1.0], ["a", "a", "b", "b"]) == ("a", 4.0)  # a host's slowest rank


def test_a_straggler_is_moved_off_only_when_it_stays() -> None:
    watch = nodes.StragglerWatch(ratio=1.5, steps=3)
    assert [watch.update(s) for s in [("n2", 2.0), ("n2", 2.0), ("n3", 2.0), ("n3", 1.6), ("n3", 1.7)]] == [
        None, None, None, None, "n3"]
    assert watch.evidence == {"host": "n3", "ratios": [2.0, 1.6, 1.7], "threshold": 1.5}
    watch = nodes.StragglerWatch(ratio=1.5, steps=2)
    assert [watch.update(s) for s in [("n2", 2.0), ("n2", 1.2), ("n2", 2.0), None]] == [None, None, None, None]
    assert nodes.StragglerWatch(ratio=0.0, steps=1).update(("n2", 9.0)) is None  # off by default


def test_node_script_runs_setup_then_execs_torchrun(tmp_path: Path) -> None:
    cluster = ClusterConfig(setup=["echo set-up ran on $(hostname) >> " + str(tmp_path / "marks")],
                            env=["HARNESS_MARK=a b", "NCCL_IB_DISABLE=1"])
    script = node_script(cluster, [sys.executable, "-c", "import os; print(os.environ['HARNESS_MARK'], "
                                                         "os.environ['TORCH_DISABLE_SHARE_RDZV_TCP_STORE'])"])
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True).stdout
    assert out == "a b 1\n" and (tmp_path / "marks").read_text().startswith("set-up ran on ")
    assert script.splitlines()[-1].startswith("exec ")


@pytest.mark.parametrize(("fields", "problem"), [
    ({"env": ["NO_VALUE"]}, "env: 'NO_VALUE' is not NAME=value"),
    ({"preflight_fraction": 0.0}, "preflight_fraction: must be in (0, 1]"),
    ({"straggler_ratio": 0.9}, "straggler_ratio: must be above 1"),
    ({"preflight_min_tflops": -1.0}, "preflight_min_tflops: must be >= 0"),
])
def test_cluster_health_settings_are_checked(fields: dict, problem: str) -> None:
    assert any(p.startswith(problem) for p in ClusterConfig(**fields).check())
