"""Memory, wall time and cores a job needs, from the checkpoint's size, so a scheduler can place it.

Snakemake evaluates these on a job's declared input: during planning (a dry run, --dag, a cluster's first pass)
the checkpoint may not have been pulled yet, and the job gets a planning value; Snakemake evaluates them again,
with the checkpoint there, before it runs or submits the job.
"""
import math
from pathlib import Path

from pipeline.checkpoint import weight_files
from pipeline.recipes import DEFAULT_MEMORY, DEFAULT_WALLTIME

# A job on weights this small (the fixtures, a few MB) spends its time starting Python and the runtime, not in
# compute: it declares one core.
ONE_CORE_BELOW_MB = 256
# Cores the reference and each validation compute on with a real checkpoint, and pipeline.machine measures the
# memory bandwidth with, so that each decode speed sits beside the bound of as many cores.
DECODE_THREADS = 2


def weights_mb(folder) -> int | None:
    """The checkpoint's weights in MB; None while the folder does not exist yet."""
    folder = Path(folder)
    return sum(p.stat().st_size for p in weight_files(folder)) // 2**20 if folder.is_dir() else None


def mem_mb(checkpoint, memory: dict = DEFAULT_MEMORY) -> int:
    """base_mb + per_weights_mb x the weights; base_mb alone while planning, before the checkpoint exists."""
    weights = weights_mb(checkpoint)
    return int(memory["base_mb"] + memory["per_weights_mb"] * (weights or 0))


def threads(checkpoint, most: int) -> int:
    """`most` cores for a checkpoint of real size (and while planning, before it exists); one for a checkpoint
    under ONE_CORE_BELOW_MB, whose jobs a second core does not shorten, so that they run side by side."""
    weights = weights_mb(checkpoint)
    return 1 if weights is not None and weights < ONE_CORE_BELOW_MB else most


def runtime_min(checkpoint, walltime: dict = DEFAULT_WALLTIME) -> int:
    """base_min + per_weights_gb_min x the weights in GB, in whole minutes; base_min alone while planning."""
    weights = weights_mb(checkpoint)
    return math.ceil(walltime["base_min"] + walltime["per_weights_gb_min"] * (weights or 0) / 1024)
