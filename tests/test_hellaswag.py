"""harness.eval.hellaswag on the real validation split: batched, padded scoring against a reference
that scores one unpadded sequence at a time; loading from jsonl, save_to_disk and the cache; errors."""

import json
import time

import datasets
import pytest
import torch
from torch.nn import functional as F

from harness.data.tokenizer import gpt2_encoding
from harness.distributed import DistEnv
from harness.eval import hellaswag as hs
from harness.model.gpt import GPT
from harness.model.io import load_model
from harness.spec import ModelConfig
from tests.hellaswag_data import ROWS

N = 40  # the first examples, compared with the reference
LONG = 8  # and the first examples too long for a 128-token context (WikiHow's, from row 3,254 on)
SINGLE = DistEnv(0, 0, 1, torch.device("cpu"), None)
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="session")
def examples(hellaswag):
    everything = hs.load_examples(str(hellaswag))
    return everything[:N] + [ex for ex in everything if longest(ex) > 129][:LONG]


def longest(example: dict) -> int:
    enc = gpt2_encoding()
    return len(enc.encode(example["ctx"])) + max(len(enc.encode(" " + e)) for e in example["endings"])


def random_gpt(block_size: int) -> GPT:
    torch.manual_seed(0)
    return GPT(ModelConfig(preset=None, n_layer=2, n_head=2, n_embd=64, block_size=block_size)).eval()


@pytest.fixture(scope="module", params=["random", "random-short-context", "trained"])
def model(request):
    if request.param == "trained":
        model, info = load_model(request.getfixturevalue("trained_run"))
        assert info["step"] == 40 and model.config.block_size == 128
        return model
    # 32 tokens: every example loses context tokens, and some endings their first tokens.
    return random_gpt(256 if request.param == "random" else 32)


@torch.no_grad()
def reference(model: GPT, example: dict) -> list[tuple[float, int]]:
    """Summed loss and number of scored tokens of each ending, one sequence at a time, no padding."""
    enc = gpt2_encoding()
    ctx = enc.encode(example["ctx"])
    out = []
    for ending in example["endings"]:
        end = enc.encode(" " + ending)
        tokens = (ctx + end)[-(model.config.block_size + 1):]  # too long: drop tokens from the left
        n = min(len(end), len(tokens) - 1)  # the first token has no logits predicting it
        logits, _ = model(torch.tensor([tokens[:-1]]))
        # logits[j] predicts tokens[j + 1], so the last n positions predict the ending's last n tokens.
        loss = F.cross_entropy(logits[0, -n:], torch.tensor(tokens[-n:]), reduction="sum")
        out.append((loss.item(), n))
    return out


@pytest.mark.slow
def test_batched_scoring_matches_one_sequence_at_a_time(model, examples, hellaswag):
    ref = [reference(model, ex) for ex in examples]
    ref_sums = torch.tensor([[s for s, _ in r] for r in ref], dtype=torch.float64)
    ref_counts = torch.tensor([[n for _, n in r] for r in ref])
    block = model.config.block_size
    assert (sum(longest(ex) > block + 1 for ex in examples) >= LONG) == (block < 256)  # the cut is exercised

    model.train()  # scoring switches to eval mode and back
    sums, counts = hs.ending_losses(model, examples, batch_examples=8)  # 8 examples, 32 padded rows a pass
    preds = hs.score_examples(model, examples, batch_examples=7)  # the last pass has 4 examples
    assert model.training
    model.eval()

    assert torch.equal(counts, ref_counts)
    torch.testing.assert_close(sums / counts, ref_sums / ref_counts, rtol=0, atol=1e-5)
    ref_preds = list(zip(ref_sums.argmin(1).tolist(), (ref_sums / ref_counts).argmin(1).tolist(), strict=True))
    assert preds == ref_preds

    labels = [ex["label"] for ex in examples[:N]]
    result = hs.evaluate_hellaswag(model, str(hellaswag), N, SINGLE)
    assert result == {
        "acc": sum(p == y for (p, _), y in zip(ref_preds[:N], labels, strict=True)) / N,
        "acc_norm": sum(p == y for (_, p), y in zip(ref_preds[:N], labels, strict=True)) / N,
        "examples": N,
    }


def test_autocast_scores_close_to_float32(examples):
    model = random_gpt(256)
    sums, counts = hs.ending_losses(model, examples[:8])
    bf16_sums, bf16_counts = hs.ending_losses(model, examples[:8], autocast=torch.autocast("cpu", torch.bfloat16))
    assert torch.equal(counts, bf16_counts)
    # bfloat16 logits carry ~3 significant digits: close to, but not the same as, float32.
    torch.testing.assert_close(bf16_sums / counts, sums / counts, rtol=0, atol=0.05)
    assert not torch.equal(bf16_sums, sums)


def test_examples_are_cached_per_path_and_limit(hellaswag, tmp_path):
    rows = datasets.load_from_disk(str(hellaswag)).select(range(12)).to_list()
    path = tmp_path / "val.jsonl"
    path.write_text("".join(json.dumps(dict(r, label=int(r["label"]))) + "\n" for r in rows))
    model = random_gpt(256)
    first = hs.evaluate_hellaswag(model, str(path), 10, SINGLE)
    path.unlink()  # a second evaluation must not read the file again
    assert hs.evaluate_hellaswag(model, str(path), 10, SINGLE) == first and first["examples"] == 10
    with pytest.raises(hs.HellaSwagDataError, match="val.jsonl"):
        hs.evaluate_hellaswag(model, str(path), 11, SINGLE)  # another limit: read again


