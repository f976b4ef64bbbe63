# phi-forge: pull a Phi checkpoint, convert it for every runtime, prove each artifact in its runtime, publish.
#
#   snakemake --cores 4 all                                   # the embedded default: the fixture family
#   snakemake --cores 4 all --config models='[phi-3.5-mini-instruct]'   # a real model from the Hub
#
# Each stage is a rules/<stage>.smk file calling `python -m pipeline.<stage>`, which a person can run by hand.
# Every rule hands its stage the paths it declares; with --config shadow=minimal each job runs in a folder that
# holds only those (as on a cluster node without a shared filesystem).

include: "rules/common.smk"

# Every rule needs only Python 3.11 with venv: the toolchain environments are made by rule toolchain_env.
# With --software-deployment-method apptainer a cluster runs each job in this image.
container: "docker://python:3.11-slim-bookworm"

# Rules that run on the submit host, never on a cluster's nodes, say so in their file with `localrules`: those that
# need the network (toolchain_env, pull) and the bookkeeping too small to queue (publish, manifest, report,
# summary). Rule all runs nothing, so Snakemake never submits it.
rule all:
    input:
        expand("artifacts/{model}/reference", model=MODELS),
        [validations(model) for model in MODELS],
        expand("artifacts/{model}/manifest.json", model=MODELS),
        expand("artifacts/{model}/RELEASE.md", model=MODELS),
        "artifacts/report.html",
        "artifacts/summary.md",

include: "rules/envs.smk"
include: "rules/checkpoint.smk"
include: "rules/reference.smk"
include: "rules/build.smk"
include: "rules/validate.smk"
include: "rules/publish.smk"
include: "rules/summary.smk"

onsuccess:
    summary = Path("artifacts/summary.md")
    if summary.exists():
        print(summary.read_text())

onerror:
    report_failure()
