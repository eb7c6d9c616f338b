"""`python -m harness.eval` as users run it: hellaswag and val-loss on a trained run and on a
HuggingFace GPT-2 directory, as one process and as two torchrun ranks."""

import json
import math
import shutil

import pytest
import torch

from harness import records
from harness.data.reader import ShardedTokenReader
from harness.distributed import DistEnv
from harness.eval.hellaswag import evaluate_hellaswag
from harness.eval.val_loss import val_loss
from harness.model.io import load_model
from harness.run_dir import RunDir, step_dir
from tests.helpers import harness

LIMIT = 40
SINGLE = DistEnv(0, 0, 1, torch.device("cpu"), None)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def trained(shakespeare_dir, trained_run, tmp_path_factory):
    """(data dir, run dir) of the tiny GPT trained for 40 steps on Shakespeare: a copy of the session's run,
    which stays as other tests expect it (the evaluations here add rows to it)."""
    run_dir = tmp_path_factory.mktemp("eval-cli") / "run"
    shutil.copytree(trained_run, run_dir)
    return shakespeare_dir, run_dir


@pytest.fixture(scope="session")
def hf_dir(tmp_path_factory):
    """A tiny randomly initialised GPT-2 written by transformers itself."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hf-gpt2")
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, n_positions=256)).save_pretrained(path)
    return path


def eval_cli(*args: str, ranks: int = 1) -> dict:
    """The CLI's JSON line; exactly one, however many ranks ran."""
    proc = harness("harness.eval", *args, nproc=ranks if ranks > 1 else 0, env={"OMP_NUM_THREADS": "1"})
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1, proc.stdout
    return json.loads(lines[0])


@pytest.fixture(scope="module")
def one_process(trained, hellaswag):
    """HellaSwag on the run directory as one process: the printed JSON and the file it wrote."""
    _, run_dir = trained
    result = eval_cli("hellaswag_nanogpt", str(run_dir), "--data", str(hellaswag), "--limit", str(LIMIT))
    return result, json.loads((step_dir(RunDir(run_dir).checkpoints, 40) / "eval_hellaswag_nanogpt.json").read_text())


def test_hellaswag_on_a_run(one_process, trained, hellaswag):
    result, written = one_process
    _, run_dir = trained
    assert written == result
    assert result["target"] == str(run_dir) and result["path"] == str(step_dir(RunDir(run_dir).checkpoints, 40))
    assert result["step"] == 40 and result["model"] == "checkpoint" and result["world_size"] == 1
    assert result["examples"] == LIMIT and result["seconds"] > 0 and result["task"] == "hellaswag_nanogpt"
    assert result["examples_per_s"] == pytest.approx(LIMIT / result["seconds"], rel=0.01)
    model, _ = load_model(run_dir)
    expected = evaluate_hellaswag(model, str(hellaswag), LIMIT, SINGLE)
    assert {k: result[k] for k in expected} == expected
    # The score of the run's checkpoint is in the run's records, as a row of its step scored later, and in
    # the summary written from them.
    (row,) = [r for r in records.read(RunDir(run_dir)) if r["kind"] == "eval"]
    assert row["later"] and row["step"] == 40 and row["task"] == "hellaswag_nanogpt" and row["acc"] == result["acc"]
    summary = json.loads(RunDir(run_dir).summary.read_text())
    assert summary["evals"]["hellaswag_nanogpt"]["acc_norm"] == result["acc_norm"] and summary["steps"] == 40


def test_torchrun_two_ranks_match_one_process(one_process, trained, hellaswag):
    _, run_dir = trained
    checkpoint = step_dir(RunDir(run_dir).checkpoints, 40)  # a checkpoint directory as the target this time
    two = eval_cli("hellaswag_nanogpt", str(checkpoint), "--data", str(hellaswag), "--limit", str(LIMIT), ranks=2)
    one, _ = one_process
    assert two["world_size"] == 2 and two["step"] == 40
    assert (two["acc"], two["acc_norm"], two["examples"]) == (one["acc"], one["acc_norm"], one["examples"])
    assert json.loads((checkpoint / "eval_hellaswag_nanogpt.json").read_text()) == two


def test_hellaswag_on_a_huggingface_dir(hf_dir, hellaswag):
    result = eval_cli("hellaswag_nanogpt", str(hf_dir), "--data", str(hellaswag), "--limit", "16", "--batch", "3")
    assert result["model"] == "huggingface" and result["step"] is None and result["path"] == str(hf_dir)
    assert json.loads((hf_dir / "eval_hellaswag_nanogpt.json").read_text()) == result
    model, _ = load_model(hf_dir)
    expected = evaluate_hellaswag(model, str(hellaswag), 16, SINGLE)
    assert expected["examples"] == 16 and {k: result[k] for k in expected} == expected


def test_val_loss_on_a_run(trained):
    data, run_dir = trained
    result = eval_cli("val-loss", str(run_dir), "--data", str(data), "--tokens", "5000", "--batch", "4",
                      "--seq-len", "64")
    assert result["tokens"] == 4864 and result["seq_len"] == 64  # rounded down to whole steps of 4 x 64
    assert math.isfinite(result["val_loss"]) and result["val_loss"] < 9  # below ln(50304) = 10.8: it learned
    assert result["step"] == 40 and result["data"] == str(data)
    assert json.loads((step_dir(RunDir(run_dir).checkpoints, 40) / "eval_val_loss.json").read_text()) == result
    model, _ = load_model(run_dir)
    same = val_loss(model, ShardedTokenReader(data, "val", 4, 64), 4864, SINGLE)
    assert same == pytest.approx(result["val_loss"], rel=1e-5)


def test_val_loss_on_a_huggingface_dir(hf_dir, trained):
    data, _ = trained
    result = eval_cli("val-loss", str(hf_dir), "--data", str(data), "--tokens", "4096", "--batch", "2")
    assert result["seq_len"] == 256 and result["tokens"] == 4096  # seq_len defaults to the model's block_size
    assert abs(result["val_loss"] - math.log(50257)) < 0.5  # random weights: about uniform over the vocabulary
    assert result["model"] == "huggingface" and result["step"] is None
    assert json.loads((hf_dir / "eval_val_loss.json").read_text()) == result


def test_bad_data_is_a_clear_error(hf_dir, tmp_path):
    missing = tmp_path / "hellaswag_val.jsonl"
    proc = harness("harness.eval", "hellaswag_nanogpt", str(hf_dir), "--data", str(missing), check=False)
    assert proc.returncode == 1 and f"error: {missing}: no such file" in proc.stderr
    assert "Traceback" not in proc.stderr
