# Each toolchain runs in its own locked virtual environment, created on first use from envs/<toolchain>.lock.
# Never shadowed: the environment is made in place under .envs/ (a venv's paths cannot move).
rule toolchain_env:
    input:
        "envs/{toolchain}.lock",
    output:
        ".envs/{toolchain}/ready",
    log:
        "logs/envs/{toolchain}.log",
    benchmark:
        "benchmarks/envs/{toolchain}.tsv"
    params:
        python=runner(),
    threads: 1
    resources:
        mem_mb=2000,
    shell:
        "{params.python} -m pipeline.envs create {wildcards.toolchain} > {log} 2>&1"
