"""Build time and peak memory of each ONNX artifact: phi-forge's build against the genai builder run by hand.

    .envs/onnx/bin/python -m pipeline.targets.onnx.bench [--model fixture-phi-3-mini-4k] [--artifacts ...]

By hand is the builder's own command line with the same options (for HQQ: the builder's fp32 graph, then
onnxruntime's matmul_nbits_quantizer). phi-forge adds the option checks, the tokenizer files and the atomic write.
"""
import sys
from pathlib import Path

from pipeline.bench import target_main
from pipeline.targets.onnx.build import builder_command


def by_hand(checkpoint: Path, spec: dict, out: Path, base: Path | None) -> list[list]:
    options = spec["options"]
    commands = [builder_command(sys.executable, checkpoint, out, out.parent / "cache", spec["device"], options)]
    if options.get("quantizer") == "hqq":
        quantized = out.with_name(f"{out.name}-hqq")
        quantized.mkdir(parents=True)
        commands.append([sys.executable, "-m", "onnxruntime.quantization.matmul_nbits_quantizer",
                         "--input_model", out / "model.onnx", "--output_model", quantized / "model.onnx",
                         "--block_size", options.get("block_size", 32), "--quant_method", "hqq"])
    return commands


if __name__ == "__main__":
    target_main("onnx", by_hand)
