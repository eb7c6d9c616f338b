"""harness.train.checkpoint and harness.model.io in one process: layout, pruning, never loading a half-written
corrupt checkpoint, background saves, RNG streams, load_model's three kinds of source, and a full disk."""

import collections
import random
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import spec as config
from harness.distributed import DistEnv
from harness.model.gpt import GPT
from harness.model.io import load_hf_gpt2, load_model
from harness.model.sources import CheckpointError, CheckpointLayoutError
from harness.run_dir import RunDir, list_checkpoints, step_dir
from harness.spec import CheckpointConfig, Experiment, ModelConfig, init_run_dir
from harness.train.checkpoint import Checkpointer, load, load_latest, rng_state, set_rng_state

CPU = torch.device("cpu")
ENV = DistEnv(0, 0, 1, CPU, None)
TINY = ModelConfig(preset=None, n_layer=2, n_head=2, n_embd=32, block_size=32, vocab_size=128)
FILES = {"model.pt", "optim.pt", "rank_00000.pt"}


class Run:
    """A tiny model and its AdamW, one update in (so the optimizer has state), saved like the trainer does."""

    def __init__(self, cfg: ModelConfig = TINY, seed: int = 0):
        torch.manual_seed(seed)
        self.spec = Experiment(name="tiny", model=cfg)
        self.model = GPT(cfg)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-3)
        self.update()

    def update(self) -> None:
        idx = torch.randint(0, self.model.config.vocab_size, (2, 16))
        self.model(idx, idx)[1].backward()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)

    def rank_state(self, step: int) -> dict:
        return {"rng": rng_state(CPU), "train_reader": {"position": 1000 * step}}

    def save(self, ckpt: Checkpointer, step: int, rank_state: dict | None = None) -> None:
        ckpt.save(step, self.model.state_dict(), self.opt.state_dict(), rank_state or self.rank_state(step),
                  {"spec": config.to_dict(self.spec), "wandb_id": "abc"})

    def snapshot(self) -> dict:
        return {"model": clone(self.model.state_dict()), "optim": clone(self.opt.state_dict())}


def clone(obj: object) -> object:
    if isinstance(obj, torch.Tensor):
        return obj.clone()
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return type(obj)(clone(v) for v in obj)
    return obj


