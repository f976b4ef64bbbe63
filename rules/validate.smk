# The one validator, for every artifact of every target: loads it in its own runtime, runs the validation
# contract against the float32 reference, writes validation.json (status passed, failed or not_run, with why).
rule validate:
    input:
        unpack(validation_inputs),
    output:
        "artifacts/{model}/{target}/{artifact}.validation.json",
    params:
        spec=lambda wildcards: recipes.artifact(RECIPES[wildcards.model], wildcards.target, wildcards.artifact),
        python=lambda wildcards: toolchain_python(wildcards.target),
    log:
        "logs/{model}/validate/{target}/{artifact}.log",
    benchmark:
        "benchmarks/{model}/validate/{target}/{artifact}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wildcards, input: resources.reference_mem_mb(f"artifacts/{wildcards.model}/checkpoint"),
    shell:
        "{params.python} -m pipeline.validate --model {wildcards.model} --target {wildcards.target}"
        " --artifact {wildcards.artifact} --out {output} > {log} 2>&1"
