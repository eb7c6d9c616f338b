"""The GPT-2 tokenizer, built offline from the rank file shipped inside the package.

`tiktoken.get_encoding("gpt2")` downloads its BPE files on first use; compute nodes often have no
internet, so we build the identical encoding from `assets/gpt2.tiktoken` and check its hash.
"""

import functools
import hashlib
from importlib import resources

import tiktoken
from tiktoken.load import load_tiktoken_bpe
from tiktoken_ext.openai_public import r50k_pat_str

# tiktoken's own expected hash for r50k_base, which is the GPT-2 rank table.
GPT2_RANKS_SHA256 = "306cd27f03c1a714eca7108e03d66b7dc042abe8c258b44c199a7ed9838dd930"
EOT = 50256  # <|endoftext|>: separates documents in the token stream
VOCAB_SIZE = 50257


@functools.cache
def gpt2_encoding() -> tiktoken.Encoding:
    """The GPT-2 encoding; ids are exactly tiktoken's GPT-2 ids."""
    path = resources.files("harness") / "assets" / "gpt2.tiktoken"
    # Checked here: tiktoken skips its own check when TIKTOKEN_CACHE_DIR="" (caching disabled).
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != GPT2_RANKS_SHA256:
        raise ValueError(f"{path}: hash mismatch (sha256 {digest}, expected {GPT2_RANKS_SHA256})")
    ranks = load_tiktoken_bpe(str(path), expected_hash=GPT2_RANKS_SHA256)
    return tiktoken.Encoding(
        name="gpt2",
        pat_str=r50k_pat_str,
        mergeable_ranks=ranks,
        special_tokens={"<|endoftext|>": EOT},
        explicit_n_vocab=VOCAB_SIZE,
    )
