"""GGUF: phi-forge's conversion and each quantization against llama.cpp's converter and quantizer run by hand on
the same input. Wall time and peak RSS, printed.

    .envs/gguf/bin/python -m pipeline.targets.gguf.bench [--model fixture-phi-3-mini-4k] [--artifacts F16 Q4_K_M]
"""
import sys
from pathlib import Path

from pipeline.bench import target_main
from pipeline.targets.gguf.convert import CONVERTER

# llama.cpp's quantizer as a person calls it from llama-cpp-python (the wheel ships no llama-quantize binary).
QUANTIZE_BY_HAND = ("import sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
                    "p.ftype = getattr(llama_cpp, 'LLAMA_FTYPE_MOSTLY_' + sys.argv[3]); p.nthread = 2; "
                    "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))")


def by_hand(checkpoint: Path, spec: dict, out: Path, base: Path | None) -> list[list]:
    """The converter for the float type, the quantizer from the by-hand float file for the others."""
    gguf_type = spec["options"]["type"]
    if base:
        return [[sys.executable, "-c", QUANTIZE_BY_HAND, base, out, gguf_type]]
    return [[sys.executable, CONVERTER, checkpoint, "--outtype", gguf_type.lower(), "--outfile", out]]


if __name__ == "__main__":
    target_main("gguf", by_hand)
