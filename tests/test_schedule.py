"""harness.optim.lr_at: linear warmup, then cosine, linear or no decay to min_lr."""

import math

import pytest

from harness.spec import ScheduleConfig, lr_at

LR, MIN_LR = 1e-3, 1e-4
SCHED = ScheduleConfig(steps=110, warmup=10, min_lr=MIN_LR)  # 100 decay steps: the midpoint is step 60


def lrs(sched: ScheduleConfig, lr: float = LR, upto: int | None = None) -> list[float]:
    return [lr_at(step, lr, sched) for step in range(upto if upto is not None else sched.steps + 10)]


def test_linear_warmup() -> None:
    assert lr_at(0, LR, SCHED) == pytest.approx(LR / 10)  # the first update already moves
    for step in range(10):
        assert lr_at(step, LR, SCHED) == pytest.approx(LR * (step + 1) / 10)
    assert lr_at(9, LR, SCHED) == LR  # the last warmup step reaches the peak
    assert lr_at(10, LR, SCHED) == LR  # and the decay starts from it


def test_cosine_decay() -> None:
    assert lr_at(60, LR, SCHED) == pytest.approx((LR + MIN_LR) / 2)
    assert lr_at(35, LR, SCHED) == pytest.approx(MIN_LR + (LR - MIN_LR) * (1 + 0.5**0.5) / 2)  # cos(pi/4)
    assert lr_at(85, LR, SCHED) == pytest.approx(MIN_LR + (LR - MIN_LR) * (1 - 0.5**0.5) / 2)
    # The last update (step 109) is a hair above min_lr; min_lr itself from step `steps` on.
    assert lr_at(109, LR, SCHED) == pytest.approx(MIN_LR + (LR - MIN_LR) * (1 + math.cos(math.pi * 0.99)) / 2)
    for step in (110, 111, 500, 10**6):
        assert lr_at(step, LR, SCHED) == MIN_LR


@pytest.mark.parametrize("decay", ["cosine", "linear"])
def test_never_increases_after_warmup(decay: str) -> None:
    values = lrs(ScheduleConfig(steps=110, warmup=10, min_lr=MIN_LR, decay=decay))
    after = values[10:]
    assert all(a >= b for a, b in zip(after, after[1:], strict=False))
    assert values[:10] == sorted(values[:10]) and len(set(values[:10])) == 10
    assert max(values) == LR and min(after) == MIN_LR


def test_linear_decay() -> None:
    sched = ScheduleConfig(steps=110, warmup=10, min_lr=MIN_LR, decay="linear")
    assert lr_at(0, LR, sched) == pytest.approx(LR / 10)
    assert lr_at(10, LR, sched) == LR
    for step in range(10, 111, 5):  # a straight line from (10, lr) to (110, min_lr)
        assert lr_at(step, LR, sched) == pytest.approx(LR + (MIN_LR - LR) * (step - 10) / 100)
    assert lr_at(60, LR, sched) == pytest.approx((LR + MIN_LR) / 2)
    assert lr_at(110, LR, sched) == MIN_LR and lr_at(1000, LR, sched) == MIN_LR


def test_constant_after_warmup() -> None:
    sched = ScheduleConfig(steps=110, warmup=10, min_lr=MIN_LR, decay="constant")
    assert lr_at(4, LR, sched) == pytest.approx(LR / 2)  # warmup still applies
    assert all(v == LR for v in lrs(sched)[10:])  # min_lr is unused, even past the last step


def test_no_warmup() -> None:
    sched = ScheduleConfig(steps=100, warmup=0, min_lr=MIN_LR)
    assert lr_at(0, LR, sched) == LR
    assert lr_at(50, LR, sched) == pytest.approx((LR + MIN_LR) / 2)


