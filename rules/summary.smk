# The one-screen summary printed at the end of a run.
# Never submitted to a cluster: one table from the validation files, a second's work.
localrules: summary


rule summary:
    input:
        references=expand("artifacts/{model}/reference", model=MODELS),
        provenance=expand("artifacts/{model}/provenance.json", model=MODELS),
        validations=[validations(model) for model in MODELS],
        manifests=expand("artifacts/{model}/manifest.json", model=MODELS),
    output:
        "artifacts/summary.md",
    params:
        python=runner(),
        models=MODELS,
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=5,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.summary --out {output} {params.models} --validations {input.validations}"
        " > {log} 2>&1"
