"""GGUF: phi-forge's conversion and each quantization against llama.cpp's converter and quantizer run by hand on
the same input. Wall time and peak RSS, printed.

    .envs/gguf/bin/python -m pipeline.targets.gguf.bench [--model fixture-phi-3-mini-4k] [--artifacts F16 Q4_K_M]
"""
import sys
from pathlib import Path

from pipeline.bench import target_main
from pipeline.targets.gguf.build import tool
from pipeline.targets.gguf.convert import CONVERTER


def by_hand(checkpoint: Path, spec: dict, out: Path, base: Path | None) -> list[list]:
    """The converter for the float type, the quantizer from the by-hand float file for the others."""
    gguf_type = spec["options"]["type"]
    if base:
        return [[tool("llama-quantize"), base, out, gguf_type, "2"]]
    return [[sys.executable, CONVERTER, checkpoint, "--outtype", gguf_type.lower(), "--outfile", out]]


if __name__ == "__main__":
    target_main("gguf", by_hand)
