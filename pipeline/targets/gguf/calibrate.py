"""The GGUF target's calibration stage: llama.cpp's importance matrix of one model. llama-imatrix runs the float
GGUF over the model's calibration text (pipeline.calibration) and sums, per weight column, the squared activations
the column meets; the calibrated artifacts' quantizer (build.py) weighs each column's rounding error by it.

    .envs/gguf/bin/python -m pipeline.targets.gguf.calibrate --checkpoint artifacts/<model>/checkpoint \\
        --base artifacts/<model>/gguf/F16 --out artifacts/<model>/gguf/calibration --threads 2

The folder holds imatrix.gguf, calibration.txt (the exact text) and calibration.json (what the text was made from,
its sha256, the chunks llama-imatrix used), which every calibrated artifact carries.
"""
import argparse
import json
import subprocess
from pathlib import Path

import gguf

from pipeline import calibration
from pipeline.atomic import atomic_dir
from pipeline.cli import run_cli
from pipeline.targets.gguf.build import IMATRIX, gguf_file, tool

CHUNK_TOKENS = 512  # llama-imatrix's default context per chunk, which published imatrix quants use
TEXT = "calibration.txt"


def make(checkpoint_folder: Path, base: Path, out: Path, threads: int) -> Path:
    with atomic_dir(out) as scratch:
        text = calibration.text(checkpoint_folder)
        (scratch / TEXT).write_text(text)
        # special tokens parsed, as the chat template means them; the output matrix left out (its default)
        subprocess.run([tool("llama-imatrix"), "-m", gguf_file(base), "-f", scratch / TEXT, "-o", scratch / IMATRIX,
                        "-c", str(CHUNK_TOKENS), "--parse-special", "--no-ppl", "-t", str(threads)], check=True)
        chunks = int(gguf.GGUFReader(scratch / IMATRIX).fields["imatrix.chunk_count"].contents())
        (scratch / calibration.RECORD).write_text(json.dumps({
            "method": f"llama-imatrix over {chunks} chunks of {CHUNK_TOKENS} tokens of {Path(base).name}",
            "chunks": chunks, "chunk_tokens": CHUNK_TOKENS, "text": calibration.record(text)}, indent=2) + "\n")
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="the checkpoint folder (its chat template)")
    parser.add_argument("--base", required=True, type=Path, help="the float GGUF's artifact folder")
    parser.add_argument("--out", required=True, type=Path, help="the folder to write")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    print(make(args.checkpoint, args.base, args.out, args.threads))


if __name__ == "__main__":
    run_cli(main)
