"""model.init_from: a run started from a HuggingFace GPT-2 directory (written by transformers itself, from
random weights) or from another run's checkpoint; its padded vocabulary; its shape checks; and its resume."""

import dataclasses
import shutil
import signal
from pathlib import Path

import pytest
import torch
from torch.nn import functional as F

from harness import spec as config
from harness.data.reader import ShardedTokenReader
from harness.model.gpt import GPT
from harness.model.io import load_model, load_pretrained
from harness.model.sources import check_init_from as check
from harness.run_dir import RunDir
from harness.spec import ModelConfig, read_spec
from tests.helpers import REPO, finish, harness, launch, rows, train_args, train_losses, wait_for_step

# The tiny GPT of tests/helpers.py (2 layers, 2 heads, 64 wide) with OpenAI's vocabulary and a 128-token table.
HF_SHAPE = dict(n_layer=2, n_head=2, n_embd=64, n_positions=128, vocab_size=50257)


@pytest.fixture(scope="module")
def hf_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    transformers.GPT2LMHeadModel(transformers.GPT2Config(**HF_SHAPE)).save_pretrained(path)
    return path


def hf_model(path: Path):
    from transformers import GPT2LMHeadModel

    return GPT2LMHeadModel.from_pretrained(path).eval()


def tiny(init_from: Path, **changes) -> ModelConfig:
    return dataclasses.replace(ModelConfig(preset=None, n_layer=2, n_head=2, n_embd=64, block_size=128,
                                           vocab_size=50304, unpadded_vocab=50257, init_from=str(init_from)),
                               **changes).resolved()


def hf_loss(model, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        logits = model(x).logits
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)), y.reshape(-1)).item()


