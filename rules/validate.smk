# The one validator, for every artifact of every target: loads it in its own runtime, runs the validation
# contract against the float32 reference, writes validation.json (status passed, failed or not_run, with why).
rule validate:
    input:
        unpack(validation_inputs),
    output:
        "artifacts/{model}/{target}/{artifact}.validation.json",
    params:
        spec=validation_params,
        python=lambda wildcards: runner(spec(wildcards)["toolchain"]),
        folder=folder_argument,
    log:
        "logs/{model}/validate/{target}/{artifact}.log",
    benchmark:
        "benchmarks/{model}/validate/{target}/{artifact}.tsv"
    threads: decode_threads
    resources:
        mem_mb=validation_mem_mb,
        runtime=checkpoint_runtime,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.validate --target {wildcards.target} --artifact {wildcards.artifact}"
        " --recipe {wildcards.model} {params.folder} --checkpoint {input.checkpoint}"
        " --reference {input.reference} --out {output} --threads {threads} > {log} 2>&1"
