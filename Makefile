# The two commands of the README. Both install what they need (idempotent) and reach only the package registries.
PYTHON ?= python3
VENV := .venv
CORES ?= 4

.PHONY: all test lint

all: $(VENV)/ready
	$(VENV)/bin/snakemake --cores $(CORES) all

test: $(VENV)/ready
	$(VENV)/bin/snakemake --cores 2 .envs/torch/ready
	$(VENV)/bin/python -m pytest -q -n 2 --dist loadfile tests

lint: $(VENV)/ready
	$(VENV)/bin/snakemake --lint

# The workflow environment: Snakemake and the light stages. Toolchain environments are made by the workflow.
$(VENV)/ready: envs/workflow.lock envs/constraints.txt
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check --no-deps -c envs/constraints.txt -r envs/workflow.lock
	$(VENV)/bin/pip check
	touch $@
