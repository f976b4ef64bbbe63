"""Build time and peak memory of each ONNX artifact: phi-forge's build against the genai builder run by hand.

    .envs/onnx/bin/python -m pipeline.targets.onnx.bench [--model fixture-phi-3-mini-4k]

By hand is the builder's own command line with the same options (for HQQ: the builder's fp32 graph, then
onnxruntime's matmul_nbits_quantizer). phi-forge adds the option checks, the tokenizer files and the atomic write.
"""
import argparse
import sys
import tempfile
from pathlib import Path

from pipeline import recipes
from pipeline.bench import build_command, measure, print_table
from pipeline.targets.onnx.build import builder_command


def by_hand(checkpoint: Path, out: Path, spec: dict) -> dict:
    options = spec["options"]
    first = measure(builder_command(sys.executable, checkpoint, out, out.parent / "cache", spec["device"], options))
    if options.get("quantizer") != "hqq":
        return first
    (out.parent / "hqq").mkdir()
    second = measure([sys.executable, "-m", "onnxruntime.quantization.matmul_nbits_quantizer",
                      "--input_model", out / "model.onnx", "--output_model", out.parent / "hqq" / "model.onnx",
                      "--block_size", options.get("block_size", 32), "--quant_method", "hqq"])
    return {"wall_s": first["wall_s"] + second["wall_s"], "peak_rss_mb": max(first["peak_rss_mb"],
                                                                           second["peak_rss_mb"])}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fixture-phi-3-mini-4k")
    args = parser.parse_args(argv)
    checkpoint = Path("artifacts") / args.model / "checkpoint"
    rows = []
    for spec in recipes.artifacts(recipes.load_supported(args.model)):
        if spec["target"] != "onnx" or spec["refused"]:
            continue
        with tempfile.TemporaryDirectory() as scratch:
            ours = measure(build_command("onnx", spec["name"], args.model, checkpoint, Path(scratch) / "ours"))
            theirs = by_hand(checkpoint, Path(scratch) / "theirs", spec)
        rows.append((spec["name"].split("/")[-1][:28], ours, theirs))
    print_table(rows)


if __name__ == "__main__":
    main()
