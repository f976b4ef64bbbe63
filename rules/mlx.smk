# MLX artifacts: mlx-lm's converter, quantized as recipes/targets.yaml (target mlx) says, tokenizer files as the
# checkpoint has them.
rule mlx:
    input:
        checkpoint="artifacts/{model}/checkpoint",
        env=".envs/mlx/ready",
    output:
        directory("artifacts/{model}/mlx/{artifact}"),
    wildcard_constraints:
        artifact="|".join(map(re.escape, TARGETS["mlx"]["artifacts"])),
    params:
        spec=lambda wildcards: recipes.artifact(RECIPES[wildcards.model], "mlx", wildcards.artifact),
        python=toolchain_python("mlx"),
    log:
        "logs/{model}/mlx/{artifact}.log",
    benchmark:
        "benchmarks/{model}/mlx/{artifact}.tsv"
    threads: 1
    resources:
        mem_mb=lambda wildcards, input: resources.reference_mem_mb(input.checkpoint),
    shell:
        "{params.python} -m pipeline.targets.mlx --checkpoint {input.checkpoint} --artifact {wildcards.artifact}"
        " --out {output} > {log} 2>&1"
