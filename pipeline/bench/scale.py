"""The scale benchmark: a checkpoint of a published model's exact shape (a `size: hub` fixture recipe: random bf16
weights, the hub's config, shards and vocabulary size) through the workflow's own stages at several depths of the
same width. Each stage's cost is read from Snakemake's own benchmark files (wall and CPU seconds, max_rss, MB
written), beside the same converters run by hand on the same checkpoint (each target's bench, --by-hand-only), and
the bytes each artifact keeps on disk. Validated artifacts add their decode speed beside the bound of this machine's
memory bandwidth, measured at the start of the run (pipeline.machine). Figures are printed and written as JSON;
nothing is asserted.

    .venv/bin/python -m pipeline.bench.scale --recipe scale-phi-3-mini-4k --layers 4 8 32 \\
        --artifacts gguf/F16 gguf/Q4_K_M mlx/4bit --out bench/scale-phi-3-mini-4k.json

Each depth runs as its own model, <recipe>-<layers>-layers, in a copy of this repository under --work (default .scale/,
sharing .envs), whose artifacts are deleted after that depth's figures are read unless --keep. --through says how
far each artifact goes: build (default), validate (with the reference) or publish (manifest and release notes);
--profile which validation profile the reference and the validations run (pipeline/prompts.py PROFILES).
Snakemake samples a job's memory every 0.5 s for its first 30 s and every 30 s after, so its max_rss can miss a
short peak; by hand is measured exactly (ru_maxrss).
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline import machine, recipes
from pipeline.prompts import PROFILES

ROOT = recipes.ROOT
SNAKEMAKE = Path(sys.executable).parent / "snakemake"
STAGE_FILES = {"build": lambda model, a: f"artifacts/{model}/{a}",
               "validate": lambda model, a: f"artifacts/{model}/{a}.validation.json",
               "publish": lambda model, a: f"artifacts/{model}/RELEASE.md"}
# Published checkpoints to predict from the fit: bf16 bytes of their weights (hub model pages).
PREDICT = {"Phi-3-medium-4k-instruct": 27.92e9, "Phi-3.5-MoE-instruct": 83.87e9}


def work_copy(work: Path) -> Path:
    """This repository's tracked files under `work`, with its toolchain environments."""
    repo = work / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (repo / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, repo / name)
    if not (repo / ".envs").exists():
        (repo / ".envs").symlink_to(ROOT / ".envs")
    return repo


def depth_recipe(repo: Path, recipe: dict, layers: int, artifacts: list[str]) -> str:
    """<recipe>-<layers>-layers: the recipe at that depth, making only the benchmarked artifacts."""
    name = f"{recipe['name']}-{layers}-layers"
    chosen = {target: [a.split("/", 1)[1] for a in artifacts if a.split("/", 1)[0] == target]
              for target in recipes.targets()["targets"]}
    variant = {**recipe, "name": name, "fixture": {**recipe["fixture"], "layers": layers}, "targets": chosen}
    (repo / "recipes" / "models" / f"{name}.yaml").write_text(yaml.safe_dump(variant, sort_keys=False))
    return name


def stage_figures(repo: Path, model: str) -> dict:
    """Snakemake's benchmark of each of the model's jobs, by stage: fixture, pull, gguf/F16, validate/gguf/F16 ..."""
    folder = repo / "benchmarks" / model
    figures = {}
    for path in sorted(folder.rglob("*.tsv")):
        row = next(csv.DictReader(path.open(), delimiter="\t"))
        figures[path.relative_to(folder).with_suffix("").as_posix()] = {
            "wall_s": float(row["s"]), "cpu_s": float(row["cpu_time"]), "max_rss_mb": float(row["max_rss"]),
            "written_mb": float(row["io_out"])}
    return figures


