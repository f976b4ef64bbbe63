"""The report a person reads at a glance: artifacts/report.html (self-contained, opens offline) and its Markdown
twin artifacts/report.md, made from the validation.json files only.

    python -m pipeline.report --html artifacts/report.html --markdown artifacts/report.md \
        [--machine artifacts/machine.json] artifacts/<model>/<target>/<artifact>.validation.json...

Per model, one table of targets x precision classes: each artifact's status and mean KL, the reason it failed or
did not run one click away, and the one to publish per target and class marked (`recommended`); beside it,
fidelity against size as a plot. Then what the validators found, by cause; per target, its int4 settings for the
CPU side by side (config `alternatives` adds each tool's other settings); and every number per artifact, its decode
speed beside the fastest this machine's memory bandwidth allows (pipeline.machine).
"""
import argparse
import html
import json
import math
from pathlib import Path

from pipeline.atomic import atomic_file
from pipeline.machine import decode_bound
from pipeline.prompts import PROFILES
from pipeline.publish import PUBLISH, destination
from pipeline.resources import ONE_CORE_BELOW_MB

STATUS_WORDS = {"passed": "pass", "failed": "FAIL", "not_run": "not run here"}
COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
PRECISIONS = ["float", "int8", "int4", "int3"]  # validation.schema.yaml's classes, the most faithful first
MARK = "\u2605"  # the recommended artifact's star
LEGEND = (f"{MARK} marks the artifact to publish per target and precision class: of those that passed on the device "
          "they are built for, the lowest mean KL to the float32 reference, a tie to the smaller file; a class where "
          "none passed has none. 'pass, held': passed on a stand-in for its device (a CUDA or DirectML graph on the "
          "CPU provider), so the publish gate holds it back. KL is that mean KL per token, lower is closer.")


def load(validations: list[Path]) -> list[dict]:
    """The run's validation files, those its rule declares: not whatever an earlier run left beside them."""
    return [json.loads(Path(path).read_text()) for path in validations]


def number(value, form: str) -> str:
    return "-" if value is None else format(value, form)


def metrics(record: dict, machine: dict | None = None) -> dict[str, str]:
    """The per-artifact figures, formatted once for both twins (tests read them back). The bound only beside a
    decode speed measured with as many threads as the machine's bandwidth (a fixture's validation runs on one)."""
    checks = record["checks"]
    task = checks["task"]
    decode = record.get("decode_tokens_per_s")
    comparable = machine and record["size_bytes"] and record.get("threads", machine["threads"]) == machine["threads"]
    bound = decode_bound(machine["memory_bandwidth_gb_s"], record["size_bytes"]) if comparable else None
    return {"model": record["model"], "artifact": record["artifact"], "status": STATUS_WORDS[record["status"]],
            "MiB": number(record["size_bytes"] / 2**20 if record["size_bytes"] else None, ".2f"),
            "bits/weight": number(record.get("bits_per_weight"), ".2f"),
            "top-1": number(checks["teacher_forced_top1"].get("value"), ".4f"),
            "mean KL": number(checks["kl"].get("mean"), ".5f"),
            "ppl ratio": number(checks["perplexity"].get("ratio"), ".4f"),
            "task": f"{task['answered']}/{task['prompts']}" if "answered" in task else "-",
            "tokens/s": number(record.get("tokens_per_s"), ".1f"), "decode tokens/s": number(decode, ".1f"),
            "bound tokens/s": number(bound, ".0f"), "of bound": number(decode / bound if decode and bound else None,
                                                                      ".0%")}


def numbers(records: list[dict], machine: dict | None) -> list[dict[str, str]]:
    """The numbers table's rows, decode speed beside the machine's bound where its figures are given."""
    return [metrics(r, machine) for r in records] or [{"artifact": "none"}]


def target(record: dict) -> str:
    return record["artifact"].split("/")[0]


def mean_kl(record: dict):
    return record["checks"]["kl"].get("mean")


