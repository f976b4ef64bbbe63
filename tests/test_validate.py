"""The one validator end to end, on a real runtime: transformers on the checkpoint itself, where nothing was
converted, must pass every check with the reference's own numbers; the same checkpoint declaring a wrong end token must fail and say why."""
import json
import shutil

import pytest

from conftest import ARTIFACTS, FIXTURES, ROOT, TORCH_PYTHON, run, validation_files
from pipeline import publish, recipes, task, validate, validation

MODEL = "fixture-phi-3-mini-4k"  # trained, with a prompt past its sliding window

VALIDATE_CHECKPOINT = """
import json, sys
from pathlib import Path
from pipeline import recipes, validate
model, folder, artifacts = sys.argv[1:4]
spec = {"target": "pytorch", "name": "fp32", "model": model, "runtime": "pytorch", "precision": "float",
        "device": "cpu", "options": {"dtype": "float32"},
        "thresholds": recipes.thresholds(recipes.load(model), "float"), "refused": None}
print(json.dumps(validate.validate_folder(Path(folder), Path(artifacts) / model / "checkpoint",
                                          Path(artifacts) / model / "reference", spec,
                                          adapter="pipeline.runtimes.pytorch")))
"""


def validate_checkpoint(folder, artifacts=ARTIFACTS) -> dict:
    out = run([TORCH_PYTHON, "-c", VALIDATE_CHECKPOINT, MODEL, folder, artifacts], cwd=ROOT).stdout
    record = json.loads(out.strip().splitlines()[-1])
    validation.validate_record(record)
    return record


def test_the_checkpoint_itself_passes_every_check(pipeline_run):
    record = validate_checkpoint(ARTIFACTS / MODEL / "checkpoint")
    checks = record["checks"]
    assert record["status"] == "passed", record.get("reason")
    assert checks["tokenizer_parity"]["mismatches"] == 0
    assert checks["stop"]["stopped"] == checks["stop"]["prompts"] == 12
    assert checks["greedy_agreement"]["exact"] == 12
    assert checks["teacher_forced_top1"]["value"] == 1.0
    assert checks["kl"]["mean"] < 1e-4
    assert checks["perplexity"]["ratio"] == pytest.approx(1, abs=1e-4)
    window = checks["long_context"]["prompts"]["long-past-sliding-window"]
    assert window["boundary"] == json.loads((ARTIFACTS / MODEL / "checkpoint" / "config.json").read_text())[
        "sliding_window"]
    assert record["bits_per_weight"] == pytest.approx(16, abs=0.5)  # bf16 weights plus the tokenizer files
    assert record["runtime"] == {"name": "transformers", "version": "5.24.0"}
    assert record["tokens_per_s"] > 0 and record["decode_tokens_per_s"] > 0
    assert record["profile"] == "full" and publish.destination(record) == publish.PUBLISH


def test_the_ci_profile_runs_every_check_on_one_chat_prompt_per_task_and_is_held(pipeline_run, tmp_path):
    """A reference made with --profile ci: one chat prompt of each task, each in another form, the passage and the
    long prompts as in the full profile; a validation against it runs every check, says its profile, and the
    publish gate holds it back."""
    artifacts = tmp_path / "artifacts"
    (artifacts / MODEL).mkdir(parents=True)
    (artifacts / MODEL / "checkpoint").symlink_to(ARTIFACTS / MODEL / "checkpoint")
    run([TORCH_PYTHON, "-m", "pipeline.reference", "--checkpoint", artifacts / MODEL / "checkpoint", "--out",
         artifacts / MODEL / "reference", "--recipe", MODEL, "--profile", "ci"], cwd=ROOT)
    light = json.loads((artifacts / MODEL / "reference" / "reference.json").read_text())
    full = json.loads((ARTIFACTS / MODEL / "reference" / "reference.json").read_text())
    chats = [p for p in light["prompts"] if p["kind"] == "chat"]
    assert light["profile"] == "ci" and full["profile"] == "full"
    assert sorted(p["name"].split("-")[0] for p in chats) == sorted(task.TASKS)
    systems = [any(m["role"] == "system" for m in p["messages"]) for p in chats]
    turns = [sum(m["role"] == "user" for m in p["messages"]) for p in chats]
    assert sum(systems) == 1 and sorted(turns) == [1, 1, 2]  # single-turn, with a system prompt, multi-turn
    assert [p for p in light["prompts"] if p["kind"] != "chat"] == [p for p in full["prompts"] if p["kind"] != "chat"]
    record = validate_checkpoint(ARTIFACTS / MODEL / "checkpoint", artifacts)
    assert record["status"] == "passed" and record["profile"] == "ci"
    assert record["checks"]["stop"]["prompts"] == len(chats) == 3
    assert {name: record["checks"][name]["status"] for name in validate.CONTRACT_CHECKS} == dict.fromkeys(
        validate.CONTRACT_CHECKS, "passed")
    assert publish.destination(record) == publish.HELD
    assert "validated under the ci profile" in publish.held_notice(record)


