"""This machine as the report and the benchmarks state it: CPU, cores, memory, and memory bandwidth measured here.

Decoding one token reads every weight once, so bandwidth / bytes of weights is the fastest a CPU can decode: the
report sets each artifact's measured decode speed beside that bound.

    python -m pipeline.machine --threads 2 --out artifacts/machine.json
"""
import argparse
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from pipeline.atomic import atomic_file
from pipeline.cli import run_cli
from pipeline.resources import DECODE_THREADS

SAMPLE_BYTES = 2**30  # far beyond any cache here, so the sums read memory


def facts() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "unknown")
    memory_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                         if line.startswith("MemTotal")))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(memory_kb / 2**20, 1)}


def memory_bandwidth(threads: int, repeats: int = 5) -> float:
    """GB/s read: `threads` threads each summing its share of a 1 GiB array (numpy releases the GIL), best of
    `repeats`; the decode runtimes read their weights with as many threads."""
    parts = np.array_split(np.ones(SAMPLE_BYTES // 8, dtype=np.int64), threads)
    best = float("inf")
    with ThreadPoolExecutor(threads) as pool:
        for _ in range(repeats):
            started = time.perf_counter()
            list(pool.map(np.sum, parts))
            best = min(best, time.perf_counter() - started)
    return SAMPLE_BYTES / best / 1e9


def decode_bound(bandwidth_gb_s: float, weight_bytes: int) -> float:
    """Tokens/s if decoding did nothing but read the weights once per token. The artifact's bytes stand for the
    weights read: the embedding table is in them though a token reads one row of it (about 3% of Phi-3-mini)."""
    return bandwidth_gb_s * 1e9 / weight_bytes


def measure(threads: int) -> dict:
    return {**facts(), "threads": threads, "memory_bandwidth_gb_s": round(memory_bandwidth(threads), 1),
            "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=DECODE_THREADS, help="as many as the validations decode with")
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    machine = measure(args.threads)
    with atomic_file(args.out) as tmp:
        tmp.write_text(json.dumps(machine, indent=1) + "\n")
    print(f"{machine['cpu']}, {machine['cores']} cores, {machine['ram_gb']} GB: "
          f"{machine['memory_bandwidth_gb_s']} GB/s read with {args.threads} threads")


if __name__ == "__main__":
    run_cli(main)