def short_name(record: dict) -> str:
    return record["artifact"].rsplit("/", 1)[-1]


def kl_text(record: dict) -> str:
    return "" if mean_kl(record) is None else f"KL {mean_kl(record):.2g}"


def recommended(records: list[dict]) -> set[tuple[str, str]]:
    """(model, artifact) of the one to publish per model, target and precision class: of those the publish gate lets
    through (passed on the device they are built for), the lowest mean KL to the reference, a tie to the smaller
    file. A class where none passed has none."""
    passed = [r for r in records if destination(r) == PUBLISH and mean_kl(r) is not None]
    classes = grouped(((r["model"], target(r), r["precision"]), r) for r in passed)
    return {(best["model"], best["artifact"]) for _, group in classes
            for best in [min(group, key=lambda r: (mean_kl(r), r["size_bytes"]))]}


def passed_on_stand_in(record: dict) -> bool:
    """Passed, but not on the device it is built for: the publish gate holds it back."""
    return record["status"] == "passed" and destination(record) != PUBLISH


def verdict(record: dict) -> str:
    return STATUS_WORDS[record["status"]] + (", held" if passed_on_stand_in(record) else "")


def grouped(items) -> list[tuple]:
    """(what, where) pairs -> each what once, with every where it holds for, in order of first appearance."""
    groups = {}
    for what, where in items:
        groups.setdefault(what, []).append(where)
    return list(groups.items())


def findings(records: list[dict]) -> list[tuple[str, list[tuple[str, str]]]]:
    """What the validators found, each cause once with the (model, artifact and its numbers) it hits: the named
    deviations, what the checkpoint's files said that was corrected (the model alone), explained tokenizer
    differences, what did not run here, and every failed check no named deviation accounts for."""
    deviations, checkpoint, tokenizer, stand_ins, unexplained = [], [], [], [], []
    for record in records:
        model, artifact = record["model"], record["artifact"]
        for found in record.get("deviations", []):
            within = "" if record["checks"][found["check"]]["status"] == "failed" else ", within the thresholds"
            deviations.append((f"{found['id']}: {found['cause']}",
                               (model, f"{artifact} ({found['numbers'] or found['check']}{within})")))
        checkpoint += [(f"{f['id']}: {f['cause']}", (model, "")) for f in record.get("checkpoint_findings", [])]
        parity = record["checks"]["tokenizer_parity"]
        explained = {d["explained"] for d in parity.get("differences", []) if d.get("explained")}
        tokenizer += [(f"tokenizer differs from HF's, explained: {e}", (model, artifact)) for e in sorted(explained)]
        stand_ins += [(f"not run here: {item}", (model, artifact)) for item in record.get("not_run", [])
                      if record["status"] != "not_run"]
        unexplained += [(f"{name} failed, unexplained: {record['checks'][name]['reason']}", (model, artifact))
                        for name in record.get("unexplained", [])]
    causes = grouped(deviations) + [(what, list(dict.fromkeys(hits))) for what, hits in grouped(checkpoint)]
    return causes + grouped(tokenizer + stand_ins + unexplained)


def unexplained_count(records: list[dict]) -> int:
    return sum(len(r.get("unexplained", [])) for r in records)


def matrix(records: list[dict]) -> tuple[list[str], list[str], dict]:
    models = list(dict.fromkeys(r["model"] for r in records))
    artifacts = list(dict.fromkeys(r["artifact"] for r in records))
    return models, artifacts, {(r["model"], r["artifact"]): r for r in records}


def grid(records: list[dict]) -> tuple[list[str], list[str], dict]:
    """One model's targets, its precision classes, and each (target, class)'s artifacts, the largest first."""
    cells = {}
    for record in sorted(records, key=lambda r: -r["size_bytes"]):
        cells.setdefault((target(record), record["precision"]), []).append(record)
    classes = [c for c in PRECISIONS if any(r["precision"] == c for r in records)]
    return list(dict.fromkeys(target(r) for r in records)), classes, cells


