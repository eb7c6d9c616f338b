"""The training loop's own settings: batch arithmetic, precision, devices, and what to do when things go wrong."""

from dataclasses import dataclass
from typing import Literal

from harness.spec.section import Section


@dataclass
class TrainConfig(Section):
    """The training loop: batch arithmetic, precision, devices, and what to do when things go wrong."""

    batch_tokens: int = 524_288  # tokens per optimizer step over all ranks (2**19, GPT-3's ~0.5M)
    micro_batch: int | Literal["auto"] = 64  # sequences per rank per pass ("auto": largest that fits the GPU)
    memory_fraction: float = 0.85  # micro_batch="auto": the share of GPU memory a training step may plan for
    max_micro_batch: int = 0  # micro_batch="auto": never more sequences per pass than this (0: no cap; CPU too)
    seq_len: int = 1024  # tokens per sequence (T)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # auto: CUDA when torch sees a GPU
    backend: Literal["auto", "gloo", "nccl"] = "auto"  # process-group backend (auto: NCCL on GPU, gloo on CPU)
    dtype: Literal["auto", "bfloat16", "float32"] = "auto"  # autocast precision (auto: bf16 on CUDA, fp32 on CPU)
    compile: bool = False  # torch.compile the model for training (evaluation uses the plain module)
    deterministic: bool = False  # deterministic kernels only: bit-identical resumes on GPUs too, at some speed
    on_nonfinite: Literal["stop", "skip"] = "stop"  # a NaN/inf loss or gradient norm stops the run or skips the step
    max_restarts: int = 3  # torchrun restarts the workers this often after a crash (preemptions do not count)
    collective_timeout_min: float = 10.0  # a rank stuck this long in a collective fails the job
    stop_check_every: int = 10  # steps between the ranks' agreement on a stop signal (a tiny CPU all-reduce)
    peak_tflops: float = 0.0  # per-device peak for MFU (0: known GPUs' bf16 peak; none on CPU)

    def check(self) -> list[str]:
        """Problems with these settings, each naming its field."""
        mb = self.micro_batch
        return [msg for bad, msg in [
            (self.batch_tokens <= 0, f"batch_tokens: must be positive, got {self.batch_tokens}"),
            (mb != "auto" and mb <= 0, f"micro_batch: must be positive or 'auto', got {mb}"),
            (not 0 < self.memory_fraction <= 1, f"memory_fraction: must be in (0, 1], got {self.memory_fraction}"),
            (self.max_micro_batch < 0, f"max_micro_batch: must be >= 0 (0 = no cap), got {self.max_micro_batch}"),
            (self.seq_len <= 0, f"seq_len: must be positive, got {self.seq_len}"),
            (self.stop_check_every <= 0, f"stop_check_every: must be positive, got {self.stop_check_every}"),
            (self.max_restarts < 0, f"max_restarts: must be >= 0, got {self.max_restarts}"),
            (self.collective_timeout_min <= 0,
             f"collective_timeout_min: must be positive, got {self.collective_timeout_min}"),
        ] if bad]