def test_gpt2_124m_recipe() -> None:
    """The defaults: GPT-3 small's 6e-4 peak and 375M warmup tokens (715 steps of 2**19), ten billion
    tokens (19,073 steps), decaying to a tenth of the peak."""
    sched = ScheduleConfig()
    assert (sched.steps, sched.warmup, sched.min_lr, sched.decay) == (19073, 715, 6e-5, "cosine")
    lr = 6e-4
    assert lr_at(0, lr, sched) == pytest.approx(8.3916e-7, rel=1e-4)  # 6e-4 / 715
    assert lr_at(100, lr, sched) == pytest.approx(8.4755e-5, rel=1e-4)  # 6e-4 * 101 / 715
    assert lr_at(714, lr, sched) == pytest.approx(6e-4)
    assert lr_at(715, lr, sched) == pytest.approx(6e-4)
    # progress (5000 - 715) / 18358 = 0.23341; cos(pi * 0.23341) = 0.74299; 6e-5 + 2.7e-4 * 1.74299
    assert lr_at(5000, lr, sched) == pytest.approx(5.3061e-4, rel=1e-4)
    assert lr_at(715 + 18358 // 2, lr, sched) == pytest.approx(3.3e-4)  # the midpoint: (6e-4 + 6e-5) / 2
    assert lr_at(19073, lr, sched) == pytest.approx(6e-5)


WSD = ScheduleConfig(steps=110, warmup=10, min_lr=MIN_LR, decay="wsd", decay_steps=20)  # decays over updates 90..109


def test_wsd_holds_the_peak_then_decays_over_the_last_steps() -> None:
    values = lrs(WSD)
    assert values[:10] == lrs(SCHED)[:10]  # the same warmup
    assert all(v == LR for v in values[10:90])  # the stable phase
    for step in range(90, 110):  # linear: the first decayed update already below the peak, the last at min_lr
        assert lr_at(step, LR, WSD) == pytest.approx(LR + (MIN_LR - LR) * (step - 89) / 20)
    assert lr_at(109, LR, WSD) == MIN_LR and all(v == MIN_LR for v in values[110:])


@pytest.mark.parametrize(("shape", "step", "expected"), [
    ("cosine", 99, (LR + MIN_LR) / 2),  # progress (99 - 90 + 1) / 20 = 0.5
    ("1-sqrt", 94, MIN_LR + (LR - MIN_LR) * 0.5),  # progress 0.25: 1 - sqrt(0.25)
    ("1-sqrt", 109, MIN_LR),
    ("cosine", 90, MIN_LR + 0.5 * (LR - MIN_LR) * (1 + math.cos(math.pi / 20))),
])
def test_wsd_shapes(shape: str, step: int, expected: float) -> None:
    sched = ScheduleConfig(steps=110, warmup=10, min_lr=MIN_LR, decay="wsd", decay_steps=20, wsd_shape=shape)
    assert lr_at(step, LR, sched) == pytest.approx(expected)
    assert lr_at(89, LR, sched) == LR


def test_wsd_without_decay_steps_keeps_the_rate() -> None:
    trunk = ScheduleConfig(steps=110, warmup=10, min_lr=MIN_LR, decay="wsd", decay_steps=0)
    assert lrs(trunk)[10:] == [LR] * 110  # past the last step too: a trunk can be continued


def test_a_branch_runs_the_rates_of_a_straight_run() -> None:
    """A constant trunk up to step S, then a WSD branch of S + K steps with decay K: every rate is the straight
    run's (the decay depends on the distance to the end only), for any S."""
    trunk = ScheduleConfig(steps=1000, warmup=10, min_lr=MIN_LR, decay="wsd")
    for s in (50, 80, 300):
        straight = ScheduleConfig(steps=s + 20, warmup=10, min_lr=MIN_LR, decay="wsd", decay_steps=20)
        assert [lr_at(i, LR, trunk) for i in range(s)] == lrs(straight, upto=s)  # the trunk's, up to S
        assert lrs(straight)[s:s + 20] == lrs(WSD)[90:110]  # then the same 20 decaying rates, whatever S was


@pytest.mark.parametrize(("fields", "message"), [
    ({"decay": "wsd", "decay_steps": 101}, "decay_steps: must be in [0, schedule.steps - schedule.warmup = 100]"),
    ({"decay": "cosine", "decay_steps": 5}, "decay_steps: only schedule.decay='wsd' decays over the last N steps"),
])
def test_wsd_settings_are_checked(fields: dict, message: str) -> None:
    (problem,) = ScheduleConfig(steps=110, warmup=10, **fields).check()
    assert problem.startswith(message)