def counts(records: list[dict]) -> str:
    number_of = {status: sum(r["status"] == status for r in records) for status in STATUS_WORDS}
    return f"{number_of['passed']} passed, {number_of['failed']} failed, {number_of['not_run']} not run here"


def summary_line(records: list[dict]) -> str:
    profiles = sorted({r["profile"] for r in records} - {"full"})
    return (f"{len(records)} artifacts of {len({r['model'] for r in records})} models: {counts(records)}; "
            f"{unexplained_count(records)} failed checks no named deviation explains. Numbers are against each "
            "model's float32 PyTorch reference." + "".join(
                f" Validated under the {name} profile ({PROFILES[name]}): every check ran, on fewer prompts; "
                "the publish gate holds these back." for name in profiles))


def speed_note(machine: dict | None) -> str:
    if not machine:
        return "No machine.json: decode speed is not set beside a bound."
    return (f"Decode tokens/s (past each generation's first token) beside the bound of this machine, "
            f"{machine['cpu']} with {machine['cores']} cores: {machine['memory_bandwidth_gb_s']} GB/s read with "
            f"{machine['threads']} threads (pipeline.machine, {machine['measured']}) over the artifact's bytes, "
            "read once per token; none beside a validation that decoded with fewer threads (a checkpoint under "
            f"{ONE_CORE_BELOW_MB} MB is validated on one core).")


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in lines) + "\n"


def by_model(records: list[dict]) -> list[tuple[str, list[dict]]]:
    return grouped((r["model"], r) for r in records)


def markdown_model(records: list[dict], marked: set) -> str:
    """One model's targets x classes, each artifact as `[star] name status KL [n]`, reasons as numbered notes."""
    targets, classes, cells = grid(records)
    reasons, rows = [], []
    for name in targets:
        row = [name]
        for precision in classes:
            entries = []
            for record in cells.get((name, precision), []):
                star = f"{MARK} " if (record["model"], record["artifact"]) in marked else ""
                entry = f"{star}{short_name(record)} {verdict(record)} {kl_text(record)}".rstrip()
                if record.get("reason"):
                    reasons.append(f"{record['artifact']}: {record['reason']}")
                    entry += f" [{len(reasons)}]"
                entries.append(entry)
            row.append("; ".join(entries))
        rows.append(row)
    notes = "".join(f"- [{i}] {reason}\n" for i, reason in enumerate(reasons, 1))
    return (f"## {records[0]['model']}\n\n{counts(records)}\n\n" + markdown_table(["target", *classes], rows)
            + (f"\n{notes}" if notes else "") + "\n")


def settings(records: list[dict], precision: str = "int4") -> list[tuple[str, list[str], list[list[str]]]]:
    """Per target that made more than one artifact of the class for the CPU (config `alternatives` adds each tool's
    other settings): a table of its settings x models, each cell the mean KL and the size in MiB. A setting measured
    on every model of the table is also set against the lowest KL of such settings per model: the geometric mean
    over the models of its KL and size ratios."""
    tables = []
    for name, group in grouped((target(r), r) for r in records
                               if r["precision"] == precision and r["device"]["intended"] == "cpu"):
        cell = {(r["model"], r["artifact"]): r for r in group if mean_kl(r) is not None and r["size_bytes"]}
        models = list(dict.fromkeys(model for model, _ in cell))
        artifacts = list(dict.fromkeys(artifact for _, artifact in cell))
        if len(artifacts) < 2:
            continue
        complete = [a for a in artifacts if all((m, a) in cell for m in models)]
        best = {m: min((cell[m, a] for a in complete), key=mean_kl) for m in models} if complete else {}
        rows = []
        for artifact in artifacts:
            hits = [(cell[m, artifact], best[m]) for m in models] if artifact in complete else []
            ratios = [number(math.exp(sum(math.log(f(r) / f(b)) for r, b in hits) / len(hits)) if hits else None,
                             ".2f") for f in (mean_kl, lambda r: r["size_bytes"])]
            rows.append([artifact.split("/", 1)[1], *(
                f"{kl_text(cell[m, artifact])}, {cell[m, artifact]['size_bytes'] / 2**20:.2f} MiB"
                if (m, artifact) in cell else "-" for m in models), *ratios])
        tables.append((name, models, rows))
    return tables


