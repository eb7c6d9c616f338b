"""harness.model against transformers' GPT-2, the presets' sizes and FLOPs, initialisation, causality, and
harness.optim's parameter groups."""

import json
import math
from pathlib import Path

import pytest
import torch

from harness.model.gpt import GPT
from harness.model.io import load_hf_gpt2
from harness.spec import ModelConfig, OptimConfig
from harness.train.optim import build_optimizer, param_groups

TINY = ModelConfig(preset=None, n_layer=2, n_head=4, n_embd=64, block_size=64, vocab_size=512)


# ----------------------------------------------------------------------------- transformers' GPT-2


@pytest.fixture(scope="module")
def hf_model():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, n_positions=128, vocab_size=50257)
    return transformers.GPT2LMHeadModel(cfg).eval()


def save_hf(model, path: Path, fmt: str) -> None:
    """The layouts a HuggingFace GPT-2 directory comes in:
    safetensors: what save_pretrained writes ("transformer." prefixes, the tied lm_head left out);
    bin: what save_pretrained(safe_serialization=False) wrote, torch.save of the state dict (transformers 5
         dropped the option, so it is written here directly);
    bin-openai: OpenAI's weights on the hub (no "transformer." prefix, no lm_head)."""
    model.save_pretrained(path)
    if fmt.startswith("bin"):
        (path / "model.safetensors").unlink()
        sd = model.state_dict()
        if fmt == "bin-openai":
            sd = {k.removeprefix("transformer."): v for k, v in sd.items() if k != "lm_head.weight"}
        torch.save(sd, path / "pytorch_model.bin")
    weights = "model.safetensors" if fmt == "safetensors" else "pytorch_model.bin"
    assert sorted(p.name for p in path.glob("*model*")) == [weights]


@pytest.mark.parametrize("fmt", ["safetensors", "bin", "bin-openai"])
def test_hf_weights_give_the_same_logits(hf_model, fmt: str, tmp_path: Path) -> None:
    save_hf(hf_model, tmp_path, fmt)
    ours = load_hf_gpt2(tmp_path).eval()
    assert ours.config.vocab_size == 50257 and ours.config.block_size == 128
    assert ours.lm_head.weight is ours.transformer.wte.weight

    idx = torch.randint(0, 50257, (2, 100), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = hf_model(idx).logits
        logits, _ = ours(idx)
    assert logits.dtype == torch.float32
    assert (logits - expected).abs().max().item() < 1e-4


def test_hf_dir_errors(hf_model, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf_gpt2(tmp_path)

    hf_model.config.to_json_file(tmp_path / "config.json")
    with pytest.raises(FileNotFoundError, match="neither model.safetensors nor pytorch_model.bin"):
        load_hf_gpt2(tmp_path)

    cfg = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps(dict(cfg, model_type="llama")))
    with pytest.raises(ValueError, match="model_type 'llama' is not 'gpt2'"):
        load_hf_gpt2(tmp_path)


# ----------------------------------------------------------------------------- presets


def gpt2_params(n_layer: int, n_embd: int, vocab: int, block: int = 1024) -> int:
    """Counted by hand: per block 2 LayerNorms (4d), attention (3d^2 + 3d + d^2 + d) and MLP
    (4d^2 + 4d + 4d^2 + d) = 12d^2 + 13d; plus the token and position tables and the final LayerNorm.
    The output head is the token table (tied)."""
    d = n_embd
    return vocab * d + block * d + n_layer * (12 * d * d + 13 * d) + 2 * d


def on_meta(cfg: ModelConfig) -> GPT:
    with torch.device("meta"):
        return GPT(cfg)


def test_gpt2_size_and_flops() -> None:
    model = on_meta(ModelConfig(preset="gpt2"))
    assert gpt2_params(12, 768, 50304) == 124_475_904
    assert model.num_params() == 124_475_904
    assert model.num_params(non_embedding=True) == 124_475_904 - 50304 * 768 - 1024 * 768

    L, H, Q, T = 12, 12, 64, 1024
    n = 124_475_904 - 1024 * 768  # without the position table
    expected = 6 * n + 12 * L * H * Q * T
    assert model.flops_per_token(1024) == expected
    assert expected == pytest.approx(855e6, rel=1e-3)


@pytest.mark.parametrize(("preset", "shape", "published"), [
    ("gpt2", (12, 12, 768), 124_439_808),
    ("gpt2-medium", (24, 16, 1024), 354_823_168),
    ("gpt2-large", (36, 20, 1280), 774_030_080),
    ("gpt2-xl", (48, 25, 1600), 1_557_611_200),
])
def test_presets_match_openai(preset: str, shape: tuple[int, int, int], published: int) -> None:
    n_layer, n_head, n_embd = shape
    model = on_meta(ModelConfig(preset=preset))
    assert (model.config.n_layer, model.config.n_head, model.config.n_embd) == shape
    assert len(model.transformer.h) == n_layer
    assert model.transformer.h[0].attn.n_head == n_head
    assert model.transformer.wte.weight.shape == (50304, n_embd)
    assert model.num_params() == gpt2_params(n_layer, n_embd, 50304)
    # With OpenAI's unpadded vocabulary: the sizes HuggingFace reports for the released checkpoints.
    assert on_meta(ModelConfig(preset=preset, vocab_size=50257)).num_params() == published


def test_a_preset_size_can_be_overridden() -> None:
    cfg = ModelConfig(preset="gpt2", n_layer=6).resolved()
    assert (cfg.n_layer, cfg.n_head, cfg.n_embd) == (6, 12, 768)
    with pytest.raises(ValueError, match=r"^model\.n_embd: 770 is not divisible by model\.n_head=12$"):
        ModelConfig(preset="gpt2", n_embd=770).resolved()


# ----------------------------------------------------------------------------- initialisation and forward


def test_output_head_is_the_token_embedding() -> None:
    model = GPT(TINY)
    assert model.lm_head.weight is model.transformer.wte.weight
    ids = [id(p) for p in model.parameters()]
    assert len(ids) == len(set(ids)) and id(model.lm_head.weight) in ids
    with torch.no_grad():
        model.transformer.wte.weight[3].fill_(1.0)
    assert torch.equal(model.lm_head.weight[3], torch.ones(64))


def test_init_scales_the_residual_projections() -> None:
    n_layer = 8
    torch.manual_seed(0)
    model = GPT(ModelConfig(preset=None, n_layer=n_layer, n_head=4, n_embd=256, block_size=256, vocab_size=1024))
    residual = 0.02 / math.sqrt(2 * n_layer)  # 0.005
    seen = {"residual": 0, "plain": 0}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear):
            kind = "residual" if name.endswith(("attn.c_proj", "mlp.c_proj")) else "plain"
            std = module.weight.std().item()
            # >= 65,536 samples per matrix: the std estimate is within ~1% of the truth
            assert std == pytest.approx(residual if kind == "residual" else 0.02, rel=0.03), name
            assert abs(module.weight.mean().item()) < 0.1 * std, name
            assert module.bias is None or torch.count_nonzero(module.bias) == 0, name
            seen[kind] += 1
    assert seen == {"residual": 2 * n_layer, "plain": 2 * n_layer + 1}  # c_attn, c_fc per block; lm_head
    assert model.transformer.wpe.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert model.transformer.wte.weight.std().item() == pytest.approx(0.02, rel=0.03)


