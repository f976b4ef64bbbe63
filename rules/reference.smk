# The float32 PyTorch reference: token ids, greedy continuations, top-k logits per position.
rule reference:
    input:
        checkpoint="artifacts/{model}/checkpoint",
        env=".envs/torch/ready",
    output:
        directory("artifacts/{model}/reference"),
    params:
        overrides=lambda wildcards: RECIPES[wildcards.model].get("overrides"),
        python=runner("torch"),
        max_new_tokens=config["reference"]["max_new_tokens"],
        top_k=config["reference"]["top_k"],
        profile=config["validation_profile"],
    log:
        "logs/{model}/reference.log",
    benchmark:
        "benchmarks/{model}/reference.tsv"
    threads: decode_threads
    resources:
        mem_mb=checkpoint_mem_mb,
        runtime=checkpoint_runtime,
    shadow: SHADOW
    shell:
        "{params.python} -m pipeline.reference --checkpoint {input.checkpoint} --out {output} --threads {threads}"
        " --recipe {wildcards.model}"
        " --max-new-tokens {params.max_new_tokens} --top-k {params.top_k} --profile {params.profile} > {log} 2>&1"