SETTINGS_NOTE = ("Each tool's int4 settings for the CPU side by side: mean KL to the reference and size; then, for "
                 "a setting measured on every model here, its KL and size against the lowest-KL such setting of each "
                 "model (1.00: that one), the geometric mean over the models.")


def settings_header(models: list[str]) -> list[str]:
    return ["setting", *models, "KL x lowest", "size x lowest's"]


def markdown(records: list[dict], machine: dict | None = None) -> str:
    marked = recommended(records)
    figures = numbers(records, machine)
    return ("# phi-forge report\n\n" + summary_line(records) + "\n\n" + LEGEND + " Fidelity against size is "
            "plotted in report.html.\n\n" + "".join(markdown_model(group, marked) for _, group in by_model(records))
            + "## What the validators found, by cause\n\n"
            + "".join(f"- {cause.rstrip('.')}. Hits: {', '.join(f'{m} {a}'.strip() for m, a in hits)}.\n"
                      for cause, hits in findings(records))
            + "".join(f"\n## {name}: int4 settings\n\n{SETTINGS_NOTE}\n\n"
                      + markdown_table(settings_header(models), rows) for name, models, rows in settings(records))
            + "\n## Size, fidelity, speed\n\n" + speed_note(machine) + "\n\n"
            + markdown_table(list(figures[0]), [list(f.values()) for f in figures]))


def plot(records: list[dict], marked: set, targets: list[str]) -> str:
    """Inline SVG of one model: mean KL (log) against bits per weight (log2), a colour per target (the same in
    every model's plot), failed points hollow, the recommended ones ringed and named."""
    points = [r for r in records if r.get("bits_per_weight") and mean_kl(r) is not None]
    if not points:
        return "<p>No artifact of this model has both a size and a KL to plot.</p>"
    width, height, pad, key = 540, 300, 50, 110  # key: the legend's strip on the right
    xs = [math.log2(r["bits_per_weight"]) for r in points]
    ys = [math.log10(max(mean_kl(r), 1e-7)) for r in points]  # a bit-exact artifact (KL 0) sits on the floor
    x0, x1 = math.floor(min(xs)), math.ceil(max(xs)) + (min(xs) == max(xs))
    y0, y1 = math.floor(min(ys)), math.ceil(max(ys)) + (min(ys) == max(ys))

    def sx(x):
        return pad + (x - x0) / (x1 - x0) * (width - key - pad)

    def sy(y):
        return height - pad - (y - y0) / (y1 - y0) * (height - 1.5 * pad)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" '
             f'height="{height}" font-size="11" role="img" aria-label="mean KL against bits per weight">',
             f'<path d="M{pad} {pad / 2}V{height - pad}H{width - key}" fill="none" stroke="#333"/>',
             f'<text x="{(width - key + pad) / 2}" y="{height - 12}" text-anchor="middle">bits per weight</text>',
             f'<text x="12" y="{height / 2}" transform="rotate(-90 12 {height / 2})" text-anchor="middle">'
             'mean KL to the reference</text>']
    parts += [f'<text x="{pad - 6}" y="{sy(k) + 4:.1f}" text-anchor="end">1e{k}</text>' for k in range(y0, y1 + 1)]
    parts += [f'<text x="{sx(k):.1f}" y="{height - pad + 15}" text-anchor="middle">{2 ** k}</text>'
              for k in range(x0, x1 + 1)]
    labels = []  # the boxes of the names placed so far, for name_label
    for record, x, y in zip(points, xs, ys):
        colour = COLOURS[targets.index(target(record)) % len(COLOURS)]
        fill = colour if record["status"] == "passed" else "white"
        label = html.escape(f"{record['artifact']}: {record['bits_per_weight']:.2f} bits per weight, mean KL "
                            f"{mean_kl(record):.2g}, {STATUS_WORDS[record['status']]}")
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="{fill}" stroke="{colour}" '
                     f'stroke-width="2" fill-opacity="0.8"><title>{label}</title></circle>')
        if (record["model"], record["artifact"]) in marked:
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="9" fill="none" stroke="#222"/>'
                         + name_label(f"{MARK} {short_name(record)}", sx(x), sy(y), (pad + width - key) / 2, labels))
    shown = [t for t in targets if any(target(r) == t for r in points)]
    keys = [(f'fill="{COLOURS[targets.index(t) % len(COLOURS)]}"', t) for t in shown]
    keys += [('fill="white" stroke="#333" stroke-width="2"', "failed"), ('fill="none" stroke="#222"', "recommended")]
    for index, (style, name) in enumerate(keys):
        y = pad / 2 + 18 * index
        parts.append(f'<circle cx="{width - key + 20}" cy="{y}" r="5" {style}/>'
                     f'<text x="{width - key + 30}" y="{y + 4}">{html.escape(name)}</text>')
    return "\n".join(parts + ["</svg>"])


