"""Export time and peak memory: phi-forge's OpenVINO build against `optimum-cli export openvino` run by hand
with the same flags, on the same checkpoint.

    .envs/openvino/bin/python -m pipeline.targets.openvino.bench [--model fixture-phi-3-mini-4k] [--artifacts int4]
"""
import sys
from pathlib import Path

from pipeline.bench import target_main
from pipeline.targets.openvino.build import TASK, flags


def by_hand(checkpoint: Path, spec: dict, out: Path, base: Path | None) -> list[list]:
    optimum_cli = Path(sys.executable).parent / "optimum-cli"
    return [[optimum_cli, "export", "openvino", "--model", checkpoint, "--task", TASK, *flags(spec["options"]), out]]


if __name__ == "__main__":
    target_main("openvino", by_hand)
