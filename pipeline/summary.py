"""The one-screen table a run ends with: per model, where it came from and how its reference did.

    python -m pipeline.summary --out artifacts/summary.md fixture-phi-3-mini-4k fixture-phi-3-mini-128k
"""
import argparse
import json
from pathlib import Path

from pipeline.atomic import atomic_file

ARTIFACTS = Path("artifacts")


def row(model: str, artifacts: Path) -> list[str]:
    provenance = json.loads((artifacts / model / "provenance.json").read_text())
    reference = json.loads((artifacts / model / "reference" / "reference.json").read_text())
    summary = reference["summary"]
    revision = provenance.get("revision_resolved", "local")[:12]
    size_mb = sum(f["size"] for name, f in provenance["files"].items() if name.endswith(".safetensors")) / 2**20
    chats = summary["chat_prompts"]
    perplexity = ", ".join(f"{name} {value:.2f}" for name, value in summary["perplexity"].items())
    return [model, provenance["recipe_source"], revision, f"{size_mb:.1f} MB",
            f"{summary['answered']}/{chats}", f"{summary['stopped']}/{chats}", perplexity]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows]) + "\n"


def table(models: list[str], artifacts: Path = ARTIFACTS) -> str:
    header = ["model", "source", "revision", "weights", "task answered", "stopped at end token", "perplexity"]
    return markdown(header, [row(model, artifacts) for model in models])


def number(value, form: str) -> str:
    return "-" if value is None else format(value, form)


def validation_row(record: dict) -> list[str]:
    checks = record["checks"]
    top1, kl, ppl = (checks[name] for name in ("teacher_forced_top1", "kl", "perplexity"))
    task = checks["task"]
    status = record["status"] + (f": {record['reason']}" if record.get("reason") else "")
    return [record["model"], record["artifact"], status[:160], number(record["size_bytes"] / 2**20, ".1f"),
            number(record.get("bits_per_weight"), ".2f"), number(top1.get("value"), ".3f"),
            number(kl.get("mean"), ".4f"), number(ppl.get("ratio"), ".3f"),
            f"{task['answered']}/{task['prompts']}" if "answered" in task else "-",
            number(record.get("tokens_per_s"), ".0f")]


def validation_table(models: list[str], artifacts: Path = ARTIFACTS) -> str:
    records = [json.loads(path.read_text()) for model in models
               for path in sorted((artifacts / model).rglob("*.validation.json"))]
    header = ["model", "artifact", "status", "MB", "bits/weight", "top-1", "mean KL", "ppl ratio", "task",
              "tokens/s"]
    return markdown(header, [validation_row(record) for record in records]) if records else ""


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    text = "# phi-forge summary\n\nFloat32 PyTorch reference per model.\n\n" + table(args.models, args.artifacts)
    artifacts = validation_table(args.models, args.artifacts)
    if artifacts:
        text += "\nEvery artifact, validated in its own runtime against the reference.\n\n" + artifacts
    with atomic_file(args.out) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