def name_label(name: str, x: float, y: float, middle: float, placed: list) -> str:
    """A point's name beside it, towards the plot's middle, moved down past names already placed (each a
    (left, right, y) box; 6 px a character at font size 11)."""
    left = x - 11 - 6 * len(name) if x > middle else x + 11
    y -= 6
    while any(abs(y - other_y) < 12 and left < other_right and other_left < left + 6 * len(name)
              for other_left, other_right, other_y in placed):
        y += 12
    placed.append((left, left + 6 * len(name), y))
    return f'<text x="{left:.1f}" y="{y:.1f}">{html.escape(name)}</text>'


STYLE = """body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1600px}
h2{margin:1.2em 0 .2em;border-top:2px solid #ddd;padding-top:.6em}p{margin:.3em 0}
table{border-collapse:collapse;margin:.6em 0}td,th{border:1px solid #ccc;padding:4px 6px;font-size:13px;
vertical-align:top;text-align:left;overflow-wrap:anywhere}th{background:#f3f3f3}
.glance{display:flex;flex-wrap:wrap;gap:1.5em;align-items:flex-start}.cells{flex:1 1 540px;min-width:0}
.cells table{table-layout:fixed;width:100%}.cells th:first-child{width:5.5em}svg{max-width:100%;height:auto}
ul.entries{list-style:none;margin:0;padding:0}ul.entries li{margin:2px 0}summary{cursor:pointer}
.mark{display:inline-block;width:1.1em;color:#b8860b}.recommended{font-weight:600}
.badge{border-radius:3px;padding:0 4px;font-size:11px;font-weight:normal;white-space:nowrap}
.badge.passed{background:#cdebcd}.badge.failed{background:#f3c2c2;color:#8a0000}.badge.not_run{background:#e4e4e4}
.kl{color:#555;font-size:12px;font-weight:normal;white-space:nowrap}.why{font-size:12px;color:#444;margin:2px 0 4px}
.hits{font-size:12px;color:#444;padding-left:1.2em}.findings>li{margin:.5em 0}.legend{color:#444;font-size:13px}
summary h2{display:inline;border:0}details.numbers{border-top:2px solid #ddd;margin-top:1.2em;padding-top:.6em}"""


