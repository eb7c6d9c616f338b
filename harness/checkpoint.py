"""Atomic checkpoints with everything an exact resume needs, and finding the newest valid one.

Layout: RUN_DIR/checkpoints/step_00001000/ holding
    model.pt      model weights (rank 0)
    optim.pt      optimizer state, consolidated when ZeRO-sharded (rank 0)
    rank_00003.pt each rank's RNG states and data reader position
    meta.json     written last: the spec, the trainer's shared state (step, wandb id, latest logged
                  values), the world size, and every file's size
A checkpoint is written into a hidden `.step_N.tmp` directory, every file fsync'd, and renamed into
place by rank 0 only after all ranks report success; a directory without a valid meta.json, or
whose files differ from it, is never loaded.
"""

import json
import math
import os
import random
import shutil
import sys
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch

from harness.atomic import publish, write_text
from harness.distributed import DistEnv, any_rank, barrier
from harness.run_dir import RunDir, checkpoint_step, list_checkpoints, step_dir

T = TypeVar("T")


@dataclass
class CheckpointConfig:
    """When checkpoints are written and how many are kept."""

    # Save every N steps (also at the end, when preempted, and when moving off a node; 0: only then), or
    # "auto": every sqrt(2 C M) seconds (Young), C the measured blocking cost of a save, M the run's mean
    # time between interruptions; recomputed at every start.
    every: int | Literal["auto"] = 1000
    every_min: float = 0.0  # also save when this many minutes of the run passed since the last save (0: off)
    mtbi_prior_h: float = 24.0  # "auto": mean time between interruptions assumed until the run has seen some
    cost_prior_s: float = 10.0  # "auto": a save's blocking cost (seconds) assumed until one was measured
    keep: int = 2  # keep the newest K; at least 2, since the newest may be unusable if a node dies mid-save
    permanent_every: int = 0  # also keep every checkpoint whose step is a multiple of N forever (0: none)
    async_save: bool = False  # copy state to CPU, write it in the background; training waits only for the copy

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        return [msg for bad, msg in [
            (self.every != "auto" and self.every < 0, f"every: must be >= 0 or 'auto', got {self.every}"),
            (self.every_min < 0, f"every_min: must be >= 0, got {self.every_min}"),
            (self.mtbi_prior_h <= 0, f"mtbi_prior_h: must be positive, got {self.mtbi_prior_h}"),
            (self.cost_prior_s <= 0, f"cost_prior_s: must be positive, got {self.cost_prior_s}"),
            (self.keep < 2, f"keep: must be >= 2 (the newest may be unusable), got {self.keep}"),
            (self.permanent_every < 0, f"permanent_every: must be >= 0, got {self.permanent_every}"),
        ] if bad]


class CheckpointError(RuntimeError):
    """A checkpoint that must not be used; the message names it and what is wrong."""


class CheckpointLayoutError(CheckpointError):
    """A sound checkpoint written by another number of ranks: the user decides, it is not skipped."""


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


class Checkpointer:
    """Saves checkpoints from all ranks together; optionally writes them in the background."""

    def __init__(self, root: Path, cfg: CheckpointConfig, env: DistEnv):
        self.root, self.cfg, self.env = root, cfg, env
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
        """A save by step count (the time-based ones are decided by `interval`)."""
        return self.cfg.every != "auto" and self.cfg.every > 0 and step % self.cfg.every == 0

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
                    permanent=bool(self.cfg.permanent_every and step % self.cfg.permanent_every == 0))
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


# ----------------------------------------------------------------------------- how often, by time


def young_interval(cost_s: float, mtbi_s: float) -> float:
    """The checkpoint interval that loses the least expected time when saving costs `cost_s` seconds
    and interruptions come `mtbi_s` seconds apart on average: sqrt(2 C M) (Young 1974; Daly 2006
    refines it by -C, which matters only when C is not small against M)."""
    return math.sqrt(2 * cost_s * mtbi_s)


