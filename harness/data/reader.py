"""The sharded token reader ("dataloader-lite") that feeds the trainer from prepared shards.

The data is one endless token stream: epoch after epoch of the split's shards, the shard order of
each epoch a permutation drawn from (seed, epoch). A global step takes the next W*B*T tokens of the
stream; rank r reads its own B*T of them (plus one token for the shifted targets). Batches run across
shard and epoch boundaries, so within an epoch no token is dropped or repeated, and the whole reader
state is one integer: the stream position.
"""

from pathlib import Path

import numpy as np
import torch

from harness.data.manifest import DataError, load_manifest
from harness.data.shards import open_shard, shard_num_tokens


class ShardedTokenReader:
    """Yields (x, y) int64 batches of shape (B, T) for one data-parallel rank; exactly resumable."""

    def __init__(self, data_dir: str | Path, split: str, batch_size: int, seq_len: int, rank: int = 0,
                 world_size: int = 1, shuffle: bool = False, seed: int = 0, device: str | torch.device = "cpu"):
        self.dir = Path(data_dir)
        manifest = load_manifest(self.dir)
        if split not in manifest["splits"] or not manifest["splits"][split]["shards"]:
            raise DataError(f"{self.dir / 'manifest.json'}: no {split!r} shards")
        self.split, self.B, self.T = split, batch_size, seq_len
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.seed = shuffle, seed
        self.device = torch.device(device)
        self.fingerprint = manifest["fingerprint"]
        self.vocab_size = manifest["tokenizer"]["vocab_size"]
        self.files = [self.dir / e["file"] for e in manifest["splits"][split]["shards"]]
        self.sizes = np.array([e["tokens"] for e in manifest["splits"][split]["shards"]], dtype=np.int64)
        for f, n in zip(self.files, self.sizes, strict=True):  # cheap: header and file size only
            found = shard_num_tokens(f)
            if found != n:
                raise DataError(f"{f}: holds {found} tokens but {self.dir / 'manifest.json'} says {n}")
            if found == 0:  # read() would skip it silently, never opening (and rejecting) it
                raise DataError(f"{f}: shard holds no tokens")
        self.epoch_tokens = int(self.sizes.sum())
        self.position = 0  # stream position of the next global batch
        self._shards: dict[int, np.ndarray] = {}  # memory maps, opened (and range-checked) on first use
        self._order_cache: tuple[int, np.ndarray] | None = None

    @property
    def tokens_per_step(self) -> int:
        return self.world_size * self.B * self.T

    # ------------------------------------------------------------------ reading

    def shard_order(self, epoch: int) -> np.ndarray:
        if self._order_cache is None or self._order_cache[0] != epoch:
            n = len(self.files)
            order = np.random.default_rng([self.seed, epoch]).permutation(n) if self.shuffle else np.arange(n)
            self._order_cache = (epoch, order)
        return self._order_cache[1]

    def _shard(self, index: int) -> np.ndarray:
        if index not in self._shards:
            self._shards[index] = open_shard(self.files[index], self.vocab_size)
        return self._shards[index]

    def read(self, start: int, count: int) -> np.ndarray:
        """Tokens [start, start+count) of the stream, gathered across shards and epochs."""
        parts, pos, end = [], start, start + count
        while pos < end:
            epoch, offset = divmod(pos, self.epoch_tokens)
            order = self.shard_order(epoch)
            bounds = np.cumsum(self.sizes[order])
            i = int(np.searchsorted(bounds, offset, side="right"))
            shard_start = int(bounds[i] - self.sizes[order[i]])
            take = min(end - pos, int(bounds[i]) - offset)
            local = offset - shard_start
            parts.append(self._shard(int(order[i]))[local : local + take])
            pos += take
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        start = self.position + self.rank * self.B * self.T
        buf = torch.from_numpy(self.read(start, self.B * self.T + 1).astype(np.int64))
        self.position += self.tokens_per_step
        x, y = buf[:-1].view(self.B, self.T), buf[1:].view(self.B, self.T)
        if self.device.type == "cuda":  # pinned memory lets the copy overlap with compute
            return x.pin_memory().to(self.device, non_blocking=True), y.pin_memory().to(self.device, non_blocking=True)
        return x.to(self.device), y.to(self.device)

    def reset(self) -> None:
        self.position = 0

    # ------------------------------------------------------------------ exact resume

    def state_dict(self) -> dict:
        epoch, offset = divmod(self.position, self.epoch_tokens)
        order = self.shard_order(epoch)
        i = int(np.searchsorted(np.cumsum(self.sizes[order]), offset, side="right"))
        return {
            "position": self.position,  # authoritative; the rest makes the state readable and checkable
            "epoch": epoch,
            "shard_order": order.tolist(),
            "shard": int(order[i]),
            "offset_in_epoch": offset,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "split": self.split,
            "batch_size": self.B,
            "seq_len": self.T,
            "rank": self.rank,
            "world_size": self.world_size,
            "fingerprint": self.fingerprint,
        }

    def load_state_dict(self, state: dict, reshard: bool = False) -> None:
        """Continue exactly where `state` left off; refuses a state from another dataset or layout."""
        if state["fingerprint"] != self.fingerprint:
            raise DataError(f"reader state is for dataset {state['fingerprint']}, but {self.dir} is "
                            f"{self.fingerprint}: the data changed since the checkpoint")
        for key in ("split", "seed", "shuffle"):
            if state[key] != getattr(self, key):
                raise DataError(f"reader state has {key}={state[key]!r} but this reader has {getattr(self, key)!r}")
        if not reshard:
            mine = {"world_size": self.world_size, "batch_size": self.B, "seq_len": self.T}
            diff = {k: (state[k], v) for k, v in mine.items() if state[k] != v}
            if diff:
                what = ", ".join(f"{k} {a} -> {b}" for k, (a, b) in diff.items())
                raise DataError(f"reader state was written with another layout ({what}); "
                                "set data.reshard=True to continue from the same tokens with the new layout")
        self.position = int(state["position"])
        if self.shard_order(state["epoch"]).tolist() != state["shard_order"]:
            raise DataError("the shard order drawn for this epoch differs from the saved one "
                            "(numpy's random generator changed?); exact resume is impossible")