def html_table(header: list[str], rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def html_entry(record: dict, marked: set) -> str:
    """One artifact in its cell: mark, name, badge, KL; hover or click for why it failed or did not run."""
    is_marked = (record["model"], record["artifact"]) in marked
    line = (f'<span class="mark">{MARK if is_marked else ""}</span>{html.escape(short_name(record))} '
            f'<span class="badge {record["status"]}">{verdict(record)}</span> '
            f'<span class="kl">{kl_text(record)}</span>')
    figures = metrics(record)
    reason = html.escape(record.get("reason") or ("; ".join(record["not_run"]) if passed_on_stand_in(record) else ""))
    hover = reason or html.escape(f"{record['artifact']}: {figures['MiB']} MiB, {figures['bits/weight']} bits/weight")
    attributes = (f'class="{"recommended" if is_marked else "artifact"}" '
                  f'data-artifact="{html.escape(record["artifact"])}" title="{hover}"')
    if reason:
        return f'<li {attributes}><details><summary>{line}</summary><div class="why">{reason}</div></details></li>'
    return f"<li {attributes}>{line}</li>"


def html_model(records: list[dict], marked: set, targets: list[str]) -> str:
    model_targets, classes, cells = grid(records)
    head = "".join(f"<th>{c}</th>" for c in ["target", *classes])
    rows = "".join(f"<tr><th>{html.escape(name)}</th>" + "".join(
        '<td><ul class="entries">' + "".join(html_entry(r, marked) for r in cells.get((name, c), [])) + "</ul></td>"
        for c in classes) + "</tr>" for name in model_targets)
    model = html.escape(records[0]["model"])
    return (f'<section data-model="{model}"><h2>{model}</h2><p>{counts(records)}</p><div class="glance">'
            f'<div class="cells"><table><tr>{head}</tr>{rows}</table></div>{plot(records, marked, targets)}'
            "</div></section>")


def html_findings(records: list[dict]) -> str:
    """Each cause, its name in bold, then one line per model it hits, naming the artifacts (and their numbers)."""
    items = []
    for cause, hits in findings(records):
        name, _, what = cause.partition(": ")
        lines = "".join(f"<li><b>{html.escape(model)}</b> {html.escape('; '.join(a for a in artifacts if a))}</li>"
                        for model, artifacts in grouped(hits))
        items.append(f'<li><b>{html.escape(name)}</b>: {html.escape(what)}<ul class="hits">{lines}</ul></li>')
    return "".join(items)


def html_report(records: list[dict], machine: dict | None = None) -> str:
    marked = recommended(records)
    targets = list(dict.fromkeys(target(r) for r in records))
    figures = numbers(records, machine)
    return ("<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>phi-forge report</title>"
            f"<style>{STYLE}</style></head><body><h1>phi-forge report</h1><p>{html.escape(summary_line(records))}"
            f'</p><p class="legend">{html.escape(LEGEND)} Hover over an artifact, or click one that failed or did '
            "not run, for why.</p>" + "".join(html_model(group, marked, targets) for _, group in by_model(records))
            + f'<h2>What the validators found, by cause</h2><ul class="findings">{html_findings(records)}</ul>'
            + "".join(f"<h2>{html.escape(name)}: int4 settings</h2><p>{html.escape(SETTINGS_NOTE)}</p>"
                      + html_table(settings_header(models), rows) for name, models, rows in settings(records))
            + "<details class=\"numbers\"><summary><h2>Size, fidelity, speed</h2></summary>"
            f"<p>{html.escape(speed_note(machine))}</p>"
            + html_table(list(figures[0]), [list(f.values()) for f in figures]) + "</details></body></html>\n")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--html", required=True, type=Path)
    parser.add_argument("--markdown", required=True, type=Path)
    parser.add_argument("--machine", type=Path, help="pipeline.machine's figures, for the decode-speed bound")
    parser.add_argument("validations", nargs="+", type=Path, help="the run's validation.json files")
    args = parser.parse_args(argv)
    records = load(args.validations)
    machine = json.loads(args.machine.read_text()) if args.machine else None
    for path, text in ((args.markdown, markdown(records, machine)), (args.html, html_report(records, machine))):
        with atomic_file(path) as tmp:
            tmp.write_text(text)
    print(summary_line(records))


if __name__ == "__main__":
    main()