def plan(cfg: CheckpointConfig, rows: list[dict], jobs: list[dict]) -> dict | None:
    """The time-based save interval for this start, with its inputs (logged in the start row), or
    None when saves go by step count alone. For "auto": C is the median blocking time of the run's
    saves so far (the prior before any); M is the run's allocated time over its interruptions, with
    the prior counted as one more interruption's worth of time (so that a run that has seen none
    keeps the prior, and one that has seen many follows them)."""
    from harness.ledger import starts

    out: dict = {}
    if cfg.every == "auto":
        costs = sorted(r["seconds"] for r in rows if r["kind"] == "checkpoint" and r.get("seconds") is not None)
        cost = costs[len(costs) // 2] if costs else cfg.cost_prior_s
        observed = sum(s.wall for s in starts(rows, jobs))
        ended = {r["restart"]: r["reason"] for r in rows if r["kind"] == "stop"}  # each start's last stop
        interruptions = sum(ended.get(r["restart"]) != "finished" for r in rows if r["kind"] == "start")
        mtbi = (observed + cfg.mtbi_prior_h * 3600) / (interruptions + 1)
        out = {"every": "auto", "cost_s": round(cost, 3), "cost_measured": bool(costs), "mtbi_s": round(mtbi),
               "interruptions": interruptions, "observed_s": round(observed), "interval_s": young_interval(cost, mtbi)}
    if cfg.every_min:
        out["interval_s"] = min(out.get("interval_s", math.inf), cfg.every_min * 60)
        out["every_min"] = cfg.every_min
    return out or None


# ----------------------------------------------------------------------------- loading

def read_meta(path: Path) -> dict:
    """The checkpoint's meta.json, after checking that every file it lists is there in full."""
    try:
        meta = json.loads((path / "meta.json").read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no meta.json (incomplete checkpoint)") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}/meta.json: unreadable ({e})") from None
    if meta.get("step") != checkpoint_step(path):
        raise CheckpointError(f"{path}: meta.json is for step {meta.get('step')}")
    for name, size in meta.get("files", {}).items():
        f = path / name
        if not f.exists():
            raise CheckpointError(f"{f}: missing")
        if f.stat().st_size != size:
            raise CheckpointError(f"{f}: {f.stat().st_size} bytes, meta.json says {size} (truncated or replaced)")
    for name in ("model.pt", "optim.pt"):
        if name not in meta.get("files", {}):
            raise CheckpointError(f"{path}: meta.json lists no {name}")
    return meta


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


def load_file(path: Path) -> object:
    """torch.load, after checking the CRC32 that torch.save stores for every record of its zip archive:
    torch.load does not check them, and returns a tensor with corrupted bytes as if it were sound."""
    try:
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip()
    except (OSError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None
    if bad is not None:
        raise CheckpointError(f"{path}: record {bad} fails its CRC32 check (corrupted)")
    try:
        # weights_only: a checkpoint is data, and must not be able to run code when loaded.
        return torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, OSError, EOFError, ValueError) as e:
        raise CheckpointError(f"{path}: unreadable ({e})") from None


def newest_that_loads(root: Path, load_one: Callable[[Path], T]) -> tuple[Path, T] | None:
    """`load_one` of the newest checkpoint under `root` for which it succeeds; corrupt or incomplete
    newer ones are skipped with a warning. A layout error is the user's decision, not skipped."""
    for path in reversed(list_checkpoints(root)):
        try:
            return path, load_one(path)
        except CheckpointLayoutError:
            raise
        except CheckpointError as e:
            print(f"WARNING: skipping checkpoint {path}: {e}", file=sys.stderr, flush=True)
    return None


def load_latest(root: Path, rank: int, world_size: int, reshard: bool = False) -> tuple[Path, dict] | None:
    """What a rank needs to resume from the newest checkpoint that loads."""
    return newest_that_loads(root, lambda path: load(path, rank, world_size, reshard))


def is_huggingface_dir(path: Path) -> bool:
    """A HuggingFace model directory: its config.json has a model_type (a harness run's has not)."""
    config = path / "config.json"  # HuggingFace's file name
    return config.exists() and "model_type" in json.loads(config.read_text())


def load_model(path: str | Path, device: str | torch.device = "cpu") -> tuple["torch.nn.Module", dict]:
    """A model to evaluate or sample from: a run directory (its newest checkpoint that loads), a
    checkpoint directory, or a HuggingFace GPT-2 directory. Returns the model and where it came from."""
    from harness.model import GPT, ModelConfig, load_hf_gpt2

    path = Path(path)
    if is_huggingface_dir(path):
        model = load_hf_gpt2(path)
        return model.to(device).eval(), {"source": "huggingface", "path": str(path), "step": None}

    def weights(ckpt: Path) -> tuple[dict, dict]:
        return read_meta(ckpt), load_file(ckpt / "model.pt")  # the optimizer state is not needed

    root = RunDir(path).checkpoints
    found = (path, weights(path)) if (path / "meta.json").exists() else newest_that_loads(root, weights)
    if found is None:
        raise CheckpointError(f"{path}: no valid checkpoint under {root} (nor a HuggingFace GPT-2 dir)")
    ckpt, (meta, state) = found
    model = GPT(ModelConfig(**meta["spec"]["model"]))
    model.load_state_dict(state)
    info = {"source": "checkpoint", "path": str(ckpt), "step": meta["step"], "name": meta["spec"]["name"]}
    return model.to(device).eval(), info
