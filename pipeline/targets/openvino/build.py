"""OpenVINO IR for openvino-genai: `optimum-cli export openvino` (optimum-intel) with NNCF weight compression,
plus tokenizer and detokenizer IR from openvino-tokenizers, in one folder `openvino_genai.LLMPipeline` opens.

An artifact's `options` in recipes/targets.yaml are optimum-cli's own flags without the dashes
(`weight-format: int4`, `group-size: 128`, `awq: true` ...); the command run is printed first.
"""
import os
import shlex
import subprocess
import sys
from pathlib import Path

from pipeline.checkpoint import write_generation_config

TASK = "text-generation-with-past"  # optimum-cli cannot infer the task from a local folder


def flags(options: dict) -> list[str]:
    """{'awq': True, 'group-size': 128, 'sym': False} -> ['--awq', '--group-size', '128']."""
    args = []
    for name, value in options.items():
        if value is True:
            args.append(f"--{name}")
        elif value is not False:
            args += [f"--{name}", str(value)]
    return args


def command(checkpoint: Path, options: dict, out: Path) -> list[str]:
    cli = Path(sys.executable).with_name("optimum-cli")
    return [str(cli), "export", "openvino", "--model", str(checkpoint), "--task", TASK, *flags(options), str(out)]


def build(checkpoint: Path, spec: dict, facts: dict, out: Path, base: Path | None = None, threads: int = 1):
    args = command(checkpoint, spec["options"], out)
    print(shlex.join(args), flush=True)
    # `threads` bounds torch's intra-op threads (optimum's trace, NNCF's GPTQ), as Snakemake's OMP_NUM_THREADS does
    # in the workflow; the statistics NNCF collects run in OpenVINO, which takes the CPU's cores
    subprocess.run(args, check=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
    write_generation_config(checkpoint, out, facts)  # openvino-genai stops on its eos list
