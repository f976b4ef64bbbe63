# ONNX for onnxruntime-genai: one folder per artifact, named like Microsoft's ONNX repositories
# (cpu_and_mobile/cpu-int4-rtn-block-32-acc-level-4, cuda/cuda-fp16, ...). Options come from recipes/targets.yaml.
rule onnx:
    input:
        checkpoint="artifacts/{model}/checkpoint",
        env=".envs/onnx/ready",
    output:
        directory("artifacts/{model}/onnx/{artifact}"),
    wildcard_constraints:
        artifact="|".join(map(re.escape, TARGETS.get("onnx", {}).get("artifacts", {}))) or "no-artifact",
    params:
        spec=lambda wildcards: recipes.artifact(RECIPES[wildcards.model], "onnx", wildcards.artifact),
        python=".envs/onnx/bin/python",
    log:
        "logs/{model}/onnx/{artifact}.log",
    benchmark:
        "benchmarks/{model}/onnx/{artifact}.tsv"
    threads: 1  # the builder runs on one core; two builds share a 2-core machine
    resources:
        mem_mb=lambda wildcards, input: resources.reference_mem_mb(input.checkpoint),
    shell:
        "{params.python} -m pipeline.targets.onnx --model {wildcards.model} --artifact {wildcards.artifact}"
        " --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"
