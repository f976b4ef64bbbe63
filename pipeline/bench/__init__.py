"""Benchmarks: wall time and peak memory of a command, side by side with a baseline run in the same script.

Each target has `python -m pipeline.targets.<target>.bench` (run in its toolchain's environment), which times
phi-forge's build of each artifact against the upstream tool run by hand on the same checkpoint and prints the
figures with their ratio; `--by-hand-only --json` gives the by-hand figures alone, as `pipeline.bench.scale` reads
them. A target's bench.py supplies only `by_hand(checkpoint, spec, out, base)`: the commands a person would run.
Numbers are printed, never asserted.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pipeline import recipes


def measure(command: list, env: dict | None = None, cwd=None) -> dict:
    """Run a command to completion; its wall time and the peak resident memory of it and its children."""
    # stderr to a file, not a pipe: wait4 reads nothing while it waits, and a tool that writes more than a pipe
    # holds (k_quant's progress bar) would stop there
    with tempfile.TemporaryFile() as log:
        started = time.perf_counter()
        process = subprocess.Popen([str(c) for c in command], cwd=cwd, env={**os.environ, **(env or {})},
                                   stdout=subprocess.DEVNULL, stderr=log)
        _, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        log.seek(0)
        stderr = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed:\n{stderr[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


def measure_all(commands: list[list]) -> dict:
    """Commands run one after another: their summed wall time and the highest peak."""
    figures = [measure(command) for command in commands]
    return {"wall_s": sum(f["wall_s"] for f in figures), "peak_rss_mb": max(f["peak_rss_mb"] for f in figures)}


def build_command(target: str, artifact: str, model: str, checkpoint, out, base=None) -> list:
    """phi-forge's one builder CLI, as the workflow calls it."""
    return [sys.executable, "-m", "pipeline.build", "--target", target, "--artifact", artifact, "--recipe", model,
            "--checkpoint", checkpoint, "--out", out, *(["--base", base] if base else [])]


def print_table(rows: list[tuple[str, dict, dict]]):
    """rows: (what, phi-forge's figures, the baseline's figures)."""
    print(f"{'':28} {'phi-forge':>19} {'by hand':>19} {'ratio':>13}")
    print(f"{'':28} {'wall s':>9} {'peak MB':>9} {'wall s':>9} {'peak MB':>9} {'wall':>6} {'peak':>6}")
    for what, ours, theirs in rows:
        print(f"{what:28} {ours['wall_s']:9.2f} {ours['peak_rss_mb']:9.0f} {theirs['wall_s']:9.2f} "
              f"{theirs['peak_rss_mb']:9.0f} {ours['wall_s'] / theirs['wall_s']:6.2f} "
              f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:6.2f}")


def target_main(target: str, by_hand, argv=None):
    """A target's bench: each artifact (bases first) built by phi-forge and by hand into a scratch folder."""
    parser = argparse.ArgumentParser(description=sys.modules["__main__"].__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="fixture-phi-3-mini-4k", help="its recipe")
    parser.add_argument("--checkpoint", type=Path, help="default: artifacts/<model>/checkpoint")
    parser.add_argument("--artifacts", nargs="+", help="default: every one of the target's for the model")
    parser.add_argument("--by-hand-only", action="store_true", help="time the tools by hand, not phi-forge")
    parser.add_argument("--json", action="store_true", help="print one JSON object per artifact")
    args = parser.parse_args(argv)
    recipe = recipes.load_supported(args.model)
    checkpoint = args.checkpoint or Path("artifacts") / args.model / "checkpoint"
    wanted = set(args.artifacts or [s["name"] for s in recipes.artifacts(recipe) if s["target"] == target])
    for name in list(wanted):  # and the artifacts they are made from
        while name := recipes.artifact(recipe, target, name)["options"].get("base"):
            wanted.add(name)
    specs = [recipes.artifact(recipe, target, name) for name in sorted(wanted)]
    # A calibrated artifact needs its target's calibration stage (rule calibrate): the scale benchmark measures
    # those through the workflow.
    specs = [s for s in specs if not s["refused"] and not s["calibrated"]]
    rows = []
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as scratch:  # beside the artifacts: no /tmp of model size
        ours, hand = Path(scratch) / "phi-forge", Path(scratch) / "by-hand"
        hand.mkdir()
        for spec in sorted(specs, key=lambda s: "base" in s["options"]):
            base = spec["options"].get("base")
            figures = {"by_hand": measure_all(by_hand(checkpoint, spec, hand / spec["name"],
                                                      base and hand / base))}
            if not args.by_hand_only:
                figures["phi_forge"] = measure(build_command(target, spec["name"], args.model, checkpoint,
                                                             ours / spec["name"], base and ours / base))
            rows.append((spec["name"], figures))
    for name, figures in rows:
        if args.json:
            print(json.dumps({"artifact": f"{target}/{name}", **figures}))
    if not args.json and not args.by_hand_only:
        print(f"{args.model}: phi-forge's {target} build vs the tool by hand")
        print_table([(name[-28:], figures["phi_forge"], figures["by_hand"]) for name, figures in rows])
