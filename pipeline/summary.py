"""The one screen a run ends with: per model, where it came from and how its reference did; every artifact's
verdict; what the publish gate would let be pushed.

    python -m pipeline.summary --out artifacts/summary.md fixture-phi-3-mini-4k fixture-phi-3-mini-128k \
        --validations artifacts/fixture-phi-3-mini-4k/gguf/F16.validation.json ...
"""
import argparse
import json
from pathlib import Path

from pipeline import report
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
    corrected = ", ".join(f["id"] for f in reference["facts"].get("findings", [])) or "-"
    return [model, provenance["recipe_source"], revision, f"{size_mb:.1f} MB",
            f"{summary['answered']}/{chats}", f"{summary['stopped']}/{chats}", f"{summary['median_top1_margin']:.2f}",
            perplexity, corrected]


def markdown(header: list[str], rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(cells) + " |" for cells in [header, ["---"] * len(header), *rows]) + "\n"


def table(models: list[str], artifacts: Path = ARTIFACTS) -> str:
    header = ["model", "source", "revision", "weights", "task answered", "stopped at end token",
              "median top-1 margin (nats)", "perplexity", "checkpoint findings"]
    return markdown(header, [row(model, artifacts) for model in models])


def artifact_matrix(validations: list[Path]) -> str:
    """Artifacts down, models across, each cell the validation status: one screen for the whole run."""
    records = report.load(validations)
    if not records:
        return ""
    models, names, cells = report.matrix(records)
    rows = [[name] + [report.STATUS_WORDS[cells[(m, name)]["status"]] if (m, name) in cells else ""
                      for m in models] for name in names]
    return (markdown(["artifact", *models], rows) + "\n" + report.summary_line(records)
            + " Why each failed, and every number: artifacts/report.html (or report.md).\n")


def push_plan(models: list[str], artifacts: Path = ARTIFACTS) -> str:
    """Per model, what the publish gate let through, which `python -m pipeline.push` would upload, and what not."""
    rows = []
    for model in models:
        manifest = json.loads((artifacts / model / "manifest.json").read_text())
        built = {name: a["folder"].split("/", 1)[0] for name, a in manifest["artifacts"].items() if a["folder"]}
        held = [name for name, where in built.items() if where == "held"]
        rows.append([model, f"{len(built) - len(held)} of {len(built)}", manifest["namespace"],
                     ", ".join(held) or "-"])
    return markdown(["model", "would be pushed", "to namespace",
                     "held back (failed, not run on its device, or validated under the ci profile)"], rows)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("models", nargs="+")
    parser.add_argument("--validations", nargs="*", type=Path, default=[], help="the run's validation.json files")
    args = parser.parse_args(argv)
    text = "# phi-forge summary\n\nFloat32 PyTorch reference per model.\n\n" + table(args.models, args.artifacts)
    artifacts = artifact_matrix(args.validations)
    if artifacts:
        text += "\nEvery artifact, validated in its own runtime against the reference.\n\n" + artifacts
        text += ("\nThe publish gate; `python -m pipeline.push artifacts/<model>` shows what it would upload.\n\n"
                 + push_plan(args.models, args.artifacts))
    with atomic_file(args.out) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
