# GGUF for llama.cpp with an Ollama Modelfile: the float type converted once per model by llama.cpp's converter,
# every quantized type made from it by llama.cpp's quantizer (recipes/targets.yaml, target gguf).
rule gguf_convert:
    input:
        checkpoint="artifacts/{model}/checkpoint",
        env=".envs/gguf/ready",
    output:
        directory("artifacts/{model}/gguf/{artifact}"),
    wildcard_constraints:
        artifact="|".join(n for n, a in TARGETS["gguf"]["artifacts"].items() if "base" not in a["options"]),
    params:
        spec=lambda wildcards: recipes.artifact(RECIPES[wildcards.model], "gguf", wildcards.artifact),
        python=toolchain_python("gguf"),
    log:
        "logs/{model}/gguf/{artifact}.log",
    benchmark:
        "benchmarks/{model}/gguf/{artifact}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: resources.reference_mem_mb(input.checkpoint),
    shell:
        "{params.python} -m pipeline.targets.gguf --model {wildcards.model} --artifact {wildcards.artifact}"
        " --checkpoint {input.checkpoint} --out {output} > {log} 2>&1"


rule gguf_quantize:
    input:
        checkpoint="artifacts/{model}/checkpoint",
        env=".envs/gguf/ready",
        base=lambda wildcards: f"artifacts/{wildcards.model}/gguf/"
        + TARGETS["gguf"]["artifacts"][wildcards.artifact]["options"]["base"],
    output:
        directory("artifacts/{model}/gguf/{artifact}"),
    wildcard_constraints:
        artifact="|".join(n for n, a in TARGETS["gguf"]["artifacts"].items() if "base" in a["options"]),
    params:
        spec=lambda wildcards: recipes.artifact(RECIPES[wildcards.model], "gguf", wildcards.artifact),
        python=toolchain_python("gguf"),
    log:
        "logs/{model}/gguf/{artifact}.log",
    benchmark:
        "benchmarks/{model}/gguf/{artifact}.tsv"
    threads: 2
    resources:
        mem_mb=lambda wildcards, input: resources.reference_mem_mb(input.checkpoint),
    shell:
        "{params.python} -m pipeline.targets.gguf --model {wildcards.model} --artifact {wildcards.artifact}"
        " --checkpoint {input.checkpoint} --base {input.base} --out {output} --threads {threads} > {log} 2>&1"
