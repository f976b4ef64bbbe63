# Each toolchain runs in its own locked virtual environment, created on first use from envs/<toolchain>.lock.
# Never shadowed: the environment is made in place under .envs/ (a venv's paths cannot move), from the
# repository root, so it is called as before (a changed command would rebuild every environment).
# Never submitted to a cluster: pip installs from the package index, and compute nodes often have no network.
localrules: toolchain_env


rule toolchain_env:
    input:
        toolchain_files,
    output:
        ".envs/{toolchain}/ready",
    log:
        "logs/envs/{toolchain}.log",
    benchmark:
        "benchmarks/envs/{toolchain}.tsv"
    params:
        python=PYTHON,
    threads: 1
    resources:
        mem_mb=2000,
        runtime=60,  # minutes: pip installs, llama.cpp's compile
    shell:
        "{params.python} -m pipeline.envs create {wildcards.toolchain} > {log} 2>&1"