def batch(seed: int, t: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    tokens = torch.randint(0, 50257, (4, t + 1), generator=torch.Generator().manual_seed(seed))
    return tokens[:, :-1], tokens[:, 1:]


@pytest.mark.parametrize("block_size", [128, 64])  # 64: the position table cropped to a shorter context
def test_padded_vocabulary_takes_no_mass(hf_dir: Path, block_size: int) -> None:
    """At 50,304 rows the run computes OpenAI's loss exactly: the 47 padded rows are masked. Without the
    mask (zero rows, logit 0 each) the same weights give a loss off by more than the tolerance."""
    model = GPT(tiny(hf_dir, block_size=block_size))
    load_pretrained(model)
    x, y = batch(1, block_size)
    expected = hf_loss(hf_model(hf_dir), x, y)
    with torch.no_grad():
        _, loss = model.eval()(x, y)
        logits, _ = model(x)
    assert abs(loss.item() - expected) < 1e-4, (loss.item(), expected)
    assert torch.all(logits[..., 50257:] == float("-inf"))
    assert torch.all(model.transformer.wte.weight[50257:] == 0)

    unmasked = GPT(dataclasses.replace(model.config, unpadded_vocab=0))
    unmasked.load_state_dict(model.state_dict())
    with torch.no_grad():
        _, loss = unmasked.eval()(x, y)
    assert abs(loss.item() - expected) > 1e-4  # what the mask is for


def test_unpadded_vocabulary_is_copied_exactly(hf_dir: Path) -> None:
    model = GPT(tiny(hf_dir, vocab_size=50257, unpadded_vocab=0))
    load_pretrained(model)
    hf = hf_model(hf_dir)
    assert torch.equal(model.transformer.wte.weight, hf.transformer.wte.weight)
    assert torch.equal(model.transformer.h[1].attn.c_attn.weight, hf.transformer.h[1].attn.c_attn.weight.t())
    x, y = batch(2)
    with torch.no_grad():
        _, loss = model.eval()(x, y)
    assert abs(loss.item() - hf_loss(hf, x, y)) < 1e-5


def test_shape_mismatches_name_the_field(hf_dir: Path, tmp_path: Path) -> None:
    where = f"model.init_from={hf_dir}"
    assert check(tiny(hf_dir)) == []
    assert check(tiny(hf_dir, n_layer=3)) == [f"n_layer: 3 does not match {where} (2)"]
    assert check(tiny(hf_dir, n_embd=128, n_head=4)) == [f"n_head: 4 does not match {where} (2)",
                                                         f"n_embd: 128 does not match {where} (64)"]
    assert check(tiny(hf_dir, block_size=256)) == [f"block_size: 256 is longer than {where}'s position table (128)"]
    (problem,) = check(tiny(hf_dir, unpadded_vocab=0))
    assert problem.startswith(f"unpadded_vocab: must be 50257 ({where} predicts 50,257 tokens; "
                              "model.vocab_size=50304 pads them"), problem
    assert check(tiny(hf_dir, vocab_size=50000, unpadded_vocab=0)) == [
        f"vocab_size: 50000 is smaller than {where}'s vocabulary (50,257)"]
    assert check(tiny(tmp_path / "nowhere")) == [f"init_from: {tmp_path / 'nowhere'}: no such directory"]
    assert check(tiny(tmp_path))[0].startswith(f"init_from: {tmp_path}: neither a HuggingFace GPT-2 directory")
    with pytest.raises(ValueError, match="model.n_layer: 3 does not match"):
        load_pretrained(GPT(tiny(hf_dir, n_layer=3)))


def test_the_finetune_experiment_fits_openai_gpt2(tmp_path: Path) -> None:
    """experiments/finetune_shakespeare.py against the config.json of OpenAI's GPT-2 124M (transformers'
    GPT2Config defaults): its shape and vocabulary pass the checks that read only that file."""
    transformers = pytest.importorskip("transformers")
    transformers.GPT2Config().to_json_file(tmp_path / "config.json")
    (exp,) = config.parse_cli([str(REPO / "experiments/finetune_shakespeare.py"), "--model.init_from", str(tmp_path)],
                              "test")
    assert check(exp.model) == []
    assert check(dataclasses.replace(exp.model, unpadded_vocab=0))[0].startswith("unpadded_vocab: must be 50257")


def test_init_from_fills_the_vocabulary_and_a_bad_one_stops_the_trainer(hf_dir: Path, shakespeare_dir: Path,
                                                                        tmp_path: Path) -> None:
    """A spec that pads to 50,304 and says nothing of the source's 50,257 rows gets model.unpadded_vocab filled
    in from the source (said in the start row and kept in config.json); a shape that does not match stops the
    trainer before anything is written, naming the field."""
    run = tmp_path / "run"
    harness("harness.train", *train_args(run, shakespeare_dir, "--model.init_from", str(hf_dir),
                                         "--schedule.warmup", "0", steps=1))
    (start,) = rows(run, "start")
    assert start["filled"] == {"model.unpadded_vocab": 50257}
    assert read_spec(RunDir(run)).model.unpadded_vocab == 50257
    bad = tmp_path / "bad"
    proc = harness("harness.train", *train_args(bad, shakespeare_dir, "--model.init_from", str(hf_dir),
                                                "--model.n_layer", "3", steps=4), check=False)
    assert proc.returncode != 0
    assert "model.n_layer: 3 does not match" in proc.stderr, proc.stderr[-2000:]
    assert not RunDir(bad).checkpoints.exists()


# ----------------------------------------------------------------------------- through the trainer


def finetune(run: Path, data: Path, source: Path, steps: int, *more: str) -> list[str]:
    return train_args(run, data, "--model.init_from", str(source), "--model.unpadded_vocab", "50257", *more,
                      steps=steps)


def first_batches(run: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The micro-batches of the run's first step, read as its trainer reads them."""
    spec = read_spec(RunDir(run))
    tc = spec.train
    reader = ShardedTokenReader(spec.data.dir, "train", batch_size=tc.micro_batch, seq_len=tc.seq_len,
                                shuffle=spec.data.shuffle, seed=spec.seed)
    return [reader.next_batch() for _ in range(tc.batch_tokens // (tc.micro_batch * tc.seq_len))]


@pytest.mark.slow
def test_first_step_loss_is_the_hf_models(hf_dir: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    """The first step's loss, logged by the trainer before any update, is the HuggingFace model's loss on
    the same batch: OpenAI's rows copied exactly, the padded ones taking no probability mass."""
    run = tmp_path / "run"
    harness("harness.train", *finetune(run, shakespeare_dir, hf_dir, 4))
    start = rows(run, "start")[0]
    assert start["step"] == 0 and start["init_from"] == str(hf_dir) and start["checkpoint"] is None
    hf = hf_model(hf_dir)
    expected = sum(hf_loss(hf, x, y) for x, y in first_batches(run)) / len(first_batches(run))
    assert abs(train_losses(run)[1] - expected) < 1e-4, (train_losses(run)[1], expected)


@pytest.mark.slow
def test_init_from_another_runs_checkpoint(trained_run: Path, shakespeare_dir: Path, tmp_path: Path) -> None:
    """Weights only: the new run starts at step 0 with a new optimizer, schedule and data position, and its
    first loss is the source model's on its first batch."""
    run = tmp_path / "run"
    harness("harness.train", *train_args(run, shakespeare_dir, "--model.init_from", str(trained_run), steps=4))
    start = rows(run, "start")[0]
    assert start["step"] == 0 and start["init_from"] == str(trained_run)
    source, info = load_model(trained_run)
    assert info["step"] == 40
    with torch.no_grad():
        losses = [source(x, y)[1].item() for x, y in first_batches(run)]
    assert abs(train_losses(run)[1] - sum(losses) / len(losses)) < 1e-5
    assert [r["lr"] for r in rows(run, "train")][0] < 2e-3  # the warmup again, not the source's schedule's end


@pytest.mark.slow
def test_a_stopped_finetune_resumes_the_finetune_bit_identically(hf_dir: Path, shakespeare_dir: Path,
                                                                  tmp_path: Path) -> None:
    """Stopped by SIGTERM after a few steps, then restarted with its source gone: the run's own checkpoint
    wins over init_from, and every later loss and the final weights equal an uninterrupted finetune's."""
    steps = 30
    straight = tmp_path / "straight"
    harness("harness.train", *finetune(straight, shakespeare_dir, hf_dir, steps))

    source = shutil.copytree(hf_dir, tmp_path / "source")
    run = tmp_path / "run"
    proc = launch("harness.train", *finetune(run, shakespeare_dir, source, steps), log=tmp_path / "run.log")
    wait_for_step(run, 3, proc)
    proc.send_signal(signal.SIGTERM)
    finish(proc, tmp_path / "run.log")
    stopped = rows(run, "stop")[-1]
    assert stopped["reason"] == "preempted" and stopped["step"] < steps, stopped
    shutil.rmtree(source)  # the restart must not need it

    harness("harness.train", str(run))
    start = rows(run, "start")[-1]
    assert start["checkpoint"].endswith(f"step_{stopped['step']:08d}") and start["init_from"] is None
    a, b = train_losses(straight), train_losses(run, restart=1)
    assert sorted(b) == list(range(stopped["step"] + 1, steps + 1))
    assert all(a[s] == b[s] for s in b), {s: (a[s], b[s]) for s in b if a[s] != b[s]}
    wa, wb = (torch.load(r / f"checkpoints/step_{steps:08d}/model.pt", weights_only=True) for r in (straight, run))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
