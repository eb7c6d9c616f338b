"""Where the prepared token shards are and how the trainer reads them."""

from dataclasses import dataclass

from harness.spec.section import Section


@dataclass
class DataConfig(Section):
    """Where the prepared shards are and how they are read."""

    dir: str = "log/data/shakespeare"  # a directory written by `python -m harness.prepare`
    shuffle: bool = True  # shuffle the train shard order every epoch (unshuffled FineWeb makes the loss oscillate)
    reshard: bool = False  # allow resuming with another world size or batch shape (continues from the same tokens)

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        return [] if self.dir.strip() else ["dir: must name the prepared data directory"]
