"""One model's matrix at one depth, read from the scale benchmark's JSON files: the bytes each artifact keeps on
disk and its decode speed beside the bound of its run's machine (each run measured its own bandwidth). Where runs
measured the same artifact, the newest counts. Artifacts of the matrix that no run measured are named, not
guessed. Nothing is run.

    .venv/bin/python -m pipeline.bench.matrix bench/scale-phi-3-mini-4k*.json [--layers 32]
"""
import argparse
import json
from pathlib import Path

from pipeline import recipes


def runs(paths: list[Path], layers: int) -> dict[str, list[tuple[str, Path, dict]]]:
    """Each recipe's depths of `layers` in the scale benchmark's format, oldest run first."""
    found = {}
    for path in paths:
        result = json.loads(path.read_text())
        for depth in result.get("depths", []):  # files of another format (a stopped run's notes) have none
            if depth["layers"] == layers:
                found.setdefault(result["recipe"], []).append((result["machine"].get("measured") or "", path, depth))
    return {recipe: sorted(entries, key=lambda entry: entry[0]) for recipe, entries in found.items()}


def newest(entries: list[tuple[str, Path, dict]], field: str) -> dict[str, tuple[Path, object]]:
    """artifact -> (the newest run's file, its figure) for one field of a depth (disk_bytes or decode)."""
    figures = {}
    for _, path, depth in entries:
        figures.update({name: (path, value) for name, value in depth.get(field, {}).items() if name != "model"})
    return figures


def table(recipe_name: str, entries: list) -> tuple[list[str], list[str]]:
    """The markdown rows, and the matrix's artifacts no run measured."""
    disk, decode = newest(entries, "disk_bytes"), newest(entries, "decode")
    matrix = [f"{a['target']}/{a['name']}" for a in recipes.artifacts(recipes.load_supported(recipe_name))
              if not a["refused"]]
    rows = ["| artifact | GB on disk | decode tokens/s | bound tokens/s | of bound | run |", "|---|---|---|---|---|---|"]
    for name in sorted(set(disk) | set(decode), key=lambda n: (n not in matrix, n)):
        size = f"{disk[name][1] / 1e9:.2f}" if name in disk else "-"
        speed = decode.get(name, (None, {}))[1]
        rate, bound = speed.get("decode_tokens_per_s"), speed.get("bound_tokens_per_s")
        share = f"{rate / bound:.0%}" if rate and bound else "-"
        source = (decode.get(name) or disk[name])[0].name
        rows.append(f"| {name}{'' if name in matrix else ' (not in the matrix)'} | {size} | "
                    f"{f'{rate:.2f}' if rate else '-'} | {f'{bound:.1f}' if bound else '-'} | {share} | {source} |")
    measured = [name for name in matrix if name in disk]
    rows.append(f"| **the matrix: {len(measured)} of {len(matrix)} artifacts measured** | "
                f"**{sum(disk[n][1] for n in measured) / 1e9:.1f}** | | | | |")
    return rows, [name for name in matrix if name not in disk]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path, help="the scale benchmark's JSON files (bench/*.json)")
    parser.add_argument("--layers", type=int, default=32, help="the depth to read (default 32)")
    args = parser.parse_args(argv)
    found = runs(args.files, args.layers)
    if not found:
        raise SystemExit(f"phi-forge: error: none of these files has a {args.layers}-layer run of the scale "
                         "benchmark; pass bench/scale-*.json or another --layers")
    for recipe_name, entries in found.items():
        rows, missing = table(recipe_name, entries)
        print(f"\n{recipe_name}, {args.layers} layers\n\n" + "\n".join(rows))
        if missing:
            print(f"\nnot measured at this depth: {', '.join(missing)}")


if __name__ == "__main__":
    main()
