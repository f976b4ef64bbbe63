"""Benchmarks: wall time and peak memory of a command, side by side with a baseline run in the same script.

Each target has `python -m pipeline.targets.<target>.bench`, which times phi-forge's build against the upstream
tool run by hand on the same input and prints the figures with their ratio. Numbers are printed, never asserted.
"""
import os
import subprocess
import sys
import time


def measure(command: list[str], env: dict | None = None, cwd=None) -> dict:
    """Run a command to completion; its wall time and the peak resident memory of it and its children."""
    started = time.perf_counter()
    process = subprocess.Popen([str(c) for c in command], cwd=cwd, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    stderr = process.stderr.read().decode(errors="replace")
    process.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{command} failed:\n{stderr[-2000:]}")
    return {"wall_s": wall, "peak_rss_mb": usage.ru_maxrss / 1024}  # ru_maxrss is in KiB on Linux


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
