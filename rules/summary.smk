# The one-screen summary printed at the end of a run.
rule summary:
    input:
        expand("artifacts/{model}/reference", model=MODELS),
    output:
        "artifacts/summary.md",
    log:
        "logs/summary.log",
    benchmark:
        "benchmarks/summary.tsv"
    shell:
        "{PYTHON} -m pipeline.summary --out {output} {MODELS} > {log} 2>&1"
