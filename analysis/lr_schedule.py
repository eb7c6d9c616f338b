"""The learning-rate schedule of an experiment, drawn from its spec alone, before anything is trained.

    python -m analysis.lr_schedule experiments/shakespeare.py
    python -m analysis.lr_schedule experiments/shakespeare_lr_sweep.py --out sweep_lr.svg   # one curve per run
    python -m analysis.lr_schedule experiments/fineweb_10b.py --schedule.warmup 200        # with overrides

Step s is the s-th optimizer update, as the trainer logs it: its lr is harness.spec.lr_at(s - 1), between
the resolved peak and final learning rates (optim.scaled_lr, optim.scaled_min_lr: lr and schedule.min_lr
after optim.lr_scaling), the values the trainer runs.
"""

import sys
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from analysis.plots import DPI, new_figure, style_lr_axes
from harness.spec import Experiment, SpecError, lr_at, parse_command, resolve, spec_parser

PROG = "python -m analysis.lr_schedule"
DEFAULT_OUT = "log/plots/lr_schedule.png"


def schedule_curve(spec: Experiment) -> tuple[np.ndarray, np.ndarray]:
    """(steps 1..N, the learning rate each of those updates uses)."""
    steps = np.arange(1, spec.schedule.steps + 1)
    o = resolve(spec).optim  # a spec from a file or a run: the resolved rates either way
    return steps, np.array([lr_at(int(s) - 1, o.scaled_lr, spec.schedule, o.scaled_min_lr) for s in steps])


def describe(spec: Experiment) -> str:
    s, o = spec.schedule, resolve(spec).optim
    scaling = "" if o.lr_scaling == "none" else \
        f" ({o.lr:g} {o.lr_scaling}-scaled from {o.base_batch_tokens:,} to {spec.train.batch_tokens:,} tokens/step)"
    decay = f"{s.decay} to {o.scaled_min_lr:.4g} at step {s.steps:,}"
    if s.decay == "wsd":
        decay = (f"constant to step {s.steps - s.decay_steps:,}, then {s.wsd_shape} to {o.scaled_min_lr:.4g} at step "
                 f"{s.steps:,}" if s.decay_steps else f"constant (wsd without decay) for {s.steps:,} steps")
    return f"{spec.name}: peak {o.scaled_lr:.4g}{scaling}, {s.warmup} warmup, {decay}"


def plot_schedules(specs: list[Experiment], title: str) -> Figure:
    fig, (ax,) = new_figure()
    for spec in specs:
        steps, lrs = schedule_curve(spec)
        ax.plot(steps, lrs, lw=1.8, label=describe(spec))
    style_lr_axes(ax)
    ax.set_title(f"Learning-rate schedule: {title}")
    return fig


def main(argv: list[str] | None = None) -> Path:
    front = spec_parser(PROG, __doc__)
    front.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help=f"the figure, .png or .svg ({DEFAULT_OUT})")
    try:
        specs, args = parse_command(list(sys.argv[1:] if argv is None else argv), PROG, front, multiple=True)
    except SpecError as e:
        sys.exit(f"error: {e}")
    for spec in specs:
        if spec.optim.scaled_lr is None:  # lr_scaling without the batch it scales from
            sys.exit(f"error: {spec.name}: optim.{spec.optim.check()[0]}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot_schedules(specs, args.target).savefig(args.out, dpi=DPI)
    for spec in specs:
        print(describe(spec))
    print(f"wrote {args.out}")
    return args.out


if __name__ == "__main__":
    main()
