"""Atomic checkpoints with everything an exact resume needs (TrainState), and loading the newest valid one
to resume from. Reading a checkpoint's files (CRC-checked) and its meta.json is harness.model's.

Layout: RUN_DIR/checkpoints/step_00001000/ holding
    model.pt      model weights (rank 0)
    optim.pt      optimizer state, consolidated when ZeRO-sharded (rank 0)
    rank_00003.pt each rank's RNG states and data reader position
    meta.json     written last: the spec, the step, the loop's components' states, the world size,
                  and every file's size
A checkpoint is written into a hidden `.step_N.tmp` directory, every file fsync'd, and renamed into
place by rank 0 only after all ranks report success; a directory without a valid meta.json, or
whose files differ from it, is never loaded.
"""

import json
import os
import random
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from harness.atomic import publish, write_text
from harness.distributed import DistEnv, any_rank, barrier
from harness.model.io import load_file
from harness.model.sources import CheckpointError, CheckpointLayoutError, newest_that_loads, read_meta
from harness.run_dir import list_checkpoints, step_dir
from harness.spec import CheckpointConfig, Experiment, SpecError, breaking_changes, describe, diff, from_dict


def _save_file(obj: object, path: Path) -> int:
    with open(path, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    return path.stat().st_size


def rank_file(rank: int) -> str:
    return f"rank_{rank:05d}.pt"


def rng_state(device: torch.device) -> dict:
    """Every random stream; numpy's key goes in a tensor so the file loads with weights_only=True."""
    kind, key, pos, has_gauss, gauss = np.random.get_state()
    state = {"python": random.getstate(), "numpy": (kind, torch.from_numpy(key.astype(np.int64)), pos, has_gauss,
                                                      gauss), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    random.setstate(state["python"])
    kind, key, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, key.numpy().astype(np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


@dataclass
class TrainState:
    """What a checkpoint resumes (lingua's TrainState), beyond the model and optimizer; everything else is
    rebuilt from the spec. The step and the components' states are the same on every rank; the reader
    position and the random streams are each rank's own."""

    step: int = 0
    components: dict[str, dict] = field(default_factory=dict)  # each component's state_dict, by class name
    reader: dict | None = None  # this rank's train reader position (ShardedTokenReader.state_dict)
    rng: dict | None = None  # this rank's random streams (python, numpy, torch, CUDA)

    def shared(self, components: list) -> dict:
        return {"step": self.step, "components": {type(c).__name__: c.state_dict() for c in components}}

    def own(self) -> dict:
        return {"train_reader": self.reader, "rng": self.rng}

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> "TrainState":
        meta, own = ckpt["meta"], ckpt["rank"]
        return cls(meta["step"], meta.get("components", {}), own["train_reader"], own["rng"])


class Checkpointer:
    """Saves checkpoints from all ranks together; optionally writes them in the background."""

    def __init__(self, root: Path, cfg: CheckpointConfig, env: DistEnv):
        self.root, self.cfg, self.env = root, cfg, env
        self.background = cfg.async_save
        self._pending: tuple[int, dict, threading.Thread, list] | None = None  # (step, meta, writer, errors)
        self._staging: dict[str, torch.Tensor] = {}  # CPU copies for background saves, reused every save
        if env.is_main:
            root.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".step_*.tmp"):  # left by a save that was killed
                shutil.rmtree(stale, ignore_errors=True)
        barrier(env)

    def path(self, step: int) -> Path:
        return step_dir(self.root, step)

    def due(self, step: int) -> bool:
        """A save by step count (the time-based ones are decided by `interval`), or at a step to keep."""
        return (self.cfg.every != "auto" and self.cfg.every > 0 and step % self.cfg.every == 0) or self.kept(step)

    def kept(self, step: int) -> bool:
        """Whether the checkpoint of `step` is kept for good: every permanent_every-th, and the keep_steps
        (where branches start: keep-last-K must never remove one before its branch has started)."""
        return bool(self.cfg.permanent_every and step % self.cfg.permanent_every == 0) or step in self.cfg.keep_steps

    def save(self, step: int, model_state: dict | None, optim_state: dict | None, rank_state: dict,
             meta: dict) -> None:
        """Collective: every rank calls it. model/optim state are only needed on rank 0."""
        self.finish()  # at most one save in flight
        tmp = self.root / f".step_{step:08d}.tmp"
        if self.env.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir(parents=True)
        barrier(self.env)
        files = {rank_file(self.env.rank): rank_state}
        if self.env.is_main:
            files |= {"model.pt": model_state, "optim.pt": optim_state}
        meta = dict(meta, step=step, world_size=self.env.world_size, time=time.time(),
                    permanent=self.kept(step))
        errors: list[BaseException] = []
        if self.cfg.async_save:
            # Training continues once the state is on the CPU; the write finishes in the background.
            files = {name: _stage(obj, self._staging, {}, name) for name, obj in files.items()}
            if torch.cuda.is_available():
                torch.cuda.synchronize()  # the non-blocking device-to-host copies must land first
            writer = threading.Thread(target=self._write, args=(tmp, files, errors), daemon=True)
            writer.start()
            self._pending = (step, meta, writer, errors)
        else:
            self._write(tmp, files, errors)
            self._pending = (step, meta, None, errors)
            self.finish()

    def _write(self, tmp: Path, files: dict, errors: list) -> None:
        try:
            for name, obj in files.items():
                _save_file(obj, tmp / name)
        except BaseException as e:  # noqa: BLE001 - reported to every rank by finish()
            errors.append(e)

    def pending(self) -> bool:
        return self._pending is not None

    def writing(self) -> bool:
        """Whether this rank's background write is still running."""
        return self._pending is not None and self._pending[2] is not None and self._pending[2].is_alive()

    def finish(self) -> Path | None:
        """Collective: wait for the save in flight, then make it visible if every rank wrote its part."""
        if self._pending is None:
            return None
        step, meta, writer, errors = self._pending
        self._pending = None
        if writer is not None:
            writer.join()
        tmp = self.root / f".step_{step:08d}.tmp"
        if any_rank(bool(errors), self.env):  # all ranks agree, so none waits for a failed one
            if self.env.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            mine = f": {errors[0]!r}" if errors else " on another rank"
            free = shutil.disk_usage(self.root).free / 1e9  # torch.save reports a full disk only obliquely
            raise CheckpointError(f"saving checkpoint step {step} to {tmp} failed{mine} ({free:.2f} GB free on "
                                  f"that filesystem); older checkpoints in {self.root} are untouched")
        final = step_dir(self.root, step)
        if self.env.is_main:
            meta["files"] = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
            write_text(tmp / "meta.json", json.dumps(meta, indent=1, default=str))  # last: it vouches for the rest
            if final.exists():  # the same step saved again (e.g. preempted right after a periodic save)
                shutil.rmtree(final)
            publish(tmp, final)
            self._prune()
        barrier(self.env)
        return final

    def _prune(self) -> None:
        found = list_checkpoints(self.root)
        keep = max(2, self.cfg.keep)
        for path in found[:-keep]:
            try:
                if json.loads((path / "meta.json").read_text()).get("permanent"):
                    continue
            except (OSError, ValueError):
                pass  # unreadable: not a permanent one we must keep
            shutil.rmtree(path, ignore_errors=True)


def _stage(obj: object, buffers: dict, copies: dict, path: str = "") -> object:
    """A CPU snapshot of `obj` for a background write, copied into `buffers` kept from the last save:
    reusing them avoids allocating (and page-faulting) a fresh copy of the whole state every time,
    which is most of the time training waits. Buffers are pinned when the source is on a GPU, so
    the copies overlap."""
    if isinstance(obj, torch.Tensor):
        # Entries that view the same memory (the tied embedding) share one copy of it, so the file
        # stores it once, as torch.save does for the live tensors.
        key = (obj.device, obj.data_ptr(), obj.dtype, obj.shape, obj.stride())
        if key not in copies:
            buf = buffers.get(path)
            if buf is None or buf.shape != obj.shape or buf.dtype != obj.dtype:
                buf = buffers[path] = torch.empty(obj.shape, dtype=obj.dtype, pin_memory=obj.is_cuda)
            buf.copy_(obj.detach(), non_blocking=obj.is_cuda)
            copies[key] = buf
        return copies[key].detach()  # a tensor object of its own over the shared copy
    if isinstance(obj, dict):
        out = type(obj)((k, _stage(v, buffers, copies, f"{path}/{k}")) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's module versions, which load_state_dict reads
            out._metadata = obj._metadata
        return out
    if isinstance(obj, list | tuple):
        return type(obj)(_stage(v, buffers, copies, f"{path}/{i}") for i, v in enumerate(obj))
    return obj


# ----------------------------------------------------------------------------- loading

def load(path: Path, rank: int, world_size: int, reshard: bool = False) -> dict:
    """Everything a rank needs to resume from `path`; raises CheckpointError naming what is wrong."""
    meta = read_meta(path)
    if meta["world_size"] != world_size and not reshard:
        raise CheckpointLayoutError(f"{path}: written by {meta['world_size']} ranks, this run has {world_size} "
                              "(set data.reshard=True to continue with the new world size)")
    mine = path / rank_file(rank if meta["world_size"] == world_size else 0)
    if not mine.exists():
        raise CheckpointError(f"{mine}: missing rank state")
    return {"meta": meta, "model": load_file(path / "model.pt"), "optim": load_file(path / "optim.pt"),
            "rank": load_file(mine)}


def load_latest(root: Path, rank: int, world_size: int, reshard: bool = False) -> tuple[Path, dict] | None:
    """What a rank needs to resume from the newest checkpoint that loads."""
    return newest_that_loads(root, lambda path: load(path, rank, world_size, reshard))





def starting_point(exp: Experiment, root: Path, rank: int, world_size: int
                   ) -> tuple[Path, dict, dict, dict | None] | None:
    """What a start restores: the newest checkpoint under `root` (the run's own) that loads, else, at a branch's
    first start, the checkpoint of another run it branches from (spec branch_from). Returns its path, what the
    rank needs of it, how the spec differs from the checkpoint's ({"optim.lr": (old, new)}), and for a branch its
    lineage (the run, step and checkpoint it starts from, and those differences); None: a fresh start. Raises
    SpecError when the differences make the checkpoint meaningless for this spec."""
    found = load_latest(root, rank, world_size, exp.data.reshard)
    branch = found is None and bool(exp.branch_from)
    if branch:
        found = load_branch_point(Path(exp.branch_from), rank, world_size, exp.data.reshard)
    if found is None:
        return None
    path, ckpt = found
    # What changed since this checkpoint was written: harness.submit may already have rewritten the run's spec
    # file, so only the checkpoint's copy can tell.
    changes = diff(from_dict(ckpt["meta"]["spec"], str(path)), exp)
    lineage = None
    if branch:  # the source is another run: its differences are the branch's lineage
        changes.pop("branch_from", None)
        lineage = {"run": str(path.parent.parent), "step": ckpt["meta"]["step"], "checkpoint": str(path),
                   "changes": describe(changes) or None}
    if breaking := breaking_changes(changes):
        what = f"branch_from: {path}" if branch else str(path)
        fix = "a branch continues its source exactly, so they must agree" if branch else \
            "use another run_dir to start a new run"
        raise SpecError(f"{what} was written by a different spec: {describe(breaking)}; {fix}")
    return path, ckpt, changes, lineage


def load_branch_point(path: Path, rank: int, world_size: int, reshard: bool = False) -> tuple[Path, dict]:
    """What a rank needs to start a branch from `path`, a checkpoint of another run (spec field branch_from);
    raises SpecError naming the field when it cannot be used (a layout error stays the user's decision)."""
    try:
        return path, load(path, rank, world_size, reshard)
    except CheckpointLayoutError:
        raise
    except (CheckpointError, OSError) as e:
        raise SpecError(f"branch_from: {e}") from None
