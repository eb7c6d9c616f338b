"""Batch size and learning rate: optim.lr_scaling (the resolved rates in the spec, the log and the schedule
plot) and micro_batch="auto"'s knobs (train.memory_fraction, train.max_micro_batch)."""

import json
import math
from pathlib import Path

import pytest
import simple_parsing
import torch

from analysis import lr_schedule
from harness import spec as config
from harness.distributed import DistEnv
from harness.model.gpt import GPT, autocast
from harness.run_dir import RunDir
from harness.spec import Experiment, ModelConfig, SpecError, init_run_dir, lr_at, read_spec
from harness.train.auto_batch import choose_micro_batch
from tests.helpers import REPO, harness, rows, train_args

SHAKESPEARE = REPO / "experiments/shakespeare.py"


def spec(**fields: object) -> Experiment:
    """The Shakespeare experiment (lr 2e-3, min_lr 2e-4, 1,024 tokens/step), changed and resolved."""
    return config.resolve(simple_parsing.replace(config.load_experiment_file(SHAKESPEARE)[0], fields))


# ----------------------------------------------------------------------------- lr_scaling


@pytest.mark.parametrize(("rule", "factor"), [("none", 1.0), ("linear", 4.0), ("sqrt", 2.0)])
def test_lr_scaling_resolves_peak_and_min(rule: str, factor: float) -> None:
    """Tuned at 1,024 tokens/step, run at 4,096: x4 linearly, x2 by the square root, as given with none."""
    s = spec(**{"optim.lr_scaling": rule, "optim.base_batch_tokens": 1024, "train.batch_tokens": 4096})
    assert (s.optim.scaled_lr, s.optim.scaled_min_lr) == pytest.approx((2e-3 * factor, 2e-4 * factor))
    assert (s.optim.lr, s.schedule.min_lr) == (2e-3, 2e-4)  # the tuned values stay as written
    assert config.resolve(s) == s  # resolving again scales nothing twice
    config.validate(s, 1)


def test_default_is_unchanged() -> None:
    s = spec()
    assert (s.optim.lr_scaling, s.optim.scaled_lr, s.optim.scaled_min_lr) == ("none", 2e-3, 2e-4)


def test_lr_scaling_errors_name_the_field() -> None:
    with pytest.raises(SpecError, match=r"optim.base_batch_tokens: lr_scaling='sqrt' scales from it"):
        config.validate(spec(**{"optim.lr_scaling": "sqrt"}), 1)
    stale = simple_parsing.replace(spec(), {"optim.scaled_lr": 1.0})  # set by hand: not what would run
    with pytest.raises(SpecError, match=r"optim.scaled_lr: 1.0 is derived .* 0.002\); set those instead"):
        config.validate(stale, 1)


def test_resolved_rates_are_written_to_the_run_spec(tmp_path: Path) -> None:
    s = spec(**{"optim.lr_scaling": "linear", "optim.base_batch_tokens": 512, "run_dir": str(tmp_path / "run")})
    init_run_dir(RunDir(s.run_dir), s)
    stored = json.loads((tmp_path / "run/config.json").read_text())["optim"]
    assert (stored["scaled_lr"], stored["scaled_min_lr"]) == pytest.approx((4e-3, 4e-4))
    assert read_spec(RunDir(s.run_dir)) == s


def test_the_schedule_plot_uses_the_resolved_rates(tmp_path: Path) -> None:
    s = spec(**{"optim.lr_scaling": "sqrt", "optim.base_batch_tokens": 256})  # x2 at 1,024 tokens/step
    steps, lrs = lr_schedule.schedule_curve(s)
    assert lrs.max() == pytest.approx(4e-3) and lrs[-1] == pytest.approx(lr_at(575, 4e-3, s.schedule, 4e-4))
    assert "peak 0.004 (0.002 sqrt-scaled from 256 to 1,024 tokens/step)" in lr_schedule.describe(s)
    lr_schedule.main([str(SHAKESPEARE), "--out", str(tmp_path / "lr.svg"), "--optim.lr_scaling", "linear",
                      "--optim.base_batch_tokens", "2048"])  # x0.5
    with pytest.raises(SystemExit, match="optim.base_batch_tokens"):
        lr_schedule.main([str(SHAKESPEARE), "--out", str(tmp_path / "bad.svg"), "--optim.lr_scaling", "linear"])


# ----------------------------------------------------------------------------- micro_batch="auto"


def test_max_micro_batch_caps_the_cpu_fallback() -> None:
    model = GPT(ModelConfig(preset=None, n_layer=1, n_head=1, n_embd=8, block_size=16, vocab_size=64))
    env = DistEnv(0, 0, 1, torch.device("cpu"), None)
    # 64 sequences per step: the CPU fallback is 8; capped at 6, the largest divisor of 64 below it is 4.
    choose = lambda **kw: choose_micro_batch(model, 64 * 16, 64 * 16, 16, env, autocast(env.device, "auto"), **kw)
    assert choose() == (8, {"micro_batch": 8, "device": "cpu", "fallback": 8, "max_micro_batch": None})
    assert choose(max_micro_batch=6)[0] == 4
    assert choose(max_micro_batch=1)[0] == 1


def test_auto_batch_knobs_are_checked() -> None:
    for fields, field in [({"train.memory_fraction": 0.0}, "train.memory_fraction"),
                          ({"train.memory_fraction": 1.5}, "train.memory_fraction"),
                          ({"train.max_micro_batch": -1}, "train.max_micro_batch")]:
        with pytest.raises(SpecError, match=field):
            config.validate(spec(**fields), 1)


@pytest.mark.slow
def test_scaled_lr_and_auto_micro_batch_through_the_trainer(shakespeare_dir: Path, tmp_path: Path) -> None:
    """One short run: the start row logs the scaled rates and the micro-batch auto chose (capped at 4 on
    CPU); every update's lr is the schedule between the scaled rates; config.json holds them all."""
    run = tmp_path / "run"
    harness("harness.train", *train_args(run, shakespeare_dir, "--optim.lr_scaling", "sqrt",
                                         "--optim.base_batch_tokens", "4096", "--train.micro_batch", "auto",
                                         "--train.max_micro_batch", "4", steps=4))
    s = read_spec(RunDir(run))
    peak = s.optim.lr * math.sqrt(1024 / 4096)  # the tiny run's 1,024 tokens/step: half the rates
    assert s.optim.scaled_lr == pytest.approx(peak) and s.train.micro_batch == 4
    (start,) = rows(run, "start")
    assert (start["peak_lr"], start["min_lr"], start["lr_scaling"]) == (s.optim.scaled_lr, s.optim.scaled_min_lr,
                                                                        "sqrt")
    assert start["auto_micro_batch"] == {"micro_batch": 4, "device": "cpu", "fallback": 8, "max_micro_batch": 4}
    logged = [r["lr"] for r in rows(run, "train")]
    assert logged == [lr_at(k, s.optim.scaled_lr, s.schedule, s.optim.scaled_min_lr) for k in range(4)]