def test_a_wrong_end_token_fails_the_stop_check_and_says_so(pipeline_run, tmp_path):
    artifacts = tmp_path / "artifacts"
    (artifacts / MODEL).mkdir(parents=True)
    (artifacts / MODEL / "reference").symlink_to(ARTIFACTS / MODEL / "reference")
    (artifacts / MODEL / "checkpoint").symlink_to(ARTIFACTS / MODEL / "checkpoint")
    broken = tmp_path / "broken"
    shutil.copytree(ARTIFACTS / MODEL / "checkpoint", broken)
    config = json.loads((broken / "generation_config.json").read_text())
    config["eos_token_id"] = json.loads((broken / "added_tokens.json").read_text())["<|system|>"]
    (broken / "generation_config.json").write_text(json.dumps(config))
    record = validate_checkpoint(broken, artifacts)
    stop = record["checks"]["stop"]
    assert record["status"] == "failed" and stop["status"] == "failed"
    assert stop["stopped"] < stop["prompts"] == 12  # only a continuation that happens to end on <|end|> counts
    assert f"stop: stopped on an end token [512, 513, 519] in {stop['stopped']} of 12 chat prompts" in record["reason"]
    assert record["checks"]["teacher_forced_top1"]["status"] == "passed"  # the weights are fine: only the stop


TABLE = {"thresholds": recipes.targets()["thresholds"], "targets": {"demo": {
    "toolchain": "torch", "runtime": "pytorch", "options": {"block": 32},
    "artifacts": {"int4": {"precision": "int4", "options": {"block": 64},
                           "unsupported": {"PhiMoEForCausalLM": "the converter has no MoE support"}},
                  "cuda/fp16": {"precision": "float", "device": "cuda"}}}}}


def test_an_artifact_spec_merges_target_and_artifact_settings():
    spec = recipes.artifact(recipes.load(MODEL), "demo", "int4", TABLE)
    assert spec["options"] == {"block": 64} and spec["device"] == "cpu" and spec["refused"] is None
    assert spec["thresholds"] == recipes.thresholds(recipes.load(MODEL), "int4")
    assert recipes.artifact(recipes.load(MODEL), "demo", "cuda/fp16", TABLE)["device"] == "cuda"


def test_a_refused_architecture_gets_a_not_run_record_with_the_reason(pipeline_run):
    spec = recipes.artifact(recipes.load("fixture-phi-3.5-moe"), "demo", "int4", TABLE)
    assert spec["refused"] == "demo/int4 is not built for PhiMoEForCausalLM: the converter has no MoE support"
    reference = ARTIFACTS / "fixture-phi-3.5-moe" / "reference"  # only its profile is read
    record = validate.validate_folder(ARTIFACTS / "nowhere", ARTIFACTS / "nowhere", reference, spec)
    validation.validate_record(record)
    assert record["status"] == "not_run" and record["reason"] == spec["refused"] and record["profile"] == "full"
    assert {c["status"] for c in record["checks"].values()} == {"not_run"}


def test_targets_yaml_is_checked_against_its_schema():
    table = recipes.targets()
    card = {"library_name": "transformers", "description": "The checkpoint.", "usage": "Load {file}."}
    broken = {**table, "targets": {"demo": {"toolchain": "torch", "runtime": "pytorch", "card": card,
                                            "artifacts": {"x": {"precision": "int2"}}}}}
    with pytest.raises(recipes.RecipeError, match="targets/demo/artifacts/x/precision"):
        recipes.check_schema(broken, recipes.load_schema("targets.schema.yaml"), "recipes/targets.yaml", "Fix it.")


def test_every_failure_on_the_fixture_family_is_attributed(pipeline_run):
    """Each failed check names the deviation that accounts for it; none is left unexplained on the fixtures, and
    the report and the summary say how many are."""
    for path in [path for model in FIXTURES for path in validation_files(model)]:
        record = json.loads(path.read_text())
        failed = sorted(name for name, c in record["checks"].items() if c["status"] == "failed")
        assert record.get("unexplained", []) == [], (record["artifact"], record["model"], record.get("reason"))
        assert sorted(record.get("attributed", {})) == failed, (record["artifact"], record["model"])
    for name in ("report.md", "summary.md"):
        assert "; 0 failed checks no named deviation explains" in (ARTIFACTS / name).read_text()


def test_the_report_states_each_cause_once_with_what_it_hits(pipeline_run):
    report = (ARTIFACTS / "report.md").read_text()
    findings = report.split("## What the validators found", 1)[1]
    records = [json.loads(p.read_text()) for model in FIXTURES for p in validation_files(model)]
    ids = {d["id"] for r in records for d in r.get("deviations", [])}
    assert {"ignores-sliding-window", "mlx-longrope-long-factor", "llamacpp-phimoe-softmax-routing"} <= ids
    for deviation_id in ids:
        [line] = [line for line in findings.splitlines() if line.startswith(f"- {deviation_id}: ")]
        hit = [f"{r['model']} {r['artifact']}" for r in records if deviation_id in {d["id"] for d in r.get("deviations", [])}]
        assert all(where in line for where in hit), deviation_id
    assert findings.count("not run here: Ollama itself") == 1
