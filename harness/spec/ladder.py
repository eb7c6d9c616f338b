"""A model ladder: the runs a scaling-law fit needs, from a few rules.

Sizes come from a width/depth rule, token budgets are multiples of each size's non-embedding parameters
N, the learning rate follows a size rule (OLMo's lr proportional to N^(-1/3) by default) and the batch a
rule of its own (optim.lr_scaling then scales the rate with it). Each size trains one constant-rate trunk
(schedule.decay="wsd", decay_steps=0) to its largest budget's branch point; each budget D is a branch
from the trunk's checkpoint at 1 - cooldown of D that decays over the rest (Hägele et al. 2024): several
budgets for the price of one run and the cooldowns. The trunks keep those checkpoints for good
(checkpoint.keep_steps) and queue the branches when they write them (spec `branches`).

    ladder = Ladder(name="ladder_shakespeare", base=spec, shapes=[(2, 3, 24), ...], multiples=[4, 8, 16, 32])
    sweep = ladder.specs()     # the trunks first, then the branches

N counts the parameters outside the token and position tables (Kaplan et al. 2020; the tied output
layer is the token table). Imports no torch: `params` and `flops_per_token` are the model's own counts
(harness.model.gpt), in closed form.
"""

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from harness.spec.experiment import Experiment
from harness.spec.model import ModelConfig
from harness.spec.section import SpecError


def params(n_layer: int, n_embd: int, bias: bool = True) -> int:
    """Non-embedding parameters of a GPT-2 block stack: per block q, k, v, the projection and the 4x MLP
    (12 d^2 weights; 13 d biases and LayerNorm gains and biases, or 2 d gains without biases), and ln_f."""
    per_block = 12 * n_embd**2 + (13 * n_embd if bias else 2 * n_embd)
    return n_layer * per_block + (2 if bias else 1) * n_embd


def flops_per_token(model: ModelConfig, seq_len: int) -> float:
    """Training FLOPs per token as harness.model.gpt counts them: 6 x (the parameters the matmuls use: N and
    the tied token table, which is also the output layer) + 12 x layers x width x context for attention."""
    m = model.resolved()
    return 6 * (params(m.n_layer, m.n_embd, m.bias) + m.vocab_size * m.n_embd) + 12 * m.n_layer * m.n_embd * seq_len


@dataclass
class Rung:
    """One size of the ladder and what the rules give it."""

    n_layer: int
    n_head: int
    n_embd: int
    params: int  # non-embedding parameters (N)
    flops_per_token: float
    batch_tokens: int
    lr: float  # the rate at base.optim.base_batch_tokens (optim.lr_scaling scales it to batch_tokens)
    warmup: int  # steps
    budgets: list[tuple[float, int, int]]  # (multiple of N, steps, decay steps), by budget

    @property
    def label(self) -> str:
        return f"L{self.n_layer}-d{self.n_embd}"


