"""The workflow itself: lint-clean, declarative rules with logs and benchmarks, the run's summary."""
from conftest import ARTIFACTS, FIXTURES, ROOT, SNAKEMAKE, run


def test_snakemake_lint_is_clean():
    result = run([SNAKEMAKE, "--lint"], check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations, your workflow is in a good condition!" in result.stdout + result.stderr


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
