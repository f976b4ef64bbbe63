"""The float32 reference's load (pipeline.reference.load: each tensor read with pread) against transformers'
own from_pretrained (memory-mapped) on the same checkpoint: wall time and peak memory of each, in fresh processes.

    .envs/torch/bin/python -m pipeline.bench.reference_load artifacts/<model>/checkpoint
"""
import argparse
import sys

from pipeline.bench import measure, print_table

LOADS = {
    "pipeline.reference.load": "from pipeline import reference; reference.load(Path(sys.argv[1]))",
    "from_pretrained": "import torch, transformers; transformers.AutoModelForCausalLM.from_pretrained("
                       "Path(sys.argv[1]), dtype=torch.float32)",
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint")
    args = parser.parse_args(argv)
    figures = {name: measure([sys.executable, "-c", f"import sys; from pathlib import Path; {code}", args.checkpoint])
               for name, code in LOADS.items()}
    print_table([("float32 load", figures["pipeline.reference.load"], figures["from_pretrained"])])


if __name__ == "__main__":
    main()
