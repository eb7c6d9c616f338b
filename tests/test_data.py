"""harness.data: the sharded token reader against the shards read independently, resume, and bad data."""

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from harness.data.manifest import DataError, load_manifest
from harness.data.reader import ShardedTokenReader
from harness.data.shards import ShardError, write_shard

B, T = 4, 64  # small batches: a whole epoch is a few thousand steps


def read_shard(path: Path) -> np.ndarray:
    """A .bin shard read without harness.shards."""
    return np.fromfile(path, dtype=np.uint16, offset=1024).astype(np.int64)


def shard_arrays(data_dir: Path, split: str) -> list[np.ndarray]:
    manifest = json.loads((data_dir / "manifest.json").read_text())
    return [read_shard(data_dir / e["file"]) for e in manifest["splits"][split]["shards"]]


def epoch_stream(shards: list[np.ndarray], order) -> np.ndarray:
    return np.concatenate([shards[i] for i in order])


def reader(data_dir, split="train", batch_size=B, seq_len=T, **kwargs) -> ShardedTokenReader:
    return ShardedTokenReader(data_dir, split, batch_size, seq_len, **kwargs)


def batches(r: ShardedTokenReader, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [r.next_batch() for _ in range(n)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


# ----------------------------------------------------------------------------- the stream


def test_two_ranks_read_the_epoch_stream(shakespeare_dir):
    W = 2
    ranks = [reader(shakespeare_dir, rank=r, world_size=W, shuffle=True, seed=1) for r in range(W)]
    shards = shard_arrays(shakespeare_dir, "train")
    assert len(shards) >= 5
    order0, order1 = ranks[0].shard_order(0), ranks[0].shard_order(1)
    np.testing.assert_array_equal(ranks[1].shard_order(0), order0)
    assert sorted(order0) == list(range(len(shards))) and list(order0) != list(range(len(shards)))
    assert order1[0] != order0[0]  # so reading past the epoch end tells the two orders apart
    epoch = epoch_stream(shards, order0)
    assert ranks[0].epoch_tokens == len(epoch)
    stream = np.concatenate([epoch, epoch_stream(shards, order1)])

    per_batch = B * T
    steps = len(epoch) // (W * per_batch) + 2  # one epoch and a little of the next
    shard_ends = set(np.cumsum([len(shards[i]) for i in order0]).tolist())
    crossed_shard = crossed_epoch = 0
    xs = []
    for step in range(steps):
        for r in range(W):
            x, y = ranks[r].next_batch()
            assert x.dtype == y.dtype == torch.int64
            assert x.shape == y.shape == (B, T)
            assert torch.equal(y.flatten()[:-1], x.flatten()[1:])  # y is x shifted by one
            start = (step * W + r) * per_batch
            want = stream[start : start + per_batch + 1]
            np.testing.assert_array_equal(x.flatten().numpy(), want[:-1])
            np.testing.assert_array_equal(y.flatten().numpy(), want[1:])
            inside = [e for e in shard_ends if start < e < start + per_batch]
            crossed_shard += bool(inside)
            if len(epoch) in inside:
                crossed_epoch += 1
                k = len(epoch) - start  # the tokens after the epoch end start epoch 1's first shard
                np.testing.assert_array_equal(x.flatten().numpy()[k:], shards[order1[0]][: per_batch - k])
            xs.append(x.flatten().numpy())
    assert crossed_shard >= len(shards) - 1 and crossed_epoch == 1
    # In (step, rank) order the batches tile the stream: disjoint, nothing skipped or repeated.
    np.testing.assert_array_equal(np.concatenate(xs), stream[: steps * W * per_batch])
    assert steps * W * per_batch > len(epoch)


def test_shard_order_per_epoch(shakespeare_dir):
    shuffled = reader(shakespeare_dir, shuffle=True, seed=7)
    n = len(shuffled.files)
    orders = [tuple(shuffled.shard_order(e).tolist()) for e in range(6)]
    assert all(sorted(o) == list(range(n)) for o in orders)
    assert len(set(orders)) == len(orders)  # a new order every epoch
    again = reader(shakespeare_dir, shuffle=True, seed=7)
    assert [tuple(again.shard_order(e).tolist()) for e in reversed(range(6))] == orders[::-1]  # reproducible
    other_seed = reader(shakespeare_dir, shuffle=True, seed=8)
    assert tuple(other_seed.shard_order(0).tolist()) != orders[0]

    plain = reader(shakespeare_dir, shuffle=False, seed=7)
    for e in range(4):
        assert plain.shard_order(e).tolist() == list(range(n))
    k = 5000
    np.testing.assert_array_equal(plain.read(plain.epoch_tokens, k), plain.read(0, k))  # epoch 1 = epoch 0
    s = shuffled.read(shuffled.epoch_tokens, k)
    assert not np.array_equal(s, shuffled.read(0, k))


def test_val_reader_unshuffled_is_the_same_for_every_seed(shakespeare_dir):
    val = epoch_stream(shard_arrays(shakespeare_dir, "val"), [0])
    got = []
    for seed in (0, 1, 1234):
        r = reader(shakespeare_dir, "val", shuffle=False, seed=seed)
        assert r.epoch_tokens == len(val)
        got.append(batches(r, 20))
    assert_same_batches(got[0], got[1])
    assert_same_batches(got[0], got[2])
    np.testing.assert_array_equal(torch.cat([x.flatten() for x, _ in got[0]]).numpy(), val[: 20 * B * T])


# ----------------------------------------------------------------------------- exact resume


@pytest.mark.parametrize("world_size, rank", [(1, 0), (2, 1)])
@pytest.mark.parametrize("where", ["start", "middle", "before_epoch_end", "in_epoch_1"])
def test_state_round_trip(shakespeare_dir, world_size, rank, where):
    bs, sl, m = 8, 128, 4
    first = reader(shakespeare_dir, batch_size=bs, seq_len=sl, rank=rank, world_size=world_size,
                   shuffle=True, seed=5)
    step = first.tokens_per_step
    last_in_epoch = first.epoch_tokens // step  # steps that start inside epoch 0
    k = {"start": 0, "middle": 37, "before_epoch_end": last_in_epoch - 1,
         "in_epoch_1": last_in_epoch + 2}[where]
    batches(first, k)
    state = first.state_dict()
    assert state["position"] == k * step
    assert state["epoch"] == (1 if where == "in_epoch_1" else 0)
    assert state["shard_order"] == first.shard_order(state["epoch"]).tolist()
    json.dumps(state)  # a checkpoint can store it as plain data
    expected = batches(first, m)
    if where == "before_epoch_end":
        assert (k + m) * step > first.epoch_tokens  # the resumed batches run into epoch 1

    fresh = reader(shakespeare_dir, batch_size=bs, seq_len=sl, rank=rank, world_size=world_size,
                   shuffle=True, seed=5)
    fresh.load_state_dict(state)
    assert_same_batches(batches(fresh, m), expected)
    assert fresh.state_dict() == first.state_dict()


def test_layout_change_refused_unless_resharded(shakespeare_dir):
    src = reader(shakespeare_dir, rank=0, world_size=2, shuffle=True, seed=3)
    batches(src, 5)
    state = src.state_dict()
    stream = epoch_stream(shard_arrays(shakespeare_dir, "train"), src.shard_order(0))
    for field, kwargs in [("world_size", {"world_size": 1}), ("batch_size", {"batch_size": B * 2}),
                          ("seq_len", {"seq_len": T // 2})]:
        args = {"batch_size": B, "seq_len": T, "world_size": 2, "rank": 0, "shuffle": True, "seed": 3}
        args |= kwargs
        with pytest.raises(DataError, match=field):
            reader(shakespeare_dir, **args).load_state_dict(state)
        r = reader(shakespeare_dir, **args)
        r.load_state_dict(state, reshard=True)  # continues from the same tokens, in the new layout
        x, y = r.next_batch()
        assert x.shape == (args["batch_size"], args["seq_len"])
        pos = state["position"]
        np.testing.assert_array_equal(x.flatten().numpy(), stream[pos : pos + x.numel()])


def test_state_from_other_data_or_settings_refused(shakespeare_dir):
    src = reader(shakespeare_dir, shuffle=True, seed=3)
    batches(src, 2)
    state = src.state_dict()
    with pytest.raises(DataError, match="dataset"):
        other = state | {"fingerprint": "0123456789abcdef"}
        reader(shakespeare_dir, shuffle=True, seed=3).load_state_dict(other, reshard=True)
    for key, value in [("seed", 4), ("shuffle", False), ("split", "val")]:
        with pytest.raises(DataError, match=key):
            reader(shakespeare_dir, shuffle=True, seed=3).load_state_dict(state | {key: value}, reshard=True)


# ----------------------------------------------------------------------------- bad data


@pytest.fixture
def data_copy(tmp_path, shakespeare_dir):
    """A private copy of the prepared data, to damage."""
    return Path(shutil.copytree(shakespeare_dir, tmp_path / "data"))


def edit_manifest(d: Path, split: str, index: int, **changes) -> None:
    manifest = json.loads((d / "manifest.json").read_text())
    manifest["splits"][split]["shards"][index] |= changes
    (d / "manifest.json").write_text(json.dumps(manifest))


def read_everything(d: Path) -> None:
    """Open a reader and read every token of a train epoch."""
    r = reader(d)
    r.read(0, r.epoch_tokens)


def rejected(path: Path, *words: str):
    """The error expected for a bad shard: it names the file (and says what is wrong)."""
    return pytest.raises((DataError, ShardError), match=re.escape(str(path)) + ".*" + ".*".join(words))


def test_truncated_shard(data_copy):
    path = data_copy / "train_000003.bin"
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with rejected(path, "truncated"):
        read_everything(data_copy)
    path.write_bytes(data[:500])  # not even a whole header
    with rejected(path, "header"):
        read_everything(data_copy)


def patch_header(path: Path, word: int, value: int) -> None:
    with open(path, "r+b") as f:
        f.seek(4 * word)
        f.write(np.int32(value).tobytes())


def test_bad_magic(data_copy):
    path = data_copy / "train_000002.bin"
    patch_header(path, 0, 12345)
    with rejected(path, "magic"):
        read_everything(data_copy)


def test_header_count_disagrees_with_file_size(data_copy):
    path = data_copy / "train_000001.bin"
    patch_header(path, 2, 200_001)
    with rejected(path, "200001 tokens"):
        read_everything(data_copy)


def test_empty_shard(data_copy):
    path = data_copy / "train_000004.bin"
    write_shard(path, np.zeros(0, dtype=np.uint16))
    with rejected(path):  # the manifest still says 200000 tokens
        read_everything(data_copy)
    edit_manifest(data_copy, "train", 4, tokens=0, documents=0, bytes=1024)  # now they agree: still bad
    with rejected(path, "no tokens"):
        read_everything(data_copy)


@pytest.mark.parametrize("bad", [50257, 65535])
def test_token_outside_vocab(data_copy, bad):
    path = data_copy / "train_000000.bin"
    tokens = read_shard(path)
    write_shard(path, tokens)  # same tokens, rewritten: still a valid shard ...
    read_everything(data_copy)
    where = 12_345
    with open(path, "r+b") as f:  # ... until one token is patched out of range
        f.seek(1024 + 2 * where)
        f.write(np.uint16(bad).tobytes())
    with rejected(path, f"{bad} >= vocab size 50257", f"position {where}"):
        read_everything(data_copy)
    with rejected(path, "vocab size"):  # the first batch of an unshuffled reader reads shard 0
        reader(data_copy).next_batch()


def test_highest_token_is_accepted(data_copy):
    path = data_copy / "train_000000.bin"
    tokens = read_shard(path)
    tokens[777] = 50256
    write_shard(path, tokens)
    read_everything(data_copy)


def test_manifest_count_disagrees_with_file(data_copy):
    edit_manifest(data_copy, "train", 2, tokens=199_999)
    with rejected(data_copy / "train_000002.bin", "manifest"):
        read_everything(data_copy)


def test_missing_shard_file(data_copy):
    path = data_copy / "train_000005.bin"
    path.unlink()
    with rejected(path, "missing"):
        read_everything(data_copy)


def test_missing_and_empty_data_directory(tmp_path):
    missing = tmp_path / "nowhere"
    for call in (lambda: load_manifest(missing), lambda: reader(missing)):
        with pytest.raises(DataError, match=re.escape(str(missing)) + "(?s:.*)harness\\.prepare"):
            call()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=re.escape(str(empty)) + " is empty(?s:.*)harness\\.prepare"):
        reader(empty)
    (empty / "train_000000.bin").write_bytes(b"")  # files but no manifest: an unfinished prepare
    with pytest.raises(DataError, match="no manifest.json(?s:.*)harness\\.prepare"):
        reader(empty)


# ----------------------------------------------------------------------------- memory maps


def test_shards_are_memory_mapped(shakespeare_dir):
    r = reader(shakespeare_dir, shuffle=True, seed=2)
    r.read(0, r.epoch_tokens)
    assert sorted(r._shards) == list(range(len(r.files)))
    for i, arr in r._shards.items():
        assert isinstance(arr, np.memmap)
        assert Path(arr.filename).resolve() == r.files[i].resolve()
        assert arr.dtype == np.uint16 and not arr.flags.writeable
    first = int(r.shard_order(0)[0])
    part = r.read(10, 100)  # inside one shard: a view of the map, no copy
    assert np.shares_memory(part, r._shards[first])
