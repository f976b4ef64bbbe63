# The checkpoint every target starts from: built (fixtures) or pulled (hub, local folder), then verified.
rule fixture:
    input:
        env=".envs/torch/ready",
    output:
        directory("artifacts/{model}/fixture"),
    log:
        "logs/{model}/fixture.log",
    benchmark:
        "benchmarks/{model}/fixture.tsv"
    params:
        python=runner("torch"),
        fixture=lambda wildcards: RECIPES[wildcards.model]["fixture"],
    threads: 1  # the trainer pins one thread so the weights are the same on every machine
    resources:
        mem_mb=3000,
        runtime=30,  # minutes: trains a tiny model on one thread
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.fixtures --recipe {wildcards.model} --out {output} > {log} 2>&1"


# Never submitted to a cluster: an hf:// source is downloaded, and compute nodes often have no network.
localrules: pull


rule pull:
    input:
        unpack(pull_inputs),
    output:
        checkpoint=directory("artifacts/{model}/checkpoint"),
        provenance="artifacts/{model}/provenance.json",
    params:
        python=runner(),
        source=pull_source,
        recipe_source=lambda wildcards: source_of(wildcards.model),
        architecture=lambda wildcards: RECIPES[wildcards.model]["architecture"],
    log:
        "logs/{model}/pull.log",
    benchmark:
        "benchmarks/{model}/pull.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=120,  # minutes: a hub download of a large checkpoint
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.pull --source {params.source:q} --recipe-source {params.recipe_source:q}"
        " --architecture {params.architecture}"
        " --out {output.checkpoint} --provenance {output.provenance} > {log} 2>&1"
