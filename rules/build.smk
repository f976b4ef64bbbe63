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
        base=base_arguments,
    log:
        "logs/{model}/{target}/{artifact}.log",
    benchmark:
        "benchmarks/{model}/{target}/{artifact}.tsv"
    threads: lambda wildcards, input: resources.threads(input.checkpoint, spec(wildcards)["threads"])
    resources:
        mem_mb=checkpoint_mem_mb,
        runtime=checkpoint_runtime,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.build --target {wildcards.target} --artifact {wildcards.artifact}"
        " --recipe {wildcards.model} --checkpoint {input.checkpoint} --provenance {input.provenance} {params.base}"
        " --out {output} --threads {threads} > {log} 2>&1"



# A target's per-model calibration stage (its `calibration` in recipes/targets.yaml): pipeline/targets/<target>/
# calibrate.py runs on the model's calibration text (pipeline/calibration.py) and the artifact named as its base;
# the artifacts marked `calibrated` are made with what it writes (GGUF: llama.cpp's importance matrix).
rule calibrate:
    input:
        unpack(calibration_inputs),
    output:
        directory("artifacts/{model}/{target}/calibration"),
    params:
        python=lambda wildcards: runner(TARGETS[wildcards.target]["toolchain"]),
    log:
        "logs/{model}/{target}/calibration.log",
    benchmark:
        "benchmarks/{model}/{target}/calibration.tsv"
    threads: calibration_threads
    resources:
        mem_mb=calibration_mem_mb,
        runtime=checkpoint_runtime,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.targets.{wildcards.target}.calibrate --checkpoint {input.checkpoint}"
        " --base {input.base} --out {output} --threads {threads} > {log} 2>&1"
