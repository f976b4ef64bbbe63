"""The workflow itself: lint-clean, declarative rules with logs and benchmarks, the run's summary, Snakemake's
planning verbs on a fresh clone, and stages that read only what their rules declare."""
import re

import pytest
import yaml

from conftest import (ARTIFACTS, FIXTURES, ROOT, SNAKEMAKE, checkpoint_files, linked_model, publish_folder, read_json,
                      run, verdicts)
from pipeline import recipes, resources


def test_snakemake_lint_is_clean():
    result = run([SNAKEMAKE, "--lint"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


def test_every_rule_declares_threads_mem_mb_and_runtime():
    """What a scheduler needs to place a job; rule all (Snakefile) runs nothing."""
    rules = {}
    for path in sorted((ROOT / "rules").glob("*.smk")):
        for block in re.split(r"^rule ", path.read_text(), flags=re.M)[1:]:
            rules[block.split(":", 1)[0]] = block
    assert {"toolchain_env", "fixture", "pull", "reference", "build", "validate", "publish", "manifest", "report",
            "summary"} <= set(rules)
    for name, block in rules.items():
        for declaration in (r"^    threads:", r"^        mem_mb=", r"^        runtime="):
            assert re.search(declaration, block, re.M), f"rule {name}: no {declaration.split()[-1]}"


def test_every_rule_has_a_log_and_a_benchmark(pipeline_run):
    for model in FIXTURES:
        for stage in ("fixture", "pull", "reference"):
            assert (ROOT / "logs" / model / f"{stage}.log").exists()
            assert (ROOT / "benchmarks" / model / f"{stage}.tsv").exists()


def test_run_ends_with_the_summary_table(pipeline_run):
    summary = (ARTIFACTS / "summary.md").read_text()
    for model in FIXTURES:
        assert f"| {model} | fixture://" in summary
    assert "phi-forge summary" in pipeline_run.stdout + pipeline_run.stderr or \
        "Nothing to be done" in pipeline_run.stdout + pipeline_run.stderr


def test_a_second_run_has_nothing_to_do(pipeline_run):
    result = run([SNAKEMAKE, "--cores", "2", "all", "--dry-run"])
    assert "Nothing to be done" in result.stdout + result.stderr


# Snakemake's planning verbs on a fresh clone: nothing built yet, so no checkpoint to size a job by.
REAL = [name for name in recipes.available()
        if recipes.load(name)["source"].startswith("hf://") and "unsupported" not in recipes.load(name)]
PLANS = {"embedded default": [], "every real recipe": ["--config", f"models=[{','.join(REAL)}]"]}


def job_counts(dry_run_output: str) -> dict[str, int]:
    table = dry_run_output.split("Job stats:", 1)[1].split("\n\n", 1)[0]
    return {name: int(count) for name, count in re.findall(r"^(\w+)\s+(\d+)$", table, re.M)}


@pytest.mark.parametrize("config", PLANS.values(), ids=PLANS)
def test_dry_run_plans_every_artifact_on_a_fresh_clone(repo_copy, config):
    result = run([SNAKEMAKE, "all", "--dry-run", *config], cwd=repo_copy)
    models = config[1].removeprefix("models=[").removesuffix("]").split(",") if config else FIXTURES
    specs = [spec for model in models for spec in recipes.artifacts(recipes.load(model))]
    counts = job_counts(result.stdout)
    assert counts["validate"] == len(specs)
    assert counts["build"] == len([s for s in specs if not s["refused"]])
    assert counts["reference"] == counts["pull"] == counts["publish"] == counts["manifest"] == len(models)
    # a job sized by its checkpoint is planned with the base memory of its spec until the checkpoint exists
    assert "mem_mb=1500," in result.stdout
    assert not (repo_copy / "artifacts").exists()


def test_alternatives_add_each_targets_other_settings_to_the_plan(repo_copy):
    """config `alternatives` plans every target's alternatives beside the defaults, and a plain run none of them."""
    table = recipes.targets()["targets"]
    alternatives = {f"{target}/{name}" for target, spec in table.items() for name, artifact in spec["artifacts"].items()
                    if artifact.get("alternative")}
    assert {name.split("/")[0] for name in alternatives} >= {"onnx", "mlx", "openvino"}
    plain = run([SNAKEMAKE, "all", "--dry-run"], cwd=repo_copy).stdout
    planned = run([SNAKEMAKE, "all", "--dry-run", "--config", "alternatives=True"], cwd=repo_copy).stdout
    specs = [spec for model in FIXTURES for spec in recipes.artifacts(recipes.load(model), alternatives=True)]
    assert job_counts(planned)["validate"] == len(specs) > job_counts(plain)["validate"]
    for name in alternatives:
        assert f"{name}.validation.json" in planned and f"{name}.validation.json" not in plain, name


def planned_jobs(dry_run_output: str) -> list[tuple[str, str]]:
    """A dry run's jobs as (rule, the lines it prints for the job)."""
    parts = re.split(r"^(?:local)?rule (\w+):$", dry_run_output, flags=re.M)[1:]
    return list(zip(parts[::2], parts[1::2]))


@pytest.mark.parametrize("profile", ["local", "slurm"])
def test_each_profile_plans_the_same_jobs(repo_copy, profile):
    """profiles/<name> (--workflow-profile) changes where jobs run, not what runs; a dry run submits nothing."""
    plain = job_counts(run([SNAKEMAKE, "all", "--dry-run"], cwd=repo_copy).stdout)
    result = run([SNAKEMAKE, "all", "--dry-run", "--workflow-profile", f"profiles/{profile}"], cwd=repo_copy)
    assert f"Using workflow specific profile profiles/{profile}" in result.stdout + result.stderr
    assert job_counts(result.stdout) == plain
    planned = [job for rule, job in planned_jobs(result.stdout) if rule != "all"]
    assert len(planned) == plain["total"] - plain["all"] and all("runtime=" in body for body in planned)
    if profile == "slurm":
        assert all("slurm_partition=" in body and "slurm_account=" in body for body in planned)


@pytest.mark.parametrize("config", PLANS.values(), ids=PLANS)
def test_dag_and_summary_on_a_fresh_clone(repo_copy, config):
    dag = run([SNAKEMAKE, "all", "--dag", *config], cwd=repo_copy).stdout
    assert dag.startswith("digraph snakemake_dag {")
    assert {"build", "validate", "publish", "reference", "pull"} <= set(re.findall(r'label = "(\w+)', dag))
    summary = run([SNAKEMAKE, "all", "--summary", *config], cwd=repo_copy).stdout
    rows = [line.split("\t") for line in summary.splitlines()[1:] if line.endswith("update pending")]
    assert {row[2] for row in rows} >= {"build", "validate", "publish", "reference", "pull", "manifest"}
    assert all(row[4] == "missing" for row in rows)


def test_resources_come_from_the_checkpoint_once_it_exists(pipeline_run):
    model = "fixture-phi-3-mini-4k"
    weights_mb = sum(p.stat().st_size for p in (ARTIFACTS / model / "checkpoint").glob("*.safetensors")) // 2**20
    planned = run([SNAKEMAKE, "--dry-run", "--cores", "2", "--forcerun", "build",
                   f"artifacts/{model}/gguf/Q4_K_M"]).stdout
    memory = recipes.artifact(recipes.load(model), "gguf", "Q4_K_M")["memory"]  # its target's, measured
    assert f"mem_mb={int(memory['base_mb'] + memory['per_weights_mb'] * weights_mb)}," in planned
    assert f"runtime={resources.runtime_min(ARTIFACTS / model / 'checkpoint')}" in planned
    [job] = [job for rule, job in planned_jobs(planned)
             if rule == "build" and f"model={model}, target=gguf, artifact=Q4_K_M\n" in job]
    # Q4_K_M's 2 threads (targets.yaml) at a real size; a fixture's few MB get one core, which Snakemake leaves unsaid
    assert weights_mb < resources.ONE_CORE_BELOW_MB and "mem_mb=" in job and "threads:" not in job
    # a validation's and a calibration stage's memory are their target's own (`validation`, `calibration`), or the
    # artifact's where it has its own (the fp16 graphs on onnxruntime's CPU provider)
    targets = recipes.targets()["targets"]
    fp16 = targets["onnx"]["artifacts"]["cuda/cuda-fp16"]["validation"]["memory"]
    assert fp16 != targets["onnx"]["validation"]["memory"]
    planned = run([SNAKEMAKE, f"artifacts/{model}/gguf/Q4_K_M-imatrix.validation.json",
                   f"artifacts/{model}/onnx/cuda/cuda-fp16.validation.json", "--dry-run", "--cores", "2",
                   "--forcerun", "calibrate", "validate"]).stdout
    for rule, target, memory in (("validate", "gguf", targets["gguf"]["validation"]["memory"]),
                                 ("calibrate", "gguf", targets["gguf"]["calibration"]["memory"]),
                                 ("validate", "onnx", fp16)):
        [job] = [job for name, job in planned_jobs(planned)
                 if name == rule and f"model={model}, target={target}" in job]
        assert f"mem_mb={int(memory['base_mb'] + memory['per_weights_mb'] * weights_mb)}," in job, (rule, target)


# One fixture's stages, each job in a shadow directory that holds only its declared inputs (as on a cluster node
# without a shared filesystem): a stage that read a file its rule does not declare would fail here.
SHADOWED_MODEL = "fixture-phi-3-mini-4k"
SHADOWED = ["gguf/Q8_0", "mlx/4bit", "onnx/cpu_and_mobile/cpu-int4-kquant-block-32-acc-level-4", "openvino/int8"]


def test_every_stage_reads_only_what_its_rule_declares(pipeline_run, repo_copy):
    model = linked_model(repo_copy, SHADOWED_MODEL, ("fixture", "checkpoint", "provenance.json", "reference"))
    recipe_file = repo_copy / "recipes" / "models" / f"{SHADOWED_MODEL}.yaml"
    chosen = {target: [] for target in recipes.targets()["targets"]}
    for artifact in SHADOWED:
        chosen[artifact.split("/", 1)[0]].append(artifact.split("/", 1)[1])
    recipe_file.write_text(yaml.safe_dump({**yaml.safe_load(recipe_file.read_text()), "targets": chosen}))
    run([SNAKEMAKE, "--cores", "2", "--forcerun", "pull", "reference", "--config", f"models=[{SHADOWED_MODEL}]",
         "shadow=minimal", "--", f"artifacts/{SHADOWED_MODEL}/RELEASE.md"], cwd=repo_copy)
    for artifact in SHADOWED:
        assert verdicts(read_json(model / f"{artifact}.validation.json")) == \
               verdicts(read_json(ARTIFACTS / SHADOWED_MODEL / f"{artifact}.validation.json")), artifact
        assert (publish_folder(model, artifact) / "README.md").exists()


# A converter that fails on one artifact: llama.cpp's quantizer refuses IQ2_XXS without an importance matrix; and
# an artifact made from that one.
FAILING = {"IQ2_XXS": {"precision": "int4", "options": {"type": "IQ2_XXS", "base": "F16"}},
           "Q4_K_M_OF_IQ2_XXS": {"precision": "int4", "options": {"type": "Q4_K_M", "base": "IQ2_XXS"}}}


def test_a_failed_build_is_a_failed_validation_and_the_run_goes_on(pipeline_run, repo_copy):
    """The failed build leaves only its reason in the artifact folder; the validator turns it into a failed
    validation.json with that reason; the other artifacts and the summary are made, and Snakemake exits 0."""
    model = linked_model(repo_copy, SHADOWED_MODEL,
                         ("fixture", "checkpoint", "provenance.json", "reference", "gguf/F16"))
    targets = yaml.safe_load((repo_copy / "recipes" / "targets.yaml").read_text())
    targets["targets"]["gguf"]["artifacts"].update(FAILING)
    (repo_copy / "recipes" / "targets.yaml").write_text(yaml.safe_dump(targets))
    recipe_file = repo_copy / "recipes" / "models" / f"{SHADOWED_MODEL}.yaml"
    recipe = yaml.safe_load(recipe_file.read_text())
    chosen = {target: [] for target in targets["targets"]} | {"gguf": ["F16", "Q8_0", *FAILING]}
    recipe_file.write_text(yaml.safe_dump({**recipe, "targets": chosen}))
    run([SNAKEMAKE, "--cores", "2", "--config", f"models=[{SHADOWED_MODEL}]", "--", "all"], cwd=repo_copy)
    failed = read_json(model / "gguf" / "IQ2_XXS.validation.json")
    assert failed["status"] == "failed" and failed["unexplained"] == ["build"]
    assert failed["reason"].startswith("the build failed: RuntimeError: llama-quantize to IQ2_XXS exited with "
                                       "status 1: ")
    assert [p.name for p in checkpoint_files(model / "gguf" / "IQ2_XXS")] == ["build-failure.json"]
    derived = read_json(model / "gguf" / "Q4_K_M_OF_IQ2_XXS.validation.json")
    assert derived["reason"].startswith("the build failed: its base gguf/IQ2_XXS did not build: RuntimeError")
    q8_0 = read_json(model / "gguf" / "Q8_0.validation.json")
    assert q8_0["status"] == read_json(ARTIFACTS / SHADOWED_MODEL / "gguf" / "Q8_0.validation.json")["status"]
    for name in FAILING:  # the gate holds them back, the card saying why
        assert "Held back: failed validation." in (model / "held" / "gguf" / name / "README.md").read_text()
    summary = (repo_copy / "artifacts" / "summary.md").read_text()
    assert "| gguf/IQ2_XXS | FAIL |" in summary and "| gguf/Q4_K_M_OF_IQ2_XXS | FAIL |" in summary