def assert_same(a: object, b: object, where: str = "") -> None:
    """Equal nested dicts/lists of tensors, bit for bit."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def checkpointer(root: Path, env: DistEnv = ENV, **cfg: object) -> Checkpointer:
    return Checkpointer(root, CheckpointConfig(**cfg), env)


def steps(root: Path) -> list[int]:
    return [int(p.name.removeprefix("step_")) for p in list_checkpoints(root)]


def latest_step(root: Path, world_size: int = 1, **kwargs: object) -> int:
    found = load_latest(root, 0, world_size, **kwargs)
    assert found is not None
    return found[1]["meta"]["step"]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return RunDir(tmp_path / "run").checkpoints


# ----------------------------------------------------------------------------- save, load, prune


def test_save_then_load_latest(root: Path) -> None:
    run = Run()
    ckpt = checkpointer(root, every=10)
    assert ckpt.due(10) and ckpt.due(20) and not ckpt.due(15)
    assert not checkpointer(root, every=0).due(10)

    expected = run.snapshot()
    run.save(ckpt, 10)
    assert sorted(p.name for p in root.iterdir()) == ["step_00000010"]  # nothing temporary left
    path, state = load_latest(root, 0, 1)
    assert path == step_dir(root, 10) == root / "step_00000010"
    assert_same(expected["model"], state["model"], "model")
    assert_same(expected["optim"], state["optim"], "optim")
    assert state["rank"]["train_reader"] == {"position": 10_000}

    meta = state["meta"]
    assert (meta["step"], meta["world_size"], meta["wandb_id"], meta["permanent"]) == (10, 1, "abc", False)
    assert meta["spec"]["model"]["n_embd"] == 32
    assert set(meta["files"]) == FILES
    assert {p.name for p in path.iterdir()} == FILES | {"meta.json"}
    for name, size in meta["files"].items():
        assert (path / name).stat().st_size == size > 0


def test_restored_state_continues_identically(root: Path) -> None:
    run = Run()
    run.save(checkpointer(root), 1)
    torch.manual_seed(5)
    run.update()  # the original's next update

    resumed = Run(seed=1)  # other weights and Adam moments until restored
    _, state = load_latest(root, 0, 1)
    resumed.model.load_state_dict(state["model"])
    resumed.opt.load_state_dict(state["optim"])
    torch.manual_seed(5)
    resumed.update()  # on the same batch
    assert_same(run.model.state_dict(), resumed.model.state_dict(), "model")
    assert_same(run.opt.state_dict(), resumed.opt.state_dict(), "optim")


def test_keeps_the_newest_and_the_permanent(root: Path) -> None:
    run = Run()
    ckpt = checkpointer(root, keep=2, permanent_every=20)
    for step in (10, 20, 30, 40, 50):
        run.save(ckpt, step)
    assert steps(root) == [20, 40, 50]
    assert load(step_dir(root, 20), 0, 1)["meta"]["permanent"] is True
    assert load(step_dir(root, 50), 0, 1)["meta"]["permanent"] is False

    other = root.parent.parent / "other"
    ckpt = checkpointer(other, keep=3)
    for step in (10, 20, 30, 40, 50):
        run.save(ckpt, step)
    assert steps(other) == [30, 40, 50]

    never_one = root.parent.parent / "never_one"
    ckpt = checkpointer(never_one, keep=1)  # refused by validation; still never fewer than 2
    for step in (10, 20, 30):
        run.save(ckpt, step)
    assert steps(never_one) == [20, 30]


def test_saving_a_step_again_replaces_it(root: Path) -> None:
    run = Run()
    ckpt = checkpointer(root)
    run.save(ckpt, 10)
    run.update()
    expected = run.snapshot()
    run.save(ckpt, 10)  # e.g. preempted right after a periodic save
    assert steps(root) == [10]
    assert_same(expected["model"], load_latest(root, 0, 1)[1]["model"])


# ----------------------------------------------------------------------------- never a half-written checkpoint


@pytest.fixture
def saved(root: Path) -> Run:
    """Checkpoints at steps 10, 20 and 30 (kept: keep=3), each of different weights."""
    run = Run()
    ckpt = checkpointer(root, keep=3)
    run.save(ckpt, 10)
    run.update()
    run.save(ckpt, 20)
    run.update()
    run.save(ckpt, 30)
    return run


def test_a_killed_save_is_ignored_and_cleaned_up(root: Path, saved: Run) -> None:
    shutil.rmtree(step_dir(root, 30))
    tmp = root / ".step_00000030.tmp"
    tmp.mkdir()
    shutil.copy(step_dir(root, 20) / "rank_00000.pt", tmp / "rank_00000.pt")
    (tmp / "model.pt").write_bytes((step_dir(root, 20) / "model.pt").read_bytes()[:1000])
    assert steps(root) == [10, 20]
    assert latest_step(root) == 20
    checkpointer(root)  # the next start
    assert not tmp.exists()
    assert steps(root) == [10, 20]


def test_a_checkpoint_without_meta_is_skipped(root: Path, saved: Run, capsys: pytest.CaptureFixture) -> None:
    (step_dir(root, 30) / "meta.json").unlink()
    assert latest_step(root) == 20
    err = capsys.readouterr().err
    assert "WARNING: skipping checkpoint" in err and "step_00000030" in err and "no meta.json" in err


def test_a_truncated_file_is_skipped(root: Path, saved: Run, capsys: pytest.CaptureFixture) -> None:
    model_pt = step_dir(root, 30) / "model.pt"
    with open(model_pt, "r+b") as f:
        f.truncate(model_pt.stat().st_size // 2)
    path, state = load_latest(root, 0, 1)
    assert path == step_dir(root, 20)
    err = capsys.readouterr().err
    half = model_pt.stat().st_size
    assert f"skipping checkpoint {step_dir(root, 30)}: {model_pt}: {half} bytes, meta.json says" in err, err


@pytest.mark.parametrize("name", ["model.pt", "optim.pt", "rank_00000.pt"])
def test_corrupt_bytes_of_the_right_size_are_skipped(root: Path, saved: Run, name: str,
                                                     capsys: pytest.CaptureFixture) -> None:
    path = step_dir(root, 30) / name
    size = path.stat().st_size
    with open(path, "r+b") as f:
        f.seek(size // 2)
        f.write(bytes(256))  # e.g. a bad block: same size, different bytes
    assert path.stat().st_size == size
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load(step_dir(root, 30), 0, 1)
    assert latest_step(root) == 20
    assert f"skipping checkpoint {step_dir(root, 30)}" in capsys.readouterr().err


def test_a_checkpoint_of_another_world_size_is_not_skipped(root: Path) -> None:
    run = Run()
    run.save(checkpointer(root), 10)  # an older checkpoint of 1 rank: must not be fallen back to
    run.update()
    expected = run.snapshot()
    # Two ranks save step 20 together: rank 0 writes in the background while rank 1 writes its part.
    rank0 = checkpointer(root, DistEnv(0, 0, 2, CPU, None), async_save=True)
    rank1 = checkpointer(root, DistEnv(1, 1, 2, CPU, None))
    run.save(rank0, 20, {"train_reader": {"position": 0}})
    run.save(rank1, 20, {"train_reader": {"position": 1}})
    rank0.finish()
    assert set(load(step_dir(root, 20), 0, 2)["meta"]["files"]) == FILES | {"rank_00001.pt"}

    with pytest.raises(CheckpointLayoutError, match="written by 2 ranks, this run has 1"):
        load_latest(root, 0, 1)
    path, state = load_latest(root, 0, 1, reshard=True)
    assert path == step_dir(root, 20) and state["rank"]["train_reader"] == {"position": 0}
    assert_same(expected["model"], state["model"])
    assert load_latest(root, 1, 2)[1]["rank"]["train_reader"] == {"position": 1}


# ----------------------------------------------------------------------------- background saves


class Gate:
    """Rank state that holds the background writer in the middle of pickling it until released;
    it is saved as an empty OrderedDict, so the checkpoint still loads with weights_only=True."""

    def __init__(self):
        self.entered, self.release = threading.Event(), threading.Event()

    def __reduce__(self) -> tuple:
        self.entered.set()
        self.release.wait(timeout=10)  # a synchronous save gets here too: fail, do not hang
        return collections.OrderedDict, ()


def test_async_save_returns_before_the_write(root: Path) -> None:
    run = Run()
    ckpt = checkpointer(root, async_save=True)
    expected = run.snapshot()
    gate = Gate()
    run.save(ckpt, 10, {"gate": gate, "train_reader": {"position": 7}})
    try:
        assert gate.entered.wait(timeout=10)
        assert ckpt.pending() and ckpt.writing()
        assert not step_dir(root, 10).exists() and (root / ".step_00000010.tmp").is_dir()
        assert load_latest(root, 0, 1) is None
        run.update()  # training goes on and changes the weights and moments in place
        with torch.no_grad():
            for p in run.model.parameters():
                p.add_(1.0)
    finally:
        gate.release.set()
    assert ckpt.finish() == step_dir(root, 10)
    assert not ckpt.pending() and not (root / ".step_00000010.tmp").exists()
    _, state = load_latest(root, 0, 1)
    assert_same(expected["model"], state["model"], "model")  # the state as it was at save()
    assert_same(expected["optim"], state["optim"], "optim")
    assert state["rank"] == {"gate": {}, "train_reader": {"position": 7}}


def test_async_save_writes_what_a_synchronous_save_writes(tmp_path: Path) -> None:
    run = Run()
    rank_state = run.rank_state(10)
    sync, background = checkpointer(tmp_path / "sync"), checkpointer(tmp_path / "async", async_save=True)
    run.save(sync, 10, rank_state)
    run.save(background, 10, rank_state)
    background.finish()
    a, b = load(step_dir(tmp_path / "sync", 10), 0, 1), load(step_dir(tmp_path / "async", 10), 0, 1)
    assert a["meta"]["files"] == b["meta"]["files"]
    for key in ("model", "optim", "rank"):
        assert_same(a[key], b[key], key)
    for name in FILES:
        assert (step_dir(tmp_path / "sync", 10) / name).read_bytes() == \
            (step_dir(tmp_path / "async", 10) / name).read_bytes(), name


def test_the_next_save_waits_for_the_one_in_flight(root: Path) -> None:
    run = Run()
    ckpt = checkpointer(root, async_save=True)
    run.save(ckpt, 10)
    run.save(ckpt, 20)  # finishes 10 first
    assert steps(root) == [10]
    ckpt.finish()
    assert steps(root) == [10, 20]
    assert ckpt.finish() is None  # nothing left in flight


# ----------------------------------------------------------------------------- RNG streams


def draw() -> list:
    return [random.random(), random.gauss(0, 1), np.random.rand(3).tolist(), np.random.randn(),
            torch.rand(3).tolist(), torch.randn(2).tolist(), torch.randint(0, 1000, (4,)).tolist()]


def test_rng_state_round_trip(tmp_path: Path) -> None:
    random.seed(3)
    np.random.seed(3)
    torch.manual_seed(3)
    np.random.randn()  # leave cached Gaussians behind: they are part of the state
    random.gauss(0, 1)
    torch.save(rng_state(CPU), tmp_path / "rng.pt")
    first = draw()
    draw()
    set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), CPU)  # as a checkpoint loads it
    assert draw() == first


# ----------------------------------------------------------------------------- load_model


def logits(model: torch.nn.Module, vocab: int) -> torch.Tensor:
    idx = torch.randint(0, vocab, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model(idx)[0]


def test_load_model_from_run_and_checkpoint_dirs(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    run = Run()
    exp = config.resolve(Experiment(name="tiny", run_dir=str(run_dir), model=TINY))
    init_run_dir(RunDir(exp.run_dir), exp)
    ckpt = checkpointer(RunDir(run_dir).checkpoints)
    at_10 = run.snapshot()["model"]
    run.save(ckpt, 10)
    run.update()
    at_20 = run.snapshot()["model"]
    run.save(ckpt, 20)

    model, info = load_model(run_dir)  # the newest checkpoint, though the run dir has a config.json
    assert info == {"source": "checkpoint", "path": str(step_dir(RunDir(run_dir).checkpoints, 20)), "step": 20,
                    "name": "tiny"}
    assert_same(at_20, model.state_dict())
    assert not model.training

    model, info = load_model(step_dir(RunDir(run_dir).checkpoints, 10))
    assert info["step"] == 10
    assert_same(at_10, model.state_dict())

    model_file = step_dir(RunDir(run_dir).checkpoints, 20) / "model.pt"
    data = bytearray(model_file.read_bytes())
    data[len(data) // 2 : len(data) // 2 + 4096] = bytes(4096)  # right size, corrupt bytes
    model_file.write_bytes(bytes(data))
    assert load_model(run_dir)[1]["step"] == 10  # falls back past the corrupt newest
    with pytest.raises(CheckpointError, match="CRC32"):
        load_model(step_dir(RunDir(run_dir).checkpoints, 20))  # named directly: its own error
    (step_dir(RunDir(run_dir).checkpoints, 20) / "meta.json").unlink()  # the newest is incomplete
    assert load_model(run_dir)[1]["step"] == 10
    shutil.rmtree(step_dir(RunDir(run_dir).checkpoints, 10))
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        load_model(run_dir)
    shutil.rmtree(RunDir(run_dir).checkpoints)  # a run that has not saved yet is not mistaken for a HF dir
    with pytest.raises(CheckpointError, match="no valid checkpoint"):
        load_model(run_dir)


def test_load_model_from_a_huggingface_dir(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(transformers.GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=32,
                                                              vocab_size=300)).eval()
    hf.save_pretrained(tmp_path / "hf")
    model, info = load_model(tmp_path / "hf")
    assert info == {"source": "huggingface", "path": str(tmp_path / "hf"), "step": None}
    assert model.config.vocab_size == 300 and not model.training
    torch.testing.assert_close(logits(model, 300), logits(load_hf_gpt2(tmp_path / "hf"), 300), rtol=0, atol=0)
    idx = torch.randint(0, 300, (1, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(logits(model, 300), hf(idx).logits, rtol=0, atol=1e-4)


# ----------------------------------------------------------------------------- a full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 1 MiB tmpfs, unmounted afterwards; skipped where mounting is not allowed."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a 1 MiB tmpfs here (needs root): {proc.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_a_full_disk_fails_the_save_and_keeps_the_previous(small_disk: Path) -> None:
    root = RunDir(small_disk).checkpoints
    small = Run()  # ~26K parameters: weights and Adam moments ~0.3 MB
    ckpt = checkpointer(root)
    expected = small.snapshot()
    small.save(ckpt, 10)

    big = Run(ModelConfig(preset=None, n_layer=1, n_head=2, n_embd=64, block_size=32, vocab_size=4096))
    assert sum(p.numel() for p in big.model.parameters()) * 4 > 2**20  # its weights alone do not fit
    # torch.save reports ENOSPC only as "unexpected pos N vs M"; the CheckpointError says what failed.
    with pytest.raises(CheckpointError, match=r"saving checkpoint step 20 .* failed.*older checkpoints .* untouched"):
        big.save(ckpt, 20)
    assert not ckpt.pending()
    assert sorted(p.name for p in root.iterdir()) == ["step_00000010"]  # the partial save is gone
    path, state = load_latest(root, 0, 1)
    assert path == step_dir(root, 10)
    assert_same(expected["model"], state["model"])
    assert_same(expected["optim"], state["optim"])
