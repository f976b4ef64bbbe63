"""What an ops team publishes: per-artifact folders with model cards, per-model manifests that verify, and the
report, whose numbers must be the validation.json files' own and which must render in a browser."""
import hashlib
import html
import math
import re
import shutil
import struct
import zlib

import pytest
import yaml

from conftest import (ARTIFACTS, FIXTURES, NAMESPACE, ROOT, SNAKEMAKE, publish_folder, read_json, run,
                      validation_files)
from pipeline import recipes

PYTHON = SNAKEMAKE.parent / "python"


@pytest.mark.parametrize("model", FIXTURES)
def test_manifest_checksums_match_the_files(pipeline_run, model):
    manifest = read_json(ARTIFACTS / model / "manifest.json")
    assert manifest["files"], "nothing was published"
    for name, listed in manifest["files"].items():
        data = (ARTIFACTS / model / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == listed["sha256"] and len(data) == listed["size"], name
    sums = (ARTIFACTS / model / "SHA256SUMS").read_text().splitlines()
    assert sums == [f"{f['sha256']}  {name}" for name, f in manifest["files"].items()]
    assert manifest["provenance"] == read_json(ARTIFACTS / model / "provenance.json")
    recipe = (ROOT / "recipes" / "models" / f"{model}.yaml").read_bytes()
    assert manifest["recipe_sha256"][f"recipes/models/{model}.yaml"] == hashlib.sha256(recipe).hexdigest()
    specs = recipes.artifacts(recipes.load(model))
    assert set(manifest["artifacts"]) == {f"{s['target']}/{s['name']}" for s in specs}
    assert {s["toolchain"] for s in specs} <= set(manifest["toolchains"])
    for name, summary in manifest["artifacts"].items():
        record = read_json(ARTIFACTS / model / f"{name}.validation.json")
        assert summary["status"] == record["status"] and summary["size_bytes"] == record["size_bytes"]


def test_verify_catches_a_file_changed_after_the_run(pipeline_run, tmp_path):
    model = FIXTURES[0]
    copy = tmp_path / model
    for where in ("publish", "held"):
        shutil.copytree(ARTIFACTS / model / where, copy / where)
    shutil.copy2(ARTIFACTS / model / "manifest.json", copy / "manifest.json")
    verify = [PYTHON, "-m", "pipeline.manifest", "verify", copy]
    assert "every file matches" in run(verify).stdout
    changed = sorted((copy / "publish").rglob("*.json"))[0]
    changed.write_text(changed.read_text() + " ")
    result = run(verify, check=False)
    assert result.returncode == 1
    assert f"{changed.relative_to(copy).as_posix()}: changed since the manifest was written" in result.stdout
    assert "phi-forge: error: 1 file(s)" in result.stderr


@pytest.mark.parametrize("model", FIXTURES)
def test_each_artifact_is_published_or_held_with_its_files_validation_and_card(pipeline_run, model):
    """The gate: publish/ holds what passed on the device it is built for, held/ the rest, each card says why."""
    provenance = read_json(ARTIFACTS / model / "provenance.json")
    manifest = read_json(ARTIFACTS / model / "manifest.json")
    for spec in recipes.artifacts(recipes.load(model)):
        name = f"{spec['target']}/{spec['name']}"
        if spec["refused"]:
            assert not any((ARTIFACTS / model / where / name).exists() for where in ("publish", "held"))
            continue
        folder = publish_folder(ARTIFACTS / model, name)
        where = folder.relative_to(ARTIFACTS / model).parts[0]
        built = ARTIFACTS / model / spec["target"] / spec["name"]
        assert {p.relative_to(built) for p in built.rglob("*") if p.is_file() and not p.name.startswith(".")} \
            <= {p.relative_to(folder) for p in folder.rglob("*")}
        record = read_json(folder / "validation.json")
        stand_in = spec["device"] != "cpu"  # this machine has no GPU: a cuda or dml graph ran on the CPU provider
        assert (where == "publish") == (record["status"] == "passed" and not stand_in), name
        assert manifest["artifacts"][name]["folder"] == folder.relative_to(ARTIFACTS / model).as_posix()
        card = (folder / "README.md").read_text()
        front = yaml.safe_load(card.split("---\n")[1])
        assert front["license"] == recipes.load(model)["license"]
        assert front["pipeline_tag"] == "text-generation" and front["library_name"]
        assert ("base_model" in front) == (provenance.get("kind") == "hub")
        assert f"validation: **{record['status']}" in card
        assert "## Run it" in card and "## Validation" in card
        assert f"hf download {NAMESPACE}/{model}-{name.replace('/', '-')} " in card
        assert ("Held back" in card) == (where == "held")
        if stand_in:
            assert all(item in card for item in record["not_run"])  # what ran in its place


@pytest.mark.parametrize("model", FIXTURES)
def test_release_notes_say_what_passed_what_was_held_and_why(pipeline_run, model):
    notes = (ARTIFACTS / model / "RELEASE.md").read_text()
    manifest = read_json(ARTIFACTS / model / "manifest.json")
    source = manifest["provenance"].get("recipe_source", manifest["provenance"].get("source"))
    assert f"Source: `{source}`" in notes and manifest["phi_forge_version"] in notes
    published = [name for name, a in manifest["artifacts"].items() if (a["folder"] or "").startswith("publish/")]
    assert f"{len(published)} of {len(manifest['artifacts'])} artifacts may be published" in notes
    held = notes.split("## Held back or not built, and why", 1)[1].split("## Checksums", 1)[0]
    for name, summary in manifest["artifacts"].items():
        assert (f"- {name}: " in held) == (name not in published), name
        if summary.get("reason") and name not in published:
            assert summary["reason"] in held
    assert "SHA256SUMS" in notes
    for toolchain, pins in manifest["toolchains"].items():
        assert f"- {toolchain}: " in notes


def parse_markdown_table(text, first_header, column=""):
    """The first table whose header starts with `first_header` and has `column`, as dicts per row."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    start = next(i for i, line in enumerate(lines) if line.startswith(f"| {first_header} |") and column in line)
    header = [cell.strip() for cell in lines[start].strip("|").split("|")]
    rows = []
    for line in lines[start + 2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) != len(header):
            break
        rows.append(dict(zip(header, cells)))
    return rows


def test_report_numbers_are_the_validation_files_numbers(pipeline_run):
    rows = parse_markdown_table((ARTIFACTS / "report.md").read_text(), "model", "| top-1 |")
    rows = {(row["model"], row["artifact"]): row for row in rows}
    records = [read_json(path) for model in FIXTURES for path in validation_files(model)]
    assert len(rows) == len(records) > 0
    machine = read_json(ARTIFACTS / "machine.json")
    bandwidth = machine["memory_bandwidth_gb_s"]
    assert bandwidth > 0 and machine["threads"] == 2
    assert f"{bandwidth} GB/s read with 2 threads" in (ARTIFACTS / "report.md").read_text()
    for record in records:
        row = rows[(record["model"], record["artifact"])]
        checks = record["checks"]
        assert row["status"] == {"passed": "pass", "failed": "FAIL", "not_run": "not run here"}[record["status"]]
        for column, value, form in (("top-1", checks["teacher_forced_top1"].get("value"), ".4f"),
                                    ("mean KL", checks["kl"].get("mean"), ".5f"),
                                    ("ppl ratio", checks["perplexity"].get("ratio"), ".4f"),
                                    ("bits/weight", record.get("bits_per_weight"), ".2f")):
            assert row[column] == ("-" if value is None else format(value, form)), (record["artifact"], column)
        decode, size = record.get("decode_tokens_per_s"), record["size_bytes"]
        assert row["decode tokens/s"] == ("-" if decode is None else format(decode, ".1f"))
        # the weights read once per token, at the bandwidth of as many threads as the validation decoded with
        same_threads = record.get("threads", machine["threads"]) == machine["threads"]  # as the report reads it
        bound = bandwidth * 1e9 / size if size and same_threads else None
        assert row["bound tokens/s"] == ("-" if bound is None else format(bound, ".0f"))
        assert row["of bound"] == (format(decode / bound, ".0%") if decode and bound else "-")
    page = (ARTIFACTS / "report.html").read_text()
    for record in records:
        if record.get("reason"):
            assert html.escape(record["reason"]) in page


def png_colours(path) -> int:
    """Distinct colours in an 8-bit RGB/RGBA PNG, decoded by hand (the test environment has no imaging library)."""
    data = path.read_bytes()
    width, height, depth, colour_type = struct.unpack(">IIBB", data[16:26])
    assert depth == 8 and colour_type in (2, 6)
    chunks, at = b"", 8
    while at < len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        if kind == b"IDAT":
            chunks += data[at + 8:at + 8 + length]
        at += 12 + length
    raw, channels = zlib.decompress(chunks), 3 if colour_type == 2 else 4
    stride = width * channels
    previous, colours = bytearray(stride), set()
    for row in range(height):
        kind, line = raw[row * (stride + 1)], bytearray(raw[row * (stride + 1) + 1:(row + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 255
        colours.update(bytes(line[i:i + 3]) for i in range(0, stride, channels * 7))
        previous = line
    return len(colours)


def recommended_by_the_stated_rule(records) -> set:
    """(model, artifact) per model, target and precision class: of the artifacts that passed on the device they are
    built for, the lowest mean KL, a tie to the smaller file (the report's legend states it; computed here without
    the report's code)."""
    classes = {}
    for record in records:
        if record["status"] == "passed" and record["device"]["used"].lower().startswith(record["device"]["intended"]):
            key = (record["model"], record["artifact"].split("/")[0], record["precision"])
            classes.setdefault(key, []).append(record)
    return {(model, min(group, key=lambda r: (r["checks"]["kl"]["mean"], r["size_bytes"]))["artifact"])
            for (model, _, _), group in classes.items()}


# Appended to a copy of the report: opens every <details> (reasons, the numbers table), then writes the page's
# width and its viewport's into the DOM for --dump-dom to carry out.
MEASURE_WIDTH = ("<script>document.querySelectorAll('details').forEach(d => d.open = true);"
                 "const page = document.documentElement;"
                 "page.dataset.widths = page.scrollWidth + ' ' + page.clientWidth;</script>")


def test_report_renders_in_headless_chromium(pipeline_run, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "the report's render test needs Chromium: apt-get install chromium (.ci/run installs it)"
    page = (ARTIFACTS / "report.html").read_text()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the report must open offline"
    headless = [chromium, "--headless", "--no-sandbox", "--disable-gpu"]
    shot = tmp_path / "report.png"
    run([*headless, "--hide-scrollbars", "--window-size=1280,1600", f"--screenshot={shot}",
         (ARTIFACTS / "report.html").as_uri()])
    assert png_colours(shot) > 20  # status colours, text and the plot's points: not a blank page
    measured = tmp_path / "report-measured.html"
    measured.write_text(page.replace("</body>", MEASURE_WIDTH + "</body>"))
    dom = run([*headless, "--window-size=1280,900", "--dump-dom", measured.as_uri()]).stdout
    scroll_width, client_width = map(int, re.search(r'data-widths="(\d+) (\d+)"', dom).groups())
    assert 1200 < client_width <= 1280, "not measured in a 1280 px window"
    assert scroll_width <= client_width, f"the report is {scroll_width} px wide in a {client_width} px window"
    records = [read_json(p) for m in FIXTURES for p in validation_files(m)]
    assert dom.count("<circle") >= len([r for r in records if r.get("bits_per_weight")])
    shown = {(model, artifact): "\u2605" in entry
             for model, section in re.findall(r'<section data-model="([^"]+)">(.*?)</section>', dom, re.S)
             for artifact, entry in re.findall(r'<li [^>]*data-artifact="([^"]+)"[^>]*>(.*?)</li>', section, re.S)}
    assert set(shown) == {(r["model"], r["artifact"]) for r in records}, "each artifact in its model's table"
    assert {where for where, starred in shown.items() if starred} == recommended_by_the_stated_rule(records)


def test_report_markdown_marks_the_artifact_to_publish(pipeline_run):
    records = [read_json(p) for m in FIXTURES for p in validation_files(m)]
    recommended = recommended_by_the_stated_rule(records)
    text = (ARTIFACTS / "report.md").read_text()
    for model in FIXTURES:
        section = text.split(f"\n## {model}\n", 1)[1].split("\n## ", 1)[0]
        marked = [artifact for m, artifact in recommended if m == model]
        assert section.count("\u2605 ") == len(marked), model
        assert all(f"\u2605 {artifact.rsplit('/', 1)[-1]} pass" in section for artifact in marked), model


def test_report_sets_each_tools_int4_settings_side_by_side(pipeline_run):
    """Per target with more than one int4 artifact for the CPU, each one's KL and size per model, and a setting
    built for every model against the lowest KL of those, from the validation files."""
    records = [r for m in FIXTURES for r in map(read_json, validation_files(m))
               if r["precision"] == "int4" and r["device"]["intended"] == "cpu" and r["checks"]["kl"].get("mean")]
    text = (ARTIFACTS / "report.md").read_text()
    by_target = {}
    for record in records:
        by_target.setdefault(record["artifact"].split("/")[0], {})[record["model"], record["artifact"]] = record
    compared = {target: cells for target, cells in by_target.items() if len({a for _, a in cells}) > 1}
    assert {"onnx", "gguf"} <= set(compared)  # rtn and hqq; the K- and IQ-types
    for target, cells in compared.items():
        section = text.split(f"\n## {target}: int4 settings\n", 1)[1].split("\n## ", 1)[0]
        rows = {row["setting"]: row for row in parse_markdown_table(section, "setting")}
        models, settings = {m for m, _ in cells}, {a for _, a in cells}
        complete = [a for a in settings if all((m, a) in cells for m in models)]
        lowest = {m: min(cells[m, a]["checks"]["kl"]["mean"] for a in complete) for m in models}
        for (model, artifact), record in cells.items():
            row = rows[artifact.split("/", 1)[1]]
            assert row[model] == f"KL {record['checks']['kl']['mean']:.2g}, {record['size_bytes'] / 2**20:.2f} MiB"
        for artifact in settings:
            row = rows[artifact.split("/", 1)[1]]
            if artifact not in complete:
                assert row["KL x lowest"] == "-"
                continue
            ratios = [cells[m, artifact]["checks"]["kl"]["mean"] / lowest[m] for m in models]
            assert float(row["KL x lowest"]) == pytest.approx(math.prod(ratios) ** (1 / len(ratios)), abs=0.006)
            assert float(row["KL x lowest"]) >= 1.0


def test_snakemake_report_works(pipeline_run, tmp_path):
    out = tmp_path / "snakemake-report.html"
    run([SNAKEMAKE, "--report", out])
    assert out.stat().st_size > 10_000 and "phi-forge" in out.read_text(errors="replace")


def test_the_run_ends_with_a_one_screen_summary(pipeline_run):
    printed = run([SNAKEMAKE, "--cores", "1", "--forcerun", "summary", "artifacts/summary.md"]).stdout
    summary = (ARTIFACTS / "summary.md").read_text()
    assert summary in printed
    matrix = parse_markdown_table(summary, "artifact")
    assert list(matrix[0])[1:] == FIXTURES
    assert len(summary.splitlines()) < 60
