"""Where and how often the trainer reports."""

from dataclasses import dataclass
from typing import Literal

from harness.spec.section import Section


@dataclass
class LogConfig(Section):
    """Where and how often the trainer reports."""

    every: int = 1  # a train row every N steps (reading the loss syncs the device, so GPU runs use ~10)
    wandb: Literal["offline", "online", "disabled"] = "offline"  # wandb mode (WANDB_MODE overrides it)
    wandb_project: str = "harness"  # wandb project
    wandb_entity: str = ""  # wandb team or user (empty: your default)
    export_hf: bool = False  # when training finishes, export the final model to RUN_DIR/hf (harness.export)

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        return [] if self.every > 0 else [f"every: must be positive, got {self.every}"]