@dataclass
class Ladder:
    """Sizes x token budgets, as trunks and cooldown branches (see the module's doc)."""

    name: str  # the ladder's name: its runs are ROOT/NAME/NAME-L2-d64-x16 (a branch), ...-trunk
    base: Experiment  # everything the rules leave alone: data, context, eval, checkpoints, cluster, ...
    shapes: list[tuple[int, int, int]]  # (n_layer, n_head, n_embd) per size: the width/depth rule's output
    multiples: list[float]  # token budgets, as multiples of each size's N
    lr_ref: float  # the learning rate of a size of n_ref non-embedding parameters ...
    n_ref: int
    lr_exponent: float = -1 / 3  # ... and how it scales with N (OLMo: N^(-1/3))
    batch_tokens: Callable[[int], int] = lambda n: 524_288  # noqa: E731 - tokens per step for a size of N
    cooldown: float = 0.2  # the share of each budget that decays to min_lr (Hägele et al.: a fifth matches cosine)
    wsd_shape: Literal["linear", "cosine", "1-sqrt"] = "linear"
    min_lr_ratio: float = 0.1  # the rate the cooldowns end at, as a share of the peak
    warmup_fraction: float = 0.1  # warmup, as a share of the size's smallest budget
    root: str = "log"
    rungs: list[Rung] = field(init=False)

    def __post_init__(self) -> None:
        self.rungs = [self.rung(*shape) for shape in self.shapes]

    def rung(self, n_layer: int, n_head: int, n_embd: int) -> Rung:
        model = dataclasses.replace(self.base.model, preset=None, n_layer=n_layer, n_head=n_head, n_embd=n_embd)
        n = params(n_layer, n_embd, model.bias)
        batch = self.batch_tokens(n)
        budgets = []
        for m in sorted(self.multiples):
            steps = max(1, round(m * n / batch))
            budgets.append((m, steps, max(1, round(self.cooldown * steps))))
        warmup = max(1, round(self.warmup_fraction * budgets[0][1]))
        if budgets[0][1] - budgets[0][2] <= warmup:
            raise SpecError(f"{self.name}: L{n_layer}-d{n_embd}: the smallest budget ({budgets[0][1]} steps of "
                            f"{batch:,} tokens) leaves no stable phase after {warmup} warmup steps; raise multiples")
        if len({s - k for _, s, k in budgets}) < len(budgets):
            raise SpecError(f"{self.name}: L{n_layer}-d{n_embd}: two budgets branch at the same step; spread the "
                            "multiples further apart")
        return Rung(n_layer, n_head, n_embd, n, flops_per_token(model, self.base.train.seq_len), batch,
                    self.lr_ref * (n / self.n_ref) ** self.lr_exponent, warmup, budgets)

    def run_dir(self, run_name: str) -> str:
        return f"{self.root}/{self.name}/{run_name}"

    def specs(self) -> list[Experiment]:
        """Every trunk, then every branch: submitted as one job array, or run in this order by hand."""
        trunks, branches = [], []
        for r in self.rungs:
            trunk_name = f"{self.name}-{r.label}-trunk"
            own = [self.branch(r, trunk_name, m, steps, decay) for m, steps, decay in r.budgets]
            trunks.append(self.trunk(r, trunk_name, own))
            branches += own
        return trunks + branches

    def sized(self, r: Rung, name: str, steps: int, decay_steps: int, **changes: object) -> Experiment:
        """The base spec at this size and batch, with its rules' rates and a WSD schedule."""
        b = self.base
        return dataclasses.replace(
            b, name=name, run_dir=self.run_dir(name),
            model=dataclasses.replace(b.model, preset=None, n_layer=r.n_layer, n_head=r.n_head, n_embd=r.n_embd),
            train=dataclasses.replace(b.train, batch_tokens=r.batch_tokens),
            optim=dataclasses.replace(b.optim, lr=r.lr),
            schedule=dataclasses.replace(b.schedule, steps=steps, warmup=r.warmup, decay="wsd", decay_steps=decay_steps,
                                         wsd_shape=self.wsd_shape, min_lr=r.lr * self.min_lr_ratio),
            **changes)

    def trunk(self, r: Rung, name: str, branches: list[Experiment]) -> Experiment:
        """The constant-rate run every branch of this size starts from: no evaluation (its losses are not
        cooled down), its branch points kept for good."""
        points = sorted(int(b.branch_step()) for b in branches)
        return self.sized(r, name, points[-1], 0, branches=[b.run_dir for b in branches],
                          eval=dataclasses.replace(self.base.eval, val_every=0, tasks=[], sample_every=0),
                          checkpoint=dataclasses.replace(self.base.checkpoint, keep_steps=points))

    def branch(self, r: Rung, trunk: str, multiple: float, steps: int, decay: int) -> Experiment:
        """One budget: the trunk's checkpoint at steps - decay, cooled down over `decay` steps; validation at
        its end (eval.val_every=steps) gives the point of the fit."""
        name = f"{self.name}-{r.label}-x{multiple:g}"
        point = f"{self.run_dir(trunk)}/checkpoints/step_{steps - decay:08d}"
        return self.sized(r, name, steps, decay, branch_from=point,
                          eval=dataclasses.replace(self.base.eval, val_every=steps),
                          checkpoint=dataclasses.replace(self.base.checkpoint, every=0))

    def cost(self) -> tuple[int, float]:
        """(tokens, FLOPs) the whole ladder trains: each trunk to its last branch point, then every cooldown."""
        tokens = [r.batch_tokens * (max(s - k for _, s, k in r.budgets) + sum(k for _, _, k in r.budgets))
                  for r in self.rungs]
        return sum(tokens), sum(t * r.flops_per_token for t, r in zip(tokens, self.rungs, strict=True))