def by_hand(repo: Path, model: str, artifacts: list[str]) -> dict:
    """Each target's bench, by hand only, on the same checkpoint, in the target's environment."""
    table = recipes.targets()["targets"]
    figures = {}
    for target in dict.fromkeys(a.split("/", 1)[0] for a in artifacts):
        names = [a.split("/", 1)[1] for a in artifacts if a.split("/", 1)[0] == target]
        python = repo / ".envs" / table[target]["toolchain"] / "bin" / "python"
        run = subprocess.run([python, "-m", f"pipeline.targets.{target}.bench", "--model", model, "--artifacts",
                              *names, "--by-hand-only", "--json"], cwd=repo, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(repo)})
        figures.update({row["artifact"]: row["by_hand"] for row in map(json.loads, run.stdout.splitlines())})
        if run.returncode:  # a tool by hand that failed: its last line, for the figures' table
            figures.update({f"{target}/{name}": {"error": run.stderr.strip().splitlines()[-1]} for name in names
                            if f"{target}/{name}" not in figures})
    return figures


def disk_bytes(folder: Path) -> int:
    """Bytes on disk, each hard-linked file counted once (as `du` counts)."""
    seen, total = set(), 0
    for path in folder.rglob("*"):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            if (stat.st_dev, stat.st_ino) not in seen:
                seen.add((stat.st_dev, stat.st_ino))
                total += stat.st_blocks * 512
    return total


def decode_speeds(folder: Path, artifacts: list[str], bandwidth_gb_s: float) -> dict:
    """Each validated artifact's decode tokens/s beside the bandwidth bound over its bytes."""
    speeds = {}
    for artifact in artifacts:
        path = folder / f"{artifact}.validation.json"
        if path.exists():
            record = json.loads(path.read_text())
            bound = machine.decode_bound(bandwidth_gb_s, record["size_bytes"]) if record["size_bytes"] else None
            speeds[artifact] = {"status": record["status"], "size_bytes": record["size_bytes"],
                                "tokens_per_s": record.get("tokens_per_s"),
                                "decode_tokens_per_s": record.get("decode_tokens_per_s"),
                                "bound_tokens_per_s": bound}
    return speeds


def run_depth(repo: Path, recipe: dict, layers: int, artifacts: list[str], through: str, cores: int,
              profile: str, host: dict, hand: bool) -> dict:
    model = depth_recipe(repo, recipe, layers, artifacts)
    for stale in (repo / "artifacts" / model, repo / "benchmarks" / model):  # a previous run's
        shutil.rmtree(stale, ignore_errors=True)
    targets = list(dict.fromkeys(STAGE_FILES[through](model, a) for a in artifacts))
    # --keep-going: a stage that fails (a converter killed for memory) is a figure too, its job's log says why
    # --resources: jobs run side by side only while their declared mem_mb fits the machine's memory
    subprocess.run([SNAKEMAKE, "--cores", str(cores), "--keep-going", "--resources",
                    f"mem_mb={int(host['ram_gb'] * 1024)}", "--config", f"models=[{model}]",
                    f"validation_profile={profile}", "--", *targets],
                   cwd=repo, capture_output=True)
    folder = repo / "artifacts" / model
    index = json.loads((folder / "checkpoint" / "model.safetensors.index.json").read_text())
    return {"layers": layers, "weights_bytes": index["metadata"]["total_size"],
            "stages": stage_figures(repo, model), "by_hand": by_hand(repo, model, artifacts) if hand else {},
            "disk_bytes": {"model": disk_bytes(folder), **{a: disk_bytes(folder / a) for a in artifacts}},
            "decode": decode_speeds(folder, artifacts, host["memory_bandwidth_gb_s"])}


def fit(depths: list[dict], stage: str, field: str) -> tuple[float, float] | None:
    """Least squares a + b x GB of weights over the depths that measured the stage."""
    points = [(d["weights_bytes"] / 1e9, d["stages"][stage][field]) for d in depths if stage in d["stages"]]
    if len(points) < 2:
        return None
    n, sx, sy = len(points), sum(x for x, _ in points), sum(y for _, y in points)
    sxx, sxy = sum(x * x for x, _ in points), sum(x * y for x, y in points)
    slope = (n * sxy - sx * sy) / (n * sxx - sx * sx)
    if slope < 0:  # flat within the noise (a converter that streams): the largest figure, not less for more
        return max(y for _, y in points), 0.0
    return (sy - slope * sx) / n, slope


