# What an ops team publishes: per artifact a folder with its files, validation.json and model card; per model a
# manifest with checksums and provenance; one report over everything.
rule publish:
    input:
        unpack(publish_inputs),
        recipe="recipes/models/{model}.yaml",
        targets="recipes/targets.yaml",
    output:
        directory("artifacts/{model}/publish/{target}/{artifact}"),
    params:
        python=PYTHON,
    log:
        "logs/{model}/publish/{target}/{artifact}.log",
    benchmark:
        "benchmarks/{model}/publish/{target}/{artifact}.tsv"
    threads: 1
    resources:
        mem_mb=500,
    shell:
        "{params.python} -m pipeline.publish --model {wildcards.model} --target {wildcards.target}"
        " --artifact {wildcards.artifact} --out {output} > {log} 2>&1"


rule manifest:
    input:
        published=lambda wildcards: published(wildcards.model),
        validations=lambda wildcards: validations(wildcards.model),
        provenance="artifacts/{model}/provenance.json",
    output:
        manifest="artifacts/{model}/manifest.json",
        sums="artifacts/{model}/SHA256SUMS",
    params:
        python=PYTHON,
    log:
        "logs/{model}/manifest.log",
    benchmark:
        "benchmarks/{model}/manifest.tsv"
    threads: 1
    resources:
        mem_mb=500,
    shell:
        "{params.python} -m pipeline.manifest write {wildcards.model} > {log} 2>&1"


rule report:
    input:
        expand("artifacts/{model}/manifest.json", model=MODELS),
    output:
        html=report("artifacts/report.html", caption="../report/caption.rst", category="phi-forge"),
        markdown="artifacts/report.md",
    params:
        python=PYTHON,
        models=MODELS,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=500,
    shell:
        "{params.python} -m pipeline.report --html {output.html} --markdown {output.markdown} {params.models}"
        " > {log} 2>&1"
