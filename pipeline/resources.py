"""Memory a stage needs, from the checkpoint's size, so a cluster scheduler can place the job."""
from pathlib import Path

from pipeline.checkpoint import weight_files

OVERHEAD_MB = 1500  # interpreter, torch, tokenizer, activations of the tiny prompt set


def weights_mb(folder) -> int:
    return sum(p.stat().st_size for p in weight_files(Path(folder))) // 2**20


def reference_mem_mb(checkpoint) -> int:
    # bf16 weights become float32 (x2), plus the load buffer while converting (x1).
    return OVERHEAD_MB + 3 * weights_mb(checkpoint)
