# What an ops team publishes: per artifact a folder with its files, validation.json and model card; per model a
# manifest with checksums and provenance; one report over everything.
# Never submitted to a cluster: hard links, checksums and one page of files already on the shared filesystem,
# which would wait in the queue longer than they run.
localrules: publish, manifest, report


# The publish gate: publish/ gets the artifacts whose validation passed, held/ the rest, each with its card.
rule publish:
    input:
        unpack(publish_inputs),
    output:
        publish=directory("artifacts/{model}/publish"),
        held=directory("artifacts/{model}/held"),
    params:
        namespace=config["namespace"],
        cards=lambda wildcards: {target: TARGETS[target]["card"] for target in TARGETS},
        python=runner(),
    log:
        "logs/{model}/publish.log",
    benchmark:
        "benchmarks/{model}/publish.tsv"
    threads: 1
    resources:
        mem_mb=500,
        runtime=10,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.publish --recipe {wildcards.model} --namespace {params.namespace}"
        " --provenance {input.provenance} --publish {output.publish} --held {output.held} {input.validations}"
        " > {log} 2>&1"


rule manifest:
    input:
        publish="artifacts/{model}/publish",
        held="artifacts/{model}/held",
        validations=lambda wildcards: validations(wildcards.model),
        provenance="artifacts/{model}/provenance.json",
    output:
        manifest="artifacts/{model}/manifest.json",
        sums="artifacts/{model}/SHA256SUMS",
        release="artifacts/{model}/RELEASE.md",
    params:
        namespace=config["namespace"],
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
        "{params.python} -m pipeline.manifest write {wildcards.model} --namespace {params.namespace}"
        " {input.validations} > {log} 2>&1"


# This machine's memory bandwidth, the bound the report sets each decode speed beside; with the validations'
# threads. It waits for the validations (it reads none) so that none shares the memory bus with it.
rule machine:
    input:
        validations=[validations(model) for model in MODELS],
    output:
        "artifacts/machine.json",
    params:
        python=runner(),
    log:
        "logs/machine.log",
    benchmark:
        "benchmarks/machine.tsv"
    threads: resources.DECODE_THREADS
    resources:
        mem_mb=1500,
        runtime=5,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.machine --threads {threads} --out {output} > {log} 2>&1"


rule report:
    input:
        manifests=expand("artifacts/{model}/manifest.json", model=MODELS),
        validations=[validations(model) for model in MODELS],
        machine="artifacts/machine.json",
    output:
        html=report("artifacts/report.html", caption="../report/caption.rst", category="phi-forge"),
        markdown="artifacts/report.md",
    params:
        python=runner(),
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
        "{params.python} -m pipeline.report --html {output.html} --markdown {output.markdown}"
        " --machine {input.machine} {input.validations}"
        " > {log} 2>&1"
