"""A model ladder for real (harness.spec.ladder): a tiny one of 2 sizes x 2 budgets, its constant-rate trunks and
their cooldown branches trained as processes, and a straight WSD run that one branch must equal step for step.
Also: the branch points kept for good, the lineage in the records, harness.status naming branches nothing has
queued, the ladder's closed-form counts against the model's, its plan, and the scaling fit over its runs."""

import contextlib
import dataclasses
import io
import json
from pathlib import Path

import pytest

from analysis import ladder as ladder_plan
from analysis import scaling
from harness.cluster import branches
from harness.cluster.inputs import ready
from harness.cluster.status import run_status, table
from harness.cluster.submit import resubmit_failed
from harness.run_dir import RunDir, checkpoint_step
from harness.spec import Experiment, SpecError, init_run_dir, load_experiment_file, resolve, validate
from harness.spec.ladder import flops_per_token, params
from tests.helpers import REPO, finish, launch, rows, train_losses, write_tiny_ladder

# tests/helpers.py: write_tiny_ladder. The branch from the L2 trunk's step 10 (13 steps, the last 3 decaying), which
# the trunk would have pruned if it were not kept for good:
STRAIGHT_OF = "tiny-L2-d16-x0.5"


@pytest.fixture(scope="module")
def tiny_ladder(shakespeare_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny ladder trained: the trunks and a straight run first (the branches' run directories already
    written, as harness.submit writes them), then every branch from its run directory, as a queued job starts
    it. Before each round, harness.status of the branches."""
    root = tmp_path_factory.mktemp("ladder")
    file = write_tiny_ladder(root, shakespeare_dir)
    specs = {s.name: resolve(s) for s in load_experiment_file(file)}
    trunks = [s for s in specs.values() if s.branches]
    kids = [s for s in specs.values() if s.branch_from]
    for spec in kids:
        init_run_dir(RunDir(spec.run_dir), spec)
    before = {s.name: run_status(RunDir(s.run_dir)) for s in kids}
    resubmitted = io.StringIO()
    with contextlib.redirect_stdout(resubmitted):  # --resume --failed: nothing is due yet, so nothing is queued
        assert resubmit_failed([str(root / "tiny")]) == []
    # A straight WSD run of the same 13 steps and decay, from scratch: what the branch must equal.
    straight = dataclasses.replace(specs[STRAIGHT_OF], name="straight", run_dir=str(root / "straight"), branch_from="")
    init_run_dir(RunDir(straight.run_dir), straight)
    first = [(s.run_dir, launch("harness.train", str(file), "--sweep-index", str(list(specs).index(s.name)),
                                log=Path(f"{s.run_dir}.log"), env={"OMP_NUM_THREADS": "1"})) for s in trunks]
    first.append((straight.run_dir, launch("harness.train", straight.run_dir, log=Path(f"{straight.run_dir}.log"),
                                           env={"OMP_NUM_THREADS": "1"})))
    for run_dir, proc in first:
        finish(proc, Path(f"{run_dir}.log"))
    between = {s.name: run_status(RunDir(s.run_dir)) for s in kids}
    second = [(s.run_dir, launch("harness.train", s.run_dir, log=Path(f"{s.run_dir}.log"),
                                 env={"OMP_NUM_THREADS": "1"})) for s in kids]
    for run_dir, proc in second:
        finish(proc, Path(f"{run_dir}.log"))
    finished = io.StringIO()
    with contextlib.redirect_stdout(finished):
        assert resubmit_failed([str(root / "tiny")]) == []
    return {"file": file, "root": root, "specs": specs, "straight": straight, "before": before, "between": between,
            "resubmitted": resubmitted.getvalue(), "finished": finished.getvalue()}


@pytest.mark.slow
def test_a_branch_equals_the_straight_wsd_run_step_for_step(tiny_ladder: dict) -> None:
    branch = tiny_ladder["specs"][STRAIGHT_OF]
    straight = Path(tiny_ladder["straight"].run_dir)
    trunk, step = branches.branch_point(branch)
    assert step == 10 and branch.schedule.steps == 13 and branch.schedule.decay_steps == 3
    joined = {s: v for s, v in train_losses(trunk.path).items() if s <= step} | train_losses(Path(branch.run_dir))
    assert joined == train_losses(straight) and sorted(joined) == list(range(1, 14))  # bit for bit
    lrs = {r["step"]: r["lr"] for r in rows(Path(branch.run_dir), "train")}
    assert lrs == {r["step"]: r["lr"] for r in rows(straight, "train") if r["step"] > step}
    (val,) = rows(Path(branch.run_dir), "val")
    same = ("step", "tokens", "loss", "val_tokens")
    assert [val[k] for k in same] == [rows(straight, "val")[-1][k] for k in same]  # the same model at the end


@pytest.mark.slow
def test_the_branch_points_are_kept_for_good(tiny_ladder: dict) -> None:
    """Saved every 2 steps keeping 2, the trunks still hold the checkpoints their branches start from."""
    for spec in tiny_ladder["specs"].values():
        if not spec.branches:
            continue
        kept = [checkpoint_step(p) for p in RunDir(spec.run_dir).checkpoint_dirs()]
        last = spec.schedule.steps
        newest_two = {last - 1 - (last - 1) % 2, last}  # the last save every 2 steps before the end, and the end
        assert kept == sorted(set(spec.checkpoint.keep_steps) | newest_two), kept
        for step in spec.checkpoint.keep_steps:
            meta = json.loads((RunDir(spec.run_dir).checkpoints / f"step_{step:08d}" / "meta.json").read_text())
            assert meta["permanent"] is True
        assert "queued only under Slurm" in Path(f"{spec.run_dir}.log").read_text()


@pytest.mark.slow
def test_a_branch_records_its_lineage_and_counts_from_step_0(tiny_ladder: dict) -> None:
    branch = tiny_ladder["specs"][STRAIGHT_OF]
    trunk, step = branches.branch_point(branch)
    (start,) = rows(Path(branch.run_dir), "start")
    assert start["step"] == step and start["checkpoint"] == branch.branch_from
    lineage = start["branched_from"]
    assert (lineage["run"], lineage["step"], lineage["checkpoint"]) == (str(trunk.path), step, branch.branch_from)
    assert "schedule.steps: 21 -> 13" in lineage["changes"]
    summary = json.loads(RunDir(branch.run_dir).summary.read_text())
    straight = json.loads(RunDir(tiny_ladder["straight"].run_dir).summary.read_text())
    assert summary["branched_from"] == lineage and straight["branched_from"] is None
    # tokens and FLOPs from step 0, the trunk's share included: as the straight run counts them
    assert summary["tokens"] == straight["tokens"] == 13 * 256
    assert summary["flops"] == straight["flops"] == summary["flops_per_token"] * 13 * 256
    assert summary["val_loss"] == straight["val_loss"]


@pytest.mark.slow
def test_status_names_the_branches_nothing_has_queued(tiny_ladder: dict) -> None:
    """Before the trunks ran, each branch waits for its step; after, its checkpoint is written and nothing has
    queued it (the trunks ran outside Slurm); once it ran, it is a run like any other."""
    before, between = tiny_ladder["before"], tiny_ladder["between"]
    for name, spec in tiny_ladder["specs"].items():
        if not spec.branch_from:
            continue
        trunk, step = branches.branch_point(spec)
        assert before[name]["state"] == between[name]["state"] == "NOT QUEUED"
        assert f"waits for {trunk.path} to write step {step}" in before[name]["branch"]
        assert f"{trunk.path} has step {step}" in between[name]["branch"] and "--resume" in between[name]["branch"]
        after = run_status(RunDir(spec.run_dir))
        assert after["state"] == "FINISHED" and after["branch"] is None
    shown = table(list(between.values()))
    assert shown.count("never queued") == 4 and shown.count("NOT QUEUED") == 4


@pytest.mark.slow
def test_resume_failed_leaves_waiting_branches_and_finished_runs_alone(tiny_ladder: dict) -> None:
    """`harness.submit ... --resume --failed` (its Slurm-free part) before the trunks ran, and after everything."""
    said = tiny_ladder["resubmitted"].splitlines()  # (the trunks had no run directories yet)
    assert len(said) == 4 and all("never queued: waits for" in line for line in said), said
    assert tiny_ladder["finished"].count("finished: nothing to do") == 6, tiny_ladder["finished"]


@pytest.mark.slow
def test_the_scaling_fit_reads_the_ladder_s_runs(tiny_ladder: dict, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture) -> None:
    """Its 4 branches are the points (the trunks and the straight run's duplicate left out or kept as they are);
    4 points cannot determine 5 parameters, and it says so."""
    out = scaling.main([str(tiny_ladder["root"]), "--runs", "tiny-*", "--bootstrap", "2", "--starts", "1",
                        "--json", str(tmp_path / "fit.json"), "--out", str(tmp_path / "scaling.png")])
    text = capsys.readouterr().out
    assert sorted(p["run"] for p in out["points"]) == sorted(n for n, s in tiny_ladder["specs"].items()
                                                             if s.branch_from)
    assert "its rate never decays (a trunk)" in text and "WARNING: 4 points, 2 sizes" in text
    assert "N: non-embedding parameters" in text
    assert {p["params"] for p in out["points"]} == {3312, 6592}
    saved = json.loads((tmp_path / "fit.json").read_text())
    assert set(saved["fit"]) >= {"E", "A", "B", "alpha", "beta", "intervals"}
    assert (tmp_path / "scaling.png").read_bytes()[:4] == b"\x89PNG"


# ----------------------------------------------------------------------------- the ladder's rules, without training


def test_the_closed_form_counts_are_the_model_s() -> None:
    """params() and flops_per_token() (no torch, for plans) against harness.model.gpt's own counts."""
    from harness.model.gpt import GPT
    from harness.spec import ModelConfig

    for n_layer, n_head, n_embd, bias in [(2, 3, 24, True), (1, 2, 16, True), (3, 2, 32, False)]:
        cfg = ModelConfig(preset=None, n_layer=n_layer, n_head=n_head, n_embd=n_embd, block_size=64, bias=bias)
        model = GPT(cfg)
        assert params(n_layer, n_embd, bias) == model.num_params(non_embedding=True)
        assert flops_per_token(cfg, 64) == model.flops_per_token(64)


def test_the_shakespeare_ladder_is_a_valid_plan(capsys: pytest.CaptureFixture) -> None:
    specs = load_experiment_file(REPO / "experiments/ladder_shakespeare.py")
    trunks = [s for s in specs if s.branches]
    assert len(trunks) == 4 and len(specs) == 24 and specs[:4] == trunks  # the trunks first
    for spec in specs:
        validate(resolve(spec), 1)
    branches.require(specs)
    by_dir = {s.run_dir: s for s in specs}
    for trunk in trunks:
        assert trunk.schedule.decay == "wsd" and trunk.schedule.decay_steps == 0 and trunk.eval.val_every == 0
        for run_dir in trunk.branches:
            branch = by_dir[run_dir]
            source, step = branches.branch_point(branch)
            assert source.path == Path(trunk.run_dir) and step in trunk.checkpoint.keep_steps
            assert branch.schedule.decay_steps == branch.schedule.steps - step  # the last ~20% decay
            assert 0.15 < branch.schedule.decay_steps / branch.schedule.steps < 0.25
    ladder_plan.main([str(REPO / "experiments/ladder_shakespeare.py")])
    text = capsys.readouterr().out
    assert "4 trunks and 20 branches train 3,921,408 tokens" in text and "--sweep-index" in text
    assert "| L2-d48 | 56,640 | 15.0 | 512 |" in text and "| L2-d16 | 6,592 | 4.9 | 256 |" in text


def test_the_submission_checks_trunks_against_branches() -> None:
    """A branch submitted with its trunk must be listed by it and its step kept, or nothing would queue it or keep
    its checkpoint."""
    specs = load_experiment_file(REPO / "experiments/ladder_shakespeare.py")
    trunk, branch = specs[0], next(s for s in specs if s.run_dir == specs[0].branches[0])
    unlisted = dataclasses.replace(trunk, branches=trunk.branches[1:])
    unkept = dataclasses.replace(trunk, checkpoint=dataclasses.replace(trunk.checkpoint, keep_steps=[]))
    problems = branches.check_ladder([unlisted, branch]) + branches.check_ladder([unkept, branch])
    assert problems == [f"{trunk.name}: branches: does not list {branch.run_dir}, which branches from its step 42: "
                        "nothing would queue it",
                        f"{trunk.name}: checkpoint.keep_steps: {branch.name} branches from step 42, which is not kept "
                        "(add it)"]
    orphan = dataclasses.replace(branch, branch_from="/nowhere/checkpoints/step_00000042")
    assert "is in no run" in branches.check_ladder([orphan])[0]


def test_branch_from_is_checked_before_anything_runs(shakespeare_spec: Experiment, tmp_path: Path) -> None:
    spec = dataclasses.replace(shakespeare_spec, run_dir=str(tmp_path / "run"))
    problems = dataclasses.replace(spec, branch_from=str(tmp_path / "x"), model=dataclasses.replace(
        spec.model, init_from=str(tmp_path))).check()
    assert problems == [f"branch_from: {str(tmp_path / 'x')!r} is not a checkpoint directory "
                        "(RUN_DIR/checkpoints/step_XXXXXXXX)",
                        "branch_from: a run starts from one source: branch_from (weights, optimizer, data position) "
                        f"or model.init_from (weights only), not both (model.init_from={str(tmp_path)!r})"]
    late = dataclasses.replace(spec, branch_from=str(tmp_path / "checkpoints/step_00001000"))
    with pytest.raises(SpecError, match="is at or past this run's last step"):
        validate(late, 1)
    missing = dataclasses.replace(spec, branch_from=str(tmp_path / "checkpoints/step_00000004"))
    with pytest.raises(SpecError, match="no checkpoint there"):
        ready(missing, 1)
    ready(missing, 1, branch_may_wait=True)  # a submission: the trunk may write it later


@pytest.mark.slow
def test_a_branch_must_continue_its_source_exactly(tiny_ladder: dict) -> None:
    """Checked on the login node (harness.cluster.inputs), before a branch is queued or starts: the model, and
    the world size unless data.reshard."""
    branch = dataclasses.replace(tiny_ladder["specs"][STRAIGHT_OF], run_dir=str(tiny_ladder["root"] / "fresh"))
    wider = dataclasses.replace(branch, model=dataclasses.replace(branch.model, n_embd=32))
    with pytest.raises(SpecError, match=r"branch_from: .* was written by a different spec \(model.n_embd: 16 -> 32\)"):
        ready(wider, 1)
    two = dataclasses.replace(branch, train=dataclasses.replace(branch.train, micro_batch=2))
    with pytest.raises(SpecError, match="written by 1 ranks, this run has 2"):
        ready(two, 2)
    ready(dataclasses.replace(two, data=dataclasses.replace(two.data, reshard=True)), 2)


@pytest.fixture
def shakespeare_spec(shakespeare_dir: Path) -> Experiment:
    spec = load_experiment_file(REPO / "experiments/shakespeare.py")[0]
    return resolve(dataclasses.replace(spec, data=dataclasses.replace(spec.data, dir=str(shakespeare_dir))))
