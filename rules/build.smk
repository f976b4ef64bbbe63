# Every artifact of every target in recipes/targets.yaml: its target's builder (pipeline/targets/<target>/build.py)
# through the one builder CLI, from the checkpoint, or from the base artifact its options name.
rule build:
    input:
        unpack(build_inputs),
    output:
        directory("artifacts/{model}/{target}/{artifact}"),
    params:
        spec=build_params,
        python=lambda wildcards: runner(spec(wildcards)["toolchain"]),
        base=base_argument,
    log:
        "logs/{model}/{target}/{artifact}.log",
    benchmark:
        "benchmarks/{model}/{target}/{artifact}.tsv"
    threads: lambda wildcards: spec(wildcards)["threads"]
    resources:
        mem_mb=checkpoint_mem_mb,
        runtime=checkpoint_runtime,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.build --target {wildcards.target} --artifact {wildcards.artifact}"
        " --recipe {wildcards.model} --checkpoint {input.checkpoint} --provenance {input.provenance} {params.base}"
        " --out {output} --threads {threads} > {log} 2>&1"
