"""The report a person reads at a glance: artifacts/report.html (self-contained, opens offline) and its Markdown
twin artifacts/report.md, made from the validation.json files only.

    python -m pipeline.report --html artifacts/report.html --markdown artifacts/report.md MODEL...

A matrix of models x artifacts (passed / failed / not run here, with the reason); size, bits per weight,
fidelity and speed per artifact; fidelity against size as a plot; what the validators found.
"""
import argparse
import html
import json
import math
from pathlib import Path

from pipeline.atomic import atomic_file

ARTIFACTS = Path("artifacts")
STATUS_WORDS = {"passed": "pass", "failed": "FAIL", "not_run": "not run here"}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def load(models: list[str], artifacts: Path = ARTIFACTS) -> list[dict]:
    return [json.loads(path.read_text()) for model in models
            for path in sorted((artifacts / model).glob("*/**/*.validation.json"))]


def number(value, form: str) -> str:
    return "-" if value is None else format(value, form)


def metrics(record: dict) -> dict[str, str]:
    """The per-artifact figures, formatted once for both twins (tests read them back)."""
    checks = record["checks"]
    task = checks["task"]
    return {"model": record["model"], "artifact": record["artifact"], "status": STATUS_WORDS[record["status"]],
            "MiB": number(record["size_bytes"] / 2**20 if record["size_bytes"] else None, ".2f"),
            "bits/weight": number(record.get("bits_per_weight"), ".2f"),
            "top-1": number(checks["teacher_forced_top1"].get("value"), ".4f"),
            "mean KL": number(checks["kl"].get("mean"), ".5f"),
            "ppl ratio": number(checks["perplexity"].get("ratio"), ".4f"),
            "task": f"{task['answered']}/{task['prompts']}" if "answered" in task else "-",
            "tokens/s": number(record.get("tokens_per_s"), ".1f")}


def target(record: dict) -> str:
    return record["artifact"].split("/")[0]


def mean_kl(record: dict):
    return record["checks"]["kl"].get("mean")


def recommended(records: list[dict]) -> set[tuple[str, str]]:
    """(model, artifact) of the one to publish per model, target and precision class: of those that passed, the
    lowest mean KL to the reference, a tie to the smaller file. A class where none passed has none."""
    passed = [r for r in records if r["status"] == "passed" and mean_kl(r) is not None]
    classes = grouped(((r["model"], target(r), r["precision"]), r) for r in passed)
    return {(best["model"], best["artifact"]) for _, group in classes
            for best in [min(group, key=lambda r: (mean_kl(r), r["size_bytes"]))]}


def grouped(items) -> list[tuple[str, list[str]]]:
    """(what, where) pairs -> each what once, with every where it holds for, in order of first appearance."""
    groups = {}
    for what, where in items:
        groups.setdefault(what, []).append(where)
    return list(groups.items())


def findings(records: list[dict]) -> list[str]:
    """What the validators found, each cause stated once with what it hits: the named deviations (with each
    artifact's numbers), what the checkpoint's files said that was corrected, explained tokenizer differences,
    what did not run here, and every failed check no named deviation accounts for."""
    deviations, checkpoint, tokenizer, stand_ins, unexplained = [], [], [], [], []
    for record in records:
        where = f"{record['model']} {record['artifact']}"
        for found in record.get("deviations", []):
            within = "" if record["checks"][found["check"]]["status"] == "failed" else ", within the thresholds"
            deviations.append((f"{found['id']}: {found['cause']}",
                               f"{where} ({found['numbers'] or found['check']}{within})"))
        checkpoint += [(f"{f['id']}: {f['cause']}", record["model"]) for f in record.get("checkpoint_findings", [])]
        parity = record["checks"]["tokenizer_parity"]
        explained = {d["explained"] for d in parity.get("differences", []) if d.get("explained")}
        tokenizer += [(f"tokenizer differs from HF's, explained: {e}", where) for e in sorted(explained)]
        stand_ins += [(f"not run here: {item}", where) for item in record.get("not_run", [])
                      if record["status"] != "not_run"]
        unexplained += [f"{where}: {name} failed, unexplained: {record['checks'][name]['reason']}"
                        for name in record.get("unexplained", [])]
    lines = [f"{what} Hits: {', '.join(wheres)}." for what, wheres in grouped(deviations)]
    lines += [f"{what} Models: {', '.join(dict.fromkeys(wheres))}." for what, wheres in grouped(checkpoint)]
    lines += [f"{what}. Artifacts: {', '.join(wheres)}." for what, wheres in grouped(tokenizer + stand_ins)]
    return lines + unexplained


def unexplained_count(records: list[dict]) -> int:
    return sum(len(r.get("unexplained", [])) for r in records)


def matrix(records: list[dict]) -> tuple[list[str], list[str], dict]:
    models = list(dict.fromkeys(r["model"] for r in records))
    artifacts = list(dict.fromkeys(r["artifact"] for r in records))
    return models, artifacts, {(r["model"], r["artifact"]): r for r in records}


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in lines) + "\n"


