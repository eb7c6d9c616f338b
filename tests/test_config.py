"""harness.spec: validation that names the field, experiment files, CLI overrides, and the run directory."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import simple_parsing

from harness import spec as config
from harness.cluster.inputs import ready
from harness.run_dir import RunDir
from harness.spec import Experiment, SpecError, init_run_dir

REPO = Path(__file__).resolve().parents[1]
SHAKESPEARE = REPO / "experiments/shakespeare.py"


@pytest.fixture
def spec() -> Experiment:
    """The Shakespeare spec with the numbers these tests reason about pinned (so retuning the default
    experiment cannot change them): 16 x 128 tokens per pass, 4,096 per step (one pass each on 2
    ranks), 160 steps, warmup 10, lr 3e-3, 32,768 val tokens, 30 min jobs."""
    return change(config.load_experiment_file(SHAKESPEARE)[0], **{
        "train.micro_batch": 16, "train.batch_tokens": 4096, "schedule.steps": 160, "schedule.warmup": 10,
        "optim.lr": 3e-3, "schedule.min_lr": 3e-4})


def change(exp: Experiment, **fields: object) -> Experiment:
    """`exp` with nested fields replaced: change(exp, **{"optim.lr": 0.0})."""
    return simple_parsing.replace(exp, fields)


def errors(exp: Experiment, world_size: int = 1, inputs: bool = False) -> list[str]:
    """The lines of the SpecError that validation raises (one error per line): of the spec alone, or with
    `inputs`, also against its data and sources (harness.cluster.inputs)."""
    with pytest.raises(SpecError) as e:
        ready(exp, world_size) if inputs else config.validate(exp, world_size)
    return str(e.value).splitlines()


def test_the_shakespeare_spec_is_valid(spec: Experiment) -> None:
    config.validate(spec, 1)
    config.validate(spec, 2)  # 1 pass each on 2 ranks


# ----------------------------------------------------------------------------- validation


@pytest.mark.parametrize(("fields", "field"), [
    ({"optim.lr": 0.0, "schedule.min_lr": 0.0}, "optim.lr"),
    ({"schedule.warmup": 160}, "schedule.warmup"),  # == steps
    ({"schedule.min_lr": 4e-3}, "schedule.min_lr"),  # > lr 3e-3
    ({"train.seq_len": 256}, "train.seq_len"),  # block_size is 128; 16 x 256 still divides 4,096
    ({"checkpoint.keep": 1}, "checkpoint.keep"),
    ({"eval.val_every": -1}, "eval.val_every"),
    ({"eval.sample_every": -40}, "eval.sample_every"),
    ({"eval.tasks_every": -1}, "eval.tasks_every"),
    ({"eval.val_tokens": 3000}, "eval.val_tokens"),  # not a multiple of 2,048
    ({"model.preset": "gpt5"}, "model.preset"),
    ({"model.n_layer": None}, "model.n_layer"),  # free size (preset None) without a depth
    ({"model.n_embd": 130}, "model.n_embd"),  # 4 heads
    ({"name": "my run"}, "name"),
    ({"name": "../escape"}, "name"),
    ({"cluster.signal_lead_s": 30 * 60}, "cluster.signal_lead_s"),  # time_min is 30
])
def test_an_invalid_field_is_named(spec: Experiment, fields: dict, field: str) -> None:
    lines = errors(change(spec, **fields))
    assert len(lines) == 1 and lines[0].startswith(f"{field}: "), lines


def test_indivisible_batch_shows_the_arithmetic(spec: Experiment) -> None:
    (line,) = errors(change(spec, **{"train.batch_tokens": 6144}), world_size=2)
    assert line.startswith("train.batch_tokens: 6,144 is not divisible"), line
    assert "micro_batch x seq_len x world_size = 16 x 128 x 2 = 4,096" in line, line
    fits_3 = change(spec, **{"train.batch_tokens": 6144, "eval.val_tokens": 5 * 6144})  # 16 x 128 x 3 = 6,144
    config.validate(fits_3, 3)


@pytest.mark.parametrize(("fields", "message"), [
    ({"optim.lr": "3e-4"}, "optim.lr: expected float, got str '3e-4'"),
    ({"train.micro_batch": 2.5}, "train.micro_batch: expected int | Literal['auto'], got float 2.5"),
    ({"train.seq_len": True}, "train.seq_len: expected int, got bool"),
    ({"optim.betas": (0.9,)}, "optim.betas: expected tuple[float, float], got tuple (0.9,)"),
    ({"train.device": "tpu"}, "train.device: expected Literal['auto', 'cpu', 'cuda'], got str 'tpu'"),
    ({"model.n_layer": "4"}, "model.n_layer: expected int | None, got str '4'"),
    ({"cluster.sbatch_extra": "reservation=x"}, "cluster.sbatch_extra: expected list[str], got str"),
])
def test_a_wrong_type_is_named(spec: Experiment, fields: dict, message: str) -> None:
    lines = errors(change(spec, **fields))
    assert lines[0].startswith(message), lines


def test_several_errors_are_reported_together(spec: Experiment) -> None:
    bad = change(spec, **{"name": "a b", "optim.lr": 0.0, "checkpoint.keep": 1, "schedule.warmup": 500,
                          "train.batch_tokens": 5000})
    fields = [line.split(":")[0] for line in errors(bad)]
    assert fields == ["name", "train.batch_tokens", "optim.lr", "schedule.warmup", "schedule.min_lr",
                      "checkpoint.keep"]


# ----------------------------------------------------------------------------- the data


def test_missing_data_names_the_field_and_the_fix(spec: Experiment, tmp_path: Path) -> None:
    lines = errors(change(spec, **{"data.dir": str(tmp_path / "nowhere")}), inputs=True)
    assert lines[0].startswith("data.dir: "), lines
    assert str(tmp_path / "nowhere") in lines[0]
    assert "harness.prepare" in "\n".join(lines)


def test_prepared_data_passes(spec: Experiment, shakespeare_dir: Path) -> None:
    ready(change(spec, **{"data.dir": str(shakespeare_dir)}), 1)
    ready(change(spec, **{"data.dir": str(shakespeare_dir)}), 2)


def test_more_val_tokens_than_the_split_is_refused(spec: Experiment, shakespeare_dir: Path) -> None:
    val = json.loads((shakespeare_dir / "manifest.json").read_text())["splits"]["val"]["tokens"]
    too_many = (val // 2048 + 1) * 2048  # a multiple of the 2,048 tokens per pass, just above the split
    lines = errors(change(spec, **{"data.dir": str(shakespeare_dir), "eval.val_tokens": too_many}), inputs=True)
    assert len(lines) == 1 and lines[0].startswith("eval.val_tokens: "), lines
    assert f"{val:,} val tokens" in lines[0]
    # ... unless validation is off
    ready(change(spec, **{"data.dir": str(shakespeare_dir), "eval.val_tokens": too_many, "eval.val_every": 0}), 1)


# ----------------------------------------------------------------------------- experiment files

HEADER = "from harness.spec import Experiment\nfrom harness.optim import OptimConfig\n"


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_a_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.py", HEADER + "spec = Experiment(\n    name='x',\n    seed=1 2,\n)\n")
    with pytest.raises(SpecError, match="syntax error") as e:
        config.load_experiment_file(path)
    assert str(e.value).startswith(f"{path}:5:"), str(e.value)


def test_a_file_that_raises_names_file_and_exception(tmp_path: Path) -> None:
    path = write(tmp_path / "raises.py", HEADER + "spec = Experiment(optim=OptimConfig(learning_rate=1e-3))\n")
    with pytest.raises(SpecError) as e:
        config.load_experiment_file(path)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "TypeError" in message and "learning_rate" in message, message


def test_a_file_without_spec_or_sweep_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.py", HEADER + "exp = Experiment()\n")
    with pytest.raises(SpecError, match="neither `spec = Experiment") as e:
        config.load_experiment_file(path)
    assert str(e.value).startswith(f"{path}: ")
    with pytest.raises(SpecError, match="expected Experiment objects, found dict"):
        config.load_experiment_file(write(tmp_path / "dict.py", "spec = {'name': 'x'}\n"))
    with pytest.raises(SpecError, match="not found"):
        config.load_experiment_file(tmp_path / "missing.py")


SWEEP = HEADER + """
sweep = [Experiment(name=f"lr{lr:g}", optim=OptimConfig(lr=lr)) for lr in (1e-3, 3e-3, 1e-2)]
"""


def test_a_sweep_returns_every_spec(tmp_path: Path) -> None:
    specs = config.load_experiment_file(write(tmp_path / "sweep.py", SWEEP))
    assert [(s.name, s.optim.lr) for s in specs] == [("lr0.001", 1e-3), ("lr0.003", 3e-3), ("lr0.01", 1e-2)]


def test_a_sweep_with_duplicate_names_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.py", HEADER + "sweep = [Experiment(name='a'), Experiment(name='b'), "
                                               "Experiment(name='a')]\n")
    with pytest.raises(SpecError, match="distinct names"):
        config.load_experiment_file(path)
    with pytest.raises(SpecError, match="empty"):
        config.load_experiment_file(write(tmp_path / "none.py", "sweep = []\n"))


# ----------------------------------------------------------------------------- the command line


def test_cli_overrides_apply() -> None:
    (exp,) = config.parse_cli([str(SHAKESPEARE), "--optim.lr", "3e-4", "--model.n_layer", "3",
                               "--optim.betas", "0.8", "0.9", "--train.device", "auto"], "prog")
    assert exp.optim.lr == 3e-4 and exp.model.n_layer == 3 and exp.optim.betas == (0.8, 0.9)
    assert exp.train.device == "auto"
    base = config.load_experiment_file(SHAKESPEARE)[0]
    expected = config.resolve(change(base, **{"optim.lr": 3e-4, "model.n_layer": 3, "optim.betas": (0.8, 0.9),
                                              "train.device": "auto"}))
    assert exp == expected  # nothing else moved
    assert exp.run_dir == "log/shakespeare"


def test_cli_resolves_the_preset() -> None:
    # An option without a value sets None: the sizes come from the preset again.
    (exp,) = config.parse_cli([str(SHAKESPEARE), "--model.preset", "gpt2-medium", "--model.n_layer",
                               "--model.n_head", "--model.n_embd"], "prog")
    assert (exp.model.n_layer, exp.model.n_head, exp.model.n_embd) == (24, 16, 1024)


def test_none_resets_an_optional_field() -> None:
    """`None` or `null` resets any Optional field (simple-parsing alone reads the string 'None' for a str,
    and refuses it for an int)."""
    (exp,) = config.parse_cli([str(SHAKESPEARE), "--model.preset", "gpt2", "--model.n_layer", "None",
                               "--model.n_head=null", "--model.n_embd", "None"], "prog")
    assert (exp.model.preset, exp.model.n_layer, exp.model.n_head, exp.model.n_embd) == ("gpt2", 12, 12, 768)
    (exp,) = config.parse_cli([str(SHAKESPEARE), "--model.preset", "None", "--optim.fused", "null"], "prog")
    assert exp.model.preset is None and exp.model.n_layer == 4 and exp.optim.fused is None
    (exp,) = config.parse_cli([str(SHAKESPEARE), "--name", "None"], "prog")  # not Optional: a name like any
    assert exp.name == "None"


def test_a_bad_value_exits_2_naming_the_option(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as e:
        config.parse_cli([str(SHAKESPEARE), "--optim.lr", "abc"], "prog")
    assert e.value.code == 2
    assert "argument --optim.lr: invalid float value: 'abc'" in capsys.readouterr().err


def test_an_unknown_field_exits_2_naming_it() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.train", "experiments/shakespeare.py", "--optim.bogus", "1"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "unrecognized arguments: --optim.bogus 1" in proc.stderr, proc.stderr[-2000:]


def test_help_lists_the_fields_with_their_docs() -> None:
    proc = subprocess.run([sys.executable, "-m", "harness.train", "experiments/shakespeare.py", "--help"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = " ".join(proc.stdout.split())  # argparse wraps to the terminal width
    assert "--optim.lr float peak learning rate (with lr_scaling: at base_batch_tokens) (default: 0.002)" in text
    assert "--schedule.warmup int steps of linear warmup from lr/warmup to lr (default: 30)" in text
    assert "--schedule.min_lr float learning rate at the end of the decay" in text
    assert "--train.device {auto,cpu,cuda}" in text


def test_a_sweep_needs_an_index(tmp_path: Path) -> None:
    path = write(tmp_path / "sweep.py", SWEEP)
    with pytest.raises(SpecError, match="sweep of 3 runs; pick one with --sweep-index N"):
        config.parse_cli([str(path)], "prog")
    (exp,) = config.parse_cli([str(path), "--sweep-index", "1", "--seed", "7"], "prog")
    assert (exp.name, exp.optim.lr, exp.seed) == ("lr0.003", 3e-3, 7)
    with pytest.raises(SpecError, match="--sweep-index 3"):
        config.parse_cli([str(path), "--sweep-index", "3"], "prog")
    every = config.parse_cli([str(path), "--seed", "7"], "prog", multiple=True)
    assert [(s.name, s.seed) for s in every] == [("lr0.001", 7), ("lr0.003", 7), ("lr0.01", 7)]


def test_cli_reloads_a_run_directory(spec: Experiment, tmp_path: Path) -> None:
    saved = config.resolve(change(spec, run_dir=str(tmp_path / "run"), seed=5))
    init_run_dir(RunDir(saved.run_dir), saved)
    assert config.parse_cli([str(tmp_path / "run")], "prog") == [saved]
    (exp,) = config.parse_cli([str(tmp_path / "run"), "--optim.lr", "1e-3"], "prog")
    assert exp == config.resolve(change(saved, **{"optim.lr": 1e-3}))  # the derived optim.scaled_lr too
    assert exp.optim.scaled_lr == 1e-3
    with pytest.raises(SpecError, match="no config.json"):
        config.parse_cli([str(tmp_path)], "prog")


def test_json_round_trip(spec: Experiment) -> None:
    exp = config.resolve(change(spec, **{"cluster.sbatch_extra": ["reservation=x"], "optim.betas": (0.8, 0.99)}))
    back = config.from_json(config.to_json(exp))
    assert back == exp
    assert isinstance(back.optim.betas, tuple)


def test_a_version_1_spec_reads_through_the_migration(spec: Experiment) -> None:
    """config.json before the task registry (no spec_version; HellaSwag's own fields) reads as the current
    spec; a spec written by a newer harness is refused, naming its version."""
    d = json.loads(config.to_json(spec))
    del d["spec_version"]
    d["eval"] = {k: v for k, v in d["eval"].items() if not k.startswith("tasks")} | {
        "hellaswag_every": 50, "hellaswag_limit": 100, "hellaswag_data": "hs.jsonl"}
    old = config.from_json(json.dumps(d), "run/config.json")
    assert (old.eval.tasks, old.eval.tasks_every, old.eval.tasks_limit, old.eval.tasks_data) == (
        ["hellaswag_nanogpt"], 50, 100, "hs.jsonl")
    assert config.diff(old, change(spec, **{"eval.tasks": ["hellaswag_nanogpt"], "eval.tasks_every": 50,
                                            "eval.tasks_limit": 100, "eval.tasks_data": "hs.jsonl"})) == {}
    d["eval"]["hellaswag_every"] = 0
    assert config.from_json(json.dumps(d)).eval.tasks == []
    with pytest.raises(SpecError, match="^run/config.json: spec_version 99 is not one this code reads"):
        config.from_json(json.dumps(json.loads(config.to_json(spec)) | {"spec_version": 99}), "run/config.json")
    with pytest.warns(DeprecationWarning, match="hellaswag_every"):  # an experiment file written for them
        assert config.EvalConfig(hellaswag_every=0).tasks == []


def test_a_version_2_spec_keeps_build_nanogpts_hellaswag(spec: Experiment) -> None:
    """In version 2, "hellaswag" named build-nanogpt's HellaSwag; from version 3 it is lm-eval's."""
    d = json.loads(config.to_json(spec)) | {"spec_version": 2}
    d["eval"] = {k: v for k, v in d["eval"].items() if k != "tasks_batch"} | {"tasks": ["hellaswag", "piqa"]}
    assert config.from_json(json.dumps(d)).eval.tasks == ["hellaswag_nanogpt", "piqa"]
    d = json.loads(config.to_json(change(spec, **{"eval.tasks": ["hellaswag"]})))
    assert d["spec_version"] == 3 and config.from_json(json.dumps(d)).eval.tasks == ["hellaswag"]


def test_from_json_names_an_unknown_key(spec: Experiment) -> None:
    d = json.loads(config.to_json(spec))
    d["optim"]["bogus"] = 1
    with pytest.raises(SpecError, match=r"^run/config.json: optim\.bogus: unknown field$"):
        config.from_json(json.dumps(d), "run/config.json")
    d = json.loads(config.to_json(spec))
    d["colour"] = "red"
    with pytest.raises(SpecError, match="^colour: unknown field$"):
        config.from_json(json.dumps(d))
