"""harness.export: what transformers loads from it, offline, against the harness model it came from."""

import json

import pytest
import torch
from torch.nn import functional as F

from harness.data.reader import ShardedTokenReader
from harness.data.tokenizer import VOCAB_SIZE, gpt2_encoding
from harness.model.gpt import GPT
from harness.model.io import load_model, load_pretrained
from harness.spec import ModelConfig
from harness.tools.export import main

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


@pytest.fixture(scope="module")
def hf(exported):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(exported, dtype=torch.float32).eval(), AutoTokenizer.from_pretrained(
        exported)


def test_the_directory(exported, trained_run):
    assert {p.name for p in exported.iterdir()} == {"config.json", "model.safetensors", "generation_config.json",
                                                    "tokenizer.json", "tokenizer_config.json", "README.md"}
    from safetensors.torch import load_file

    weights = load_file(exported / "model.safetensors")
    assert weights["transformer.wte.weight"].shape == (VOCAB_SIZE, 64)  # the real rows, not the padding to 50,304
    assert "lm_head.weight" not in weights  # tied
    card = (exported / "README.md").read_text()
    summary = json.loads((trained_run / "summary.json").read_text())
    assert "at step 40" in card and "40,960 (40 steps of 1,024)" in card and f"{summary['train_loss']:.4f}" in card
    assert '"n_layer": 2' in card  # the run's spec


def test_tokenizer_ids_are_the_harness_tokenizers(hf, play_texts):
    _, tok = hf
    enc = gpt2_encoding()
    text = play_texts[0][:20_000] + "<|endoftext|>" + play_texts[1][:20_000]
    ids = enc.encode(text, allowed_special="all")
    assert tok.encode(text) == ids and ids.count(50256) == 1
    assert tok.decode(ids) == text


def test_logits_match_on_real_tokens(hf, trained_run, shakespeare_dir):
    model, _ = load_model(trained_run)
    x, _ = ShardedTokenReader(shakespeare_dir, "val", batch_size=4, seq_len=128).next_batch()
    with torch.no_grad():
        theirs = hf[0](x).logits
        ours = model(x)[0][..., :VOCAB_SIZE]
    torch.testing.assert_close(theirs, ours, rtol=0, atol=1e-5)


def test_init_from_the_export_starts_from_the_same_loss(exported, trained_run, shakespeare_dir, hf):
    """The round trip: a run started from the export (50,257 rows, padded to 50,304 and masked) computes the exported
    model's loss, which is the original model's over the real vocabulary."""
    cfg = ModelConfig(preset=None, n_layer=2, n_head=2, n_embd=64, block_size=128, init_from=str(exported),
                      unpadded_vocab=VOCAB_SIZE)
    model = GPT(cfg)
    load_pretrained(model)
    original, _ = load_model(trained_run)
    x, y = ShardedTokenReader(shakespeare_dir, "train", batch_size=4, seq_len=128).next_batch()
    with torch.no_grad():
        _, loss = model(x, y)
        real = F.cross_entropy(original(x)[0][..., :VOCAB_SIZE].reshape(-1, VOCAB_SIZE), y.reshape(-1))
        theirs = hf[0](x).logits.reshape(-1, VOCAB_SIZE)
    assert loss.item() == pytest.approx(real.item(), abs=1e-5)
    assert loss.item() == pytest.approx(F.cross_entropy(theirs, y.reshape(-1)).item(), abs=1e-5)


def test_export_without_a_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(SystemExit) as e:  # the command's own exit, in this process (no second torch import)
        main([str(tmp_path), "--out", str(tmp_path / "hf")])
    assert str(e.value.code).startswith(f"error: {tmp_path}: no valid checkpoint") and not (tmp_path / "hf").exists()