def markdown(records: list[dict]) -> str:
    models, artifacts, cells = matrix(records)
    reasons, matrix_rows = [], []
    for model in models:
        row = [model]
        for artifact in artifacts:
            record = cells.get((model, artifact))
            if record is None:
                row.append("")
                continue
            word = STATUS_WORDS[record["status"]]
            if record.get("reason"):
                reasons.append(f"{model} {artifact}: {record['reason']}")
                word += f" [{len(reasons)}]"
            row.append(word)
        matrix_rows.append(row)
    figures = [metrics(r) for r in records] or [{"artifact": "none"}]
    return ("# phi-forge report\n\n" + summary_line(records) + "\n\n## Models x artifacts\n\n"
            + markdown_table(["model", *artifacts], matrix_rows)
            + "".join(f"\n[{i}] {reason}" for i, reason in enumerate(reasons, 1))
            + "\n\n## Size, fidelity, speed\n\n"
            + markdown_table(list(figures[0]), [list(f.values()) for f in figures])
            + "\nFidelity against size is plotted in report.html.\n\n## What the validators found\n\n"
            + "".join(f"- {item}\n" for item in findings(records)))


def summary_line(records: list[dict]) -> str:
    counts = {status: sum(r["status"] == status for r in records) for status in STATUS_WORDS}
    return (f"{len(records)} artifacts of {len({r['model'] for r in records})} models: {counts['passed']} passed, "
            f"{counts['failed']} failed, {counts['not_run']} not run here; {unexplained_count(records)} failed "
            f"checks no named deviation explains. Numbers are against each model's float32 PyTorch reference.")


def plot(records: list[dict]) -> str:
    """Inline SVG: mean KL (log scale) against bits per weight, one colour per target."""
    points = [(r["bits_per_weight"], r["checks"]["kl"]["mean"], r) for r in records
              if r.get("bits_per_weight") and r["checks"]["kl"].get("mean") is not None]
    if not points:
        return "<p>No artifact has both a size and a KL to plot.</p>"
    width, height, pad = 720, 360, 60
    xs = [p[0] for p in points]
    ys = [math.log10(max(p[1], 1e-6)) for p in points]
    x0, x1 = 0, max(xs) * 1.05
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys)) + (min(ys) == max(ys))
    targets = list(dict.fromkeys(p[2]["artifact"].split("/")[0] for p in points))

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - 2 * pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 2 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="mean KL against bits per weight">',
             f'<line x1="{pad}" y1="{height - pad}" x2="{width - pad}" y2="{height - pad}" stroke="#333"/>',
             f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{height - pad}" stroke="#333"/>',
             f'<text x="{width / 2}" y="{height - 15}" text-anchor="middle">bits per weight</text>',
             f'<text x="15" y="{height / 2}" transform="rotate(-90 15 {height / 2})" text-anchor="middle">'
             f'mean KL to the reference (log10)</text>']
    for tick in range(y0, y1 + 1):
        parts.append(f'<text x="{pad - 8}" y="{sy(tick) + 4}" text-anchor="end" font-size="11">1e{tick}</text>')
    for tick in range(0, int(x1) + 1, 4):
        parts.append(f'<text x="{sx(tick)}" y="{height - pad + 16}" text-anchor="middle" font-size="11">'
                     f'{tick}</text>')
    for (x, _, record), y in zip(points, ys):
        colour = COLOURS[targets.index(record["artifact"].split("/")[0]) % len(COLOURS)]
        label = html.escape(f"{record['model']} {record['artifact']}: {x:.2f} bits, KL {10 ** y:.2g}")
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{colour}" fill-opacity="0.7">'
                     f'<title>{label}</title></circle>')
    for index, target in enumerate(targets):
        parts.append(f'<circle cx="{width - pad - 90}" cy="{pad + 16 * index}" r="5" '
                     f'fill="{COLOURS[index % len(COLOURS)]}"/><text x="{width - pad - 80}" '
                     f'y="{pad + 16 * index + 4}" font-size="12">{html.escape(target)}</text>')
    return "\n".join(parts + ["</svg>"])


STYLE = """body{font-family:system-ui,sans-serif;margin:2em;color:#222}table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:4px 8px;font-size:13px;vertical-align:top}th{background:#f3f3f3}
.passed{background:#d8f0d8}.failed{background:#f6d5d5}.not_run{background:#eee;color:#555}
.why{font-size:11px;color:#444;max-width:22em}"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_report(records: list[dict]) -> str:
    models, artifacts, cells = matrix(records)
    rows = []
    for model in models:
        row = f"<tr><th>{html.escape(model)}</th>"
        for artifact in artifacts:
            record = cells.get((model, artifact))
            if record is None:
                row += "<td></td>"
                continue
            why = f'<div class="why">{html.escape(record["reason"])}</div>' if record.get("reason") else ""
            row += f'<td class="{record["status"]}">{STATUS_WORDS[record["status"]]}{why}</td>'
        rows.append(row + "</tr>")
    header = "".join(f"<th>{html.escape(a)}</th>" for a in artifacts)
    figures = [metrics(r) for r in records] or [{"artifact": "none"}]
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>phi-forge report</title>"
            f"<style>{STYLE}</style></head><body><h1>phi-forge report</h1><p>{html.escape(summary_line(records))}"
            f"</p><h2>Models x artifacts</h2><table><tr><th>model</th>{header}</tr>{''.join(rows)}</table>"
            "<h2>Size, fidelity, speed</h2>" + html_table(list(figures[0]), [list(f.values()) for f in figures])
            + "<h2>Fidelity against size</h2>" + plot(records) + "<h2>What the validators found</h2><ul>"
            + "".join(f"<li>{html.escape(item)}</li>" for item in findings(records)) + "</ul></body></html>\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", required=True, type=Path)
    parser.add_argument("--markdown", required=True, type=Path)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("models", nargs="+")
    args = parser.parse_args(argv)
    records = load(args.models, args.artifacts)
    for path, text in ((args.markdown, markdown(records)), (args.html, html_report(records))):
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    print(summary_line(records))


if __name__ == "__main__":
    main()
