"""GGUF: phi-forge's conversion and each quantization against llama.cpp's converter and quantizer run by hand on
the same input. Wall time and peak RSS, printed.

    .envs/gguf/bin/python -m pipeline.targets.gguf.bench [--model fixture-phi-3-mini-4k]
"""
import argparse
import sys
import tempfile
from pathlib import Path

from pipeline import recipes
from pipeline.bench import build_command, measure, print_table
from pipeline.targets.gguf.build import CONVERTER, gguf_file

# llama.cpp's quantizer as a person calls it from llama-cpp-python (the wheel ships no llama-quantize binary).
QUANTIZE_BY_HAND = ("import sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
                    "p.ftype = getattr(llama_cpp, 'LLAMA_FTYPE_MOSTLY_' + sys.argv[3]); p.nthread = 2; "
                    "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), p))")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fixture-phi-3-mini-4k")
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"))
    args = parser.parse_args(argv)
    checkpoint = args.artifacts / args.model / "checkpoint"
    artifacts = recipes.targets()["targets"]["gguf"]["artifacts"]
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        for name, spec in artifacts.items():
            gguf_type = spec["options"]["type"]
            if "base" not in spec["options"]:
                mine = measure(build_command("gguf", name, args.model, checkpoint, scratch / name))
                hand = measure([sys.executable, CONVERTER, checkpoint, "--outtype", gguf_type.lower(),
                                "--outfile", scratch / f"hand-{name}.gguf"])
                rows.append((f"convert {gguf_type}", mine, hand))
        for name, spec in artifacts.items():
            if "base" in spec["options"]:
                base = scratch / spec["options"]["base"]
                mine = measure(build_command("gguf", name, args.model, checkpoint, scratch / name, base))
                hand = measure([sys.executable, "-c", QUANTIZE_BY_HAND, gguf_file(base), scratch / f"hand-{name}.gguf",
                                spec["options"]["type"]])
                rows.append((f"quantize {spec['options']['type']}", mine, hand))
    print(f"{args.model}: phi-forge's build (with its Modelfile) vs llama.cpp's tools by hand")
    print_table(rows)


if __name__ == "__main__":
    main()
