"""phi-forge's MLX build against mlx_lm.convert run by hand on the same checkpoint: wall time and peak RSS.

    .envs/mlx/bin/python -m pipeline.targets.mlx.bench [--model fixture-phi-3-mini-4k] [--artifacts 4bit 8bit]

By hand is `mlx_lm convert -q` with the artifact's bits and group size.
"""
import sys
from pathlib import Path

from pipeline.bench import target_main

# Artifact option -> mlx_lm convert flag.
FLAGS = {"bits": "--q-bits", "group_size": "--q-group-size", "mode": "--q-mode",
         "quant_predicate": "--quant-predicate", "dtype": "--dtype"}


def by_hand(checkpoint: Path, spec: dict, out: Path, base: Path | None) -> list[list]:
    flags = [part for key, value in spec["options"].items() if key in FLAGS for part in (FLAGS[key], str(value))]
    return [[sys.executable, "-m", "mlx_lm", "convert", "--hf-path", checkpoint, "--mlx-path", out, "-q", *flags]]


if __name__ == "__main__":
    target_main("mlx", by_hand)
