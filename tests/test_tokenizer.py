"""Our offline GPT-2 encoding must give exactly tiktoken's own r50k_base (GPT-2) ids."""

import hashlib
import os
import shutil
import subprocess
import sys
from importlib import resources

import pytest
import tiktoken
import tiktoken.registry
from tiktoken.load import load_tiktoken_bpe

from harness.data.tokenizer import EOT, GPT2_RANKS_SHA256, VOCAB_SIZE, gpt2_encoding

R50K_URL = "https://openaipublic.blob.core.windows.net/encodings/r50k_base.tiktoken"
ASSET = resources.files("harness") / "assets" / "gpt2.tiktoken"


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """tiktoken's own r50k_base, loaded offline: the asset copied to where tiktoken's cache looks for it."""
    cache = tmp_path_factory.mktemp("tiktoken_cache")
    shutil.copyfile(str(ASSET), cache / hashlib.sha1(R50K_URL.encode()).hexdigest())
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TIKTOKEN_CACHE_DIR", str(cache))
        mp.delitem(tiktoken.registry.ENCODINGS, "r50k_base", raising=False)  # force a fresh load
        enc = tiktoken.get_encoding("r50k_base")
        mp.delitem(tiktoken.registry.ENCODINGS, "r50k_base", raising=False)  # don't leak it to other tests
    assert enc.name == "r50k_base"
    return enc


TEXTS = {
    "ascii": "The quick brown fox jumps over the lazy dog.",
    "accents": "Café déjà vu, naïve façade, Ångström, Łódź, São Paulo, Müller, crème brûlée",
    "cjk": "日本語のテキストと中文文本，还有한국어 텍스트。",
    "emoji": "I ❤️ tokenizers 🤖🚀👩‍👩‍👧‍👦 🇫🇷 (zwj + flags) ✔︎",
    "rtl": "שלום עולם — مرحبا بالعالم — Hello ‏mixed‎ directions",
    "whitespace": "a  b   c    d\u00a0\u00a0e \u2003f" + " " * 17 + "end   ",
    "tabs_newlines": "line1\n\nline2\r\n\tindented\t\ttabs\n\n\n   \n\t \n",
    "code": 'def f(x: int) -> int:\n    """Doc."""\n    return {"k": [x ** 2, x // 3]}  # comment\n'
    "\nif x!=0: f(x)\n\tlambda y:y<<2 >>= &&||",
    "numbers": "3.14159 1,000,000 0x1F 1e-9 -42 2024-05-20 123456789012345678901234567890 ¾ ½",
    "contractions": "I'm you're he's she'd we'll they've can't won't DON'T O'Neill 'tis rock'n'roll",
    "punctuation": "!!!???...---___***+++===<<<>>>|||\\\\//// @#$%^&*() {[()]} ``''\"\"",
    "control": "nul\x00bell\x07esc\x1b[0m del\x7f",
    "endoftext_as_text": "before <|endoftext|> after",
}


@pytest.mark.parametrize("name", sorted(TEXTS))
def test_ids_equal_tiktoken_r50k(reference, name):
    text = TEXTS[name]
    ours = gpt2_encoding()
    assert ours.encode_ordinary(text) == reference.encode_ordinary(text)
    assert ours.encode(text, disallowed_special=()) == reference.encode(text, disallowed_special=())
    assert ours.decode(ours.encode_ordinary(text)) == text


def test_play_text_equal_tiktoken_r50k(reference, play_texts):
    ours = gpt2_encoding()
    for play in (play_texts[0], play_texts[-1]):
        text = play[:5000]
        ids = ours.encode_ordinary(text)
        assert len(ids) > 800
        assert ids == reference.encode_ordinary(text)


def test_special_token(reference):
    ours = gpt2_encoding()
    assert ours.encode("<|endoftext|>", allowed_special="all") == [EOT] == [50256]
    assert reference.encode("<|endoftext|>", allowed_special="all") == [EOT]
    text = "end of one<|endoftext|>start of another"
    assert ours.encode(text, allowed_special="all") == reference.encode(text, allowed_special="all")
    assert EOT in ours.encode(text, allowed_special="all")
    assert EOT not in ours.encode_ordinary(text)  # plain text never becomes the separator
    with pytest.raises(ValueError):  # tiktoken's default: special tokens in text are an error
        ours.encode(text)


def test_known_ids_and_vocab(reference):
    ours = gpt2_encoding()
    assert ours.encode("Hello world") == [15496, 995]
    assert ours.n_vocab == VOCAB_SIZE == 50257 == reference.n_vocab
    assert ours.eot_token == EOT
    assert ours.max_token_value == 50256
    assert ours._mergeable_ranks == reference._mergeable_ranks


def test_asset_hash_is_tiktokens():
    assert hashlib.sha256(ASSET.read_bytes()).hexdigest() == GPT2_RANKS_SHA256


def _corrupt(data: bytes) -> bytes:
    """The rank file with one rank changed by one digit."""
    data = bytearray(data)
    line_end = data.index(b"\n", 1000)
    data[line_end - 1] = ord("1") if data[line_end - 1] != ord("1") else ord("2")
    return bytes(data)


def test_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "cache"))  # empty: nothing cached to fall back on
    good = tmp_path / "good.tiktoken"
    good.write_bytes(ASSET.read_bytes())
    assert len(load_tiktoken_bpe(str(good), expected_hash=GPT2_RANKS_SHA256)) == 50256

    bad = tmp_path / "corrupt.tiktoken"
    bad.write_bytes(_corrupt(ASSET.read_bytes()))
    with pytest.raises(ValueError, match="[Hh]ash mismatch"):
        load_tiktoken_bpe(str(bad), expected_hash=GPT2_RANKS_SHA256)


@pytest.mark.parametrize("cache", ["disabled", "empty"])
def test_gpt2_encoding_refuses_corrupt_asset(tmp_path, cache):
    """A copy of the package whose rank file is corrupt must not load, even with tiktoken's cache off."""
    pkg = tmp_path / "pkg" / "harness"
    (pkg / "assets").mkdir(parents=True)
    (pkg / "data").mkdir()
    src = resources.files("harness")
    for name in ("__init__.py", "data/tokenizer.py"):
        (pkg / name).write_bytes((src / name).read_bytes())
    (pkg / "data" / "__init__.py").write_text("")  # the tokenizer alone, not the package's other modules
    (pkg / "assets" / "gpt2.tiktoken").write_bytes(_corrupt(ASSET.read_bytes()))
    env = dict(os.environ, PYTHONPATH=str(pkg.parent))
    env["TIKTOKEN_CACHE_DIR"] = "" if cache == "disabled" else str(tmp_path / "cache")
    code = "import harness.data.tokenizer as t; print(t.__file__); t.gpt2_encoding()"
    r = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True)
    assert str(pkg) in r.stdout  # the copy was imported, not the checkout
    assert r.returncode != 0
    assert "hash mismatch" in r.stderr.lower()
