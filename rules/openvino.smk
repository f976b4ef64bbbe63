# OpenVINO IR for openvino-genai: optimum-cli export with NNCF weight compression, tokenizer and detokenizer IR.
rule openvino:
    input:
        checkpoint="artifacts/{model}/checkpoint",
        env=".envs/openvino/ready",
    output:
        directory("artifacts/{model}/openvino/{artifact}"),
    wildcard_constraints:
        artifact="[A-Za-z0-9_-]+",
    params:
        spec=lambda wildcards: recipes.artifact(RECIPES[wildcards.model], "openvino", wildcards.artifact),
        python=".envs/openvino/bin/python",
    log:
        "logs/{model}/openvino/{artifact}.log",
    benchmark:
        "benchmarks/{model}/openvino/{artifact}.tsv"
    threads: 2
    resources:
        # optimum-intel loads the weights in float32 and traces them; NNCF compresses a copy
        mem_mb=lambda wildcards, input: resources.reference_mem_mb(input.checkpoint),
    shell:
        "{params.python} -m pipeline.targets.openvino --checkpoint {input.checkpoint} --recipe {wildcards.model}"
        " --artifact {wildcards.artifact} --out {output} > {log} 2>&1"
