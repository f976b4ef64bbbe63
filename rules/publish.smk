# What an ops team publishes: per artifact a folder with its files, validation.json and model card; per model a
# manifest with checksums and provenance; one report over everything.
# Never submitted to a cluster: hard links, checksums and one page of files already on the shared filesystem,
# which would wait in the queue longer than they run.
localrules: publish, manifest, report


rule publish:
    input:
        unpack(publish_inputs),
    output:
        directory("artifacts/{model}/publish/{target}/{artifact}"),
    params:
        spec=validation_params,  # the card states the thresholds
        card=lambda wildcards: TARGETS[wildcards.target]["card"],
        python=runner(),
    log:
        "logs/{model}/publish/{target}/{artifact}.log",
    benchmark:
        "benchmarks/{model}/publish/{target}/{artifact}.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.publish --recipe {wildcards.model} --target {wildcards.target}"
        " --artifact {wildcards.artifact} --folder {input.artifact} --validation {input.validation}"
        " --provenance {input.provenance} --out {output} > {log} 2>&1"


rule manifest:
    input:
        published=lambda wildcards: published(wildcards.model),
        validations=lambda wildcards: validations(wildcards.model),
        provenance="artifacts/{model}/provenance.json",
    output:
        manifest="artifacts/{model}/manifest.json",
        sums="artifacts/{model}/SHA256SUMS",
    params:
        python=runner(),
    log:
        "logs/{model}/manifest.log",
    benchmark:
        "benchmarks/{model}/manifest.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=30,  # minutes: the sha256 of every published file
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.manifest write {wildcards.model} > {log} 2>&1"


rule report:
    input:
        manifests=expand("artifacts/{model}/manifest.json", model=MODELS),
        validations=[validations(model) for model in MODELS],
    output:
        html=report("artifacts/report.html", caption="../report/caption.rst", category="phi-forge"),
        markdown="artifacts/report.md",
    params:
        python=runner(),
        models=MODELS,
    log:
        "logs/report.log",
    benchmark:
        "benchmarks/report.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.report --html {output.html} --markdown {output.markdown} {params.models}"
        " > {log} 2>&1"