# ----------------------------------------------------------------------------- loading


def write_jsonl(path, rows: list) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def test_jsonl_and_saved_dataset_give_the_same_examples(hellaswag, tmp_path):
    ds = datasets.load_from_disk(str(hellaswag))
    assert len(ds) == ROWS
    rows = ds.select(range(25)).to_list()
    assert all(isinstance(r["label"], str) for r in rows)
    path = tmp_path / "hellaswag_val.jsonl"
    write_jsonl(path, [dict(r, label=int(r["label"])) for r in rows])  # the original file's integer labels

    from_saved = hs.load_examples(str(hellaswag), 25)
    assert hs.load_examples(str(path)) == from_saved
    assert hs.load_examples(str(path), 7) == from_saved[:7]
    assert [e["ctx"] for e in from_saved] == [r["ctx"] for r in rows]  # file order
    assert [e["label"] for e in from_saved] == [int(r["label"]) for r in rows]
    assert set(from_saved[0]) == {"ctx", "endings", "label"}

    everything = hs.load_examples(str(hellaswag))
    assert len(everything) == ROWS and everything[:25] == from_saved
    assert sorted({e["label"] for e in everything}) == [0, 1, 2, 3]
    assert all(len(e["endings"]) == 4 for e in everything)


def _without(row: dict, key: str) -> dict:
    return {k: v for k, v in row.items() if k != key}


@pytest.mark.parametrize("make_bad, message", [
    (lambda r: '{"ctx": "A man', "line 3: not valid JSON"),
    (lambda r: "[1, 2]", "row 3: expected a JSON object"),
    (lambda r: _without(r, "endings"), "row 3: missing field 'endings'"),
    (lambda r: _without(r, "label"), "row 3: missing field 'label'"),
    (lambda r: dict(r, endings=r["endings"][:3]), "row 3: 'endings' must be a list of 4 strings"),
    (lambda r: dict(r, label=4), "row 3: 'label' must be 0..3, got 4"),
    (lambda r: dict(r, label="x"), "row 3: 'label' must be 0..3, got 'x'"),
    (lambda r: dict(r, ctx=""), "row 3: 'ctx' must be a non-empty string"),
])
def test_malformed_jsonl_names_file_and_row(examples, tmp_path, make_bad, message):
    good = examples[:3]
    path = tmp_path / "bad.jsonl"
    write_jsonl(path, [good[0], good[1], make_bad(good[2]), good[2]])
    with pytest.raises(hs.HellaSwagDataError) as e:
        hs.load_examples(str(path))
    assert str(path) in str(e.value) and message in str(e.value)
    assert len(hs.load_examples(str(path), 2)) == 2  # rows before the bad one load


def test_malformed_saved_dataset_names_dir_and_row(hellaswag, tmp_path):
    rows = datasets.load_from_disk(str(hellaswag)).select(range(3)).to_list()
    bad_label = tmp_path / "bad_label"
    datasets.Dataset.from_list([rows[0], dict(rows[1], label="7"), rows[2]]).save_to_disk(str(bad_label))
    with pytest.raises(hs.HellaSwagDataError, match=f"{bad_label}: row 2: 'label' must be 0..3, got '7'"):
        hs.load_examples(str(bad_label))
    no_endings = tmp_path / "no_endings"
    datasets.Dataset.from_list(rows).remove_columns("endings").save_to_disk(str(no_endings))
    with pytest.raises(hs.HellaSwagDataError, match=f"{no_endings}: row 1: missing field 'endings'"):
        hs.load_examples(str(no_endings))
    with pytest.raises(hs.HellaSwagDataError, match=f"{tmp_path}: not a datasets.save_to_disk directory"):
        hs.load_examples(str(tmp_path))
    with pytest.raises(hs.HellaSwagDataError, match=f"{tmp_path / 'missing.jsonl'}: no such file"):
        hs.load_examples(str(tmp_path / "missing.jsonl"))


def test_default_data_is_the_cache_file(examples, tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    assert hs.cache_file() == tmp_path / "hellaswag" / "hellaswag_val.jsonl"
    hs.cache_file().parent.mkdir()
    write_jsonl(hs.cache_file(), examples[:10])
    assert hs.load_examples(None) == examples[:10]


def test_no_network_fails_fast_with_a_hint(tmp_path, monkeypatch):
    monkeypatch.setenv("HARNESS_CACHE", str(tmp_path))
    t0 = time.time()
    try:
        found = hs.load_examples(None, 5)
    except hs.HellaSwagDataError as e:
        assert time.time() - t0 < 10
        for hint in (str(hs.cache_file()), hs.URL, "--data PATH", "eval.hellaswag_data"):
            assert hint in str(e)
        assert not hs.cache_file().exists() and not list(tmp_path.rglob("*.tmp"))  # nothing half-written
    else:  # this machine reaches GitHub: then the cached download must be the whole split
        assert len(found) == 5 and len(hs.load_examples(None)) == ROWS
