import pytest

from harness.prepare import prepare
from harness.sources import shakespeare

# data


@pytest.fixture(scope="session")
def shakespeare_dir(tmp_path_factory):
    """The Shakespeare corpus prepared once: ~1.4M train tokens in 7 shards, ~0.13M val tokens in 1."""
    out = tmp_path_factory.mktemp("data") / "shakespeare"
    prepare(shakespeare(), out, shard_tokens=200_000, workers=2)
    return out


@pytest.fixture(scope="session")
def play_texts():
    """The 38 plays as plain text, in the order the Shakespeare source yields them."""
    return list(shakespeare().documents(0))