def test_future_tokens_do_not_change_earlier_logits() -> None:
    torch.manual_seed(0)
    model = GPT(TINY).eval()
    idx = torch.randint(0, 512, (2, 48))
    changed = idx.clone()
    changed[:, 30] = (idx[:, 30] + 1) % 512
    changed[:, 40:] = torch.randint(0, 512, (2, 8))
    with torch.no_grad():
        a, _ = model(idx)
        b, _ = model(changed)
    torch.testing.assert_close(a[:, :30], b[:, :30], rtol=0, atol=1e-6)
    assert (a[:, 30:] - b[:, 30:]).abs().amax(dim=-1).min() > 1e-4  # and every later position did change


def test_loss_and_too_long_input() -> None:
    torch.manual_seed(0)
    model = GPT(TINY)
    idx, targets = torch.randint(0, 512, (2, 2, 64))
    logits, loss = model(idx, targets)
    assert logits.shape == (2, 64, 512)
    assert loss.item() == pytest.approx(math.log(512), rel=0.05)  # small init: close to uniform
    expected = torch.nn.functional.cross_entropy(logits.view(-1, 512), targets.view(-1))
    assert loss.item() == pytest.approx(expected.item())
    with pytest.raises(ValueError, match="longer than model.block_size=64"):
        model(torch.zeros(1, 65, dtype=torch.long))


# ----------------------------------------------------------------------------- optimizer groups


def test_param_groups_decay_matrices_only() -> None:
    model = GPT(TINY)
    decay, no_decay = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["params"] and no_decay["params"]
    assert all(p.dim() >= 2 for p in decay["params"])
    assert all(p.dim() < 2 for p in no_decay["params"])

    grouped = [id(p) for p in decay["params"] + no_decay["params"]]
    assert len(grouped) == len(set(grouped))  # no parameter twice (the tied embedding included)
    assert set(grouped) == {id(p) for p in model.parameters()}  # and none left out

    names = {id(p): n for n, p in model.named_parameters()}
    decayed = {names[id(p)] for p in decay["params"]}
    assert "transformer.wte.weight" in decayed and "transformer.h.0.attn.c_attn.weight" in decayed
    assert "transformer.wpe.weight" in decayed  # the position table too, as in GPT-2/nanoGPT
    assert "transformer.h.0.attn.c_attn.bias" not in decayed and "transformer.ln_f.weight" not in decayed
    n_matrices = 2 + 4 * TINY.n_layer  # wte (= lm_head), wpe; c_attn, attn.c_proj, c_fc, mlp.c_proj
    assert len(decay["params"]) == n_matrices


def test_frozen_parameters_are_left_out() -> None:
    model = GPT(TINY)
    model.transformer.wpe.weight.requires_grad_(False)
    grouped = {id(p) for g in param_groups(model, 0.1) for p in g["params"]}
    assert id(model.transformer.wpe.weight) not in grouped


def test_no_fused_adamw_on_cpu() -> None:
    model = GPT(TINY)
    opt = build_optimizer(model, OptimConfig(lr=1e-3, betas=(0.8, 0.9), weight_decay=0.05), "cpu")
    assert isinstance(opt, torch.optim.AdamW)
    assert not opt.defaults["fused"]
    assert [g["weight_decay"] for g in opt.param_groups] == [0.05, 0.0]
    assert all(g["lr"] == 1e-3 and g["betas"] == (0.8, 0.9) for g in opt.param_groups)