def growth(depths: list[dict]) -> dict:
    """Per stage: wall time and peak memory as a + b x GB of weights, and what that predicts for PREDICT."""
    stages = dict.fromkeys(stage for d in depths for stage in d["stages"])
    result = {}
    for stage in stages:
        lines = {field: fit(depths, stage, field) for field in ("wall_s", "max_rss_mb")}
        if all(lines.values()):
            result[stage] = {f"{field}_per_gb": {"base": round(a, 2), "per_gb": round(b, 2)}
                             for field, (a, b) in lines.items()}
            result[stage]["predicted"] = {name: {field: round(a + b * size / 1e9) for field, (a, b) in lines.items()}
                                          for name, size in PREDICT.items()}
    return result


def against_hand(ours: dict, hand: dict) -> str:
    if not hand:
        return ""
    if "error" in hand:
        return f"by hand failed: {hand['error'][:60]}"
    return (f"{hand['wall_s']:9.1f} {hand['peak_rss_mb']:7.0f} {ours['wall_s'] / hand['wall_s']:5.2f} "
            f"{ours['max_rss_mb'] / hand['peak_rss_mb']:5.2f}")


def print_depth(depth: dict):
    print(f"\n{depth['layers']} layers, {depth['weights_bytes'] / 1e9:.2f} GB of bf16 weights")
    print(f"{'stage':40} {'wall s':>8} {'cpu s':>8} {'max_rss MB':>10} {'written MB':>10} {'by hand s':>9} "
          f"{'MB':>7} {'time':>5} {'mem':>5}")
    for stage, f in depth["stages"].items():
        print(f"{stage:40} {f['wall_s']:8.1f} {f['cpu_s']:8.1f} {f['max_rss_mb']:10.0f} {f['written_mb']:10.0f} "
              + against_hand(f, depth["by_hand"].get(stage)))
    print("disk: " + ", ".join(f"{name} {size / 1e9:.2f} GB" for name, size in depth["disk_bytes"].items()))
    for name, speed in depth["decode"].items():
        print(f"decode {name}: {speed['decode_tokens_per_s'] or 0:.2f} tokens/s, bound "
              f"{speed['bound_tokens_per_s'] or 0:.2f} ({speed['status']})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="scale-phi-3-mini-4k", help="a fixture recipe with size: hub")
    parser.add_argument("--layers", nargs="+", type=int, required=True, help="depths to run, e.g. 4 8 32")
    parser.add_argument("--artifacts", nargs="+", required=True, help="target/artifact, e.g. gguf/F16 mlx/4bit")
    parser.add_argument("--through", choices=list(STAGE_FILES), default="build")
    parser.add_argument("--profile", choices=list(PROFILES), default="full", help="the validation profile")
    parser.add_argument("--by-hand", action=argparse.BooleanOptionalAction, default=True,
                        help="also run each converter by hand (--no-by-hand: the workflow's stages only)")
    parser.add_argument("--cores", type=int, default=os.cpu_count())
    parser.add_argument("--work", type=Path, default=ROOT / ".scale")
    parser.add_argument("--keep", action="store_true", help="keep each depth's artifacts")
    parser.add_argument("--out", type=Path, help="the figures as JSON (e.g. bench/<recipe>.json)")
    args = parser.parse_args(argv)
    recipe = recipes.load_supported(args.recipe)
    if recipe.get("fixture", {}).get("size") != "hub":
        raise SystemExit(f"phi-forge: error: {args.recipe} is not a real-shape recipe (fixture size: hub)")
    repo = work_copy(args.work)
    host = machine.measure(threads=2)  # before any stage runs, on an idle machine; 2: the validations' threads
    depths = []
    for layers in args.layers:
        depths.append(run_depth(repo, recipe, layers, args.artifacts, args.through, args.cores, args.profile, host,
                                args.by_hand))
        print_depth(depths[-1])
        if not args.keep:
            shutil.rmtree(repo / "artifacts", ignore_errors=True)
    result = {"recipe": args.recipe, "through": args.through, "profile": args.profile, "machine": host,
              "depths": depths, "growth": growth(depths)}
    print("\ngrowth per GB of weights, and predictions:\n" + json.dumps(result["growth"], indent=1))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
