# The one-screen summary printed at the end of a run.
rule summary:
    input:
        expand("artifacts/{model}/reference", model=MODELS),
        [validations(model) for model in MODELS],
    output:
        "artifacts/summary.md",
    params:
        python=PYTHON,
        models=MODELS,
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    shell:
        "{params.python} -m pipeline.summary --out {output} {params.models} > {log} 2>&1"
