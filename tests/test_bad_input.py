"""Bad input: a one-line error naming the problem and the fix, a non-zero exit, nothing under artifacts/."""
import json
import shutil

import pytest

from conftest import ARTIFACTS, SNAKEMAKE, TORCH_PYTHON, run

MODEL = "phi-3-mini-4k-instruct"  # a real recipe, pointed at a local folder


@pytest.fixture
def good_checkpoint(pipeline_run, tmp_path):
    folder = tmp_path / "checkpoint"
    shutil.copytree(ARTIFACTS / "fixture-phi-3-mini-4k" / "checkpoint", folder)
    return folder


def snakemake_fails(repo, *config):
    result = run([SNAKEMAKE, "--cores", "1", "all", "--config", *config], cwd=repo, check=False)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.startswith("phi-forge: error:")]
    assert len(errors) == 1, result.stderr[-2000:]
    assert not (repo / "artifacts").exists() or not any((repo / "artifacts").iterdir())
    return errors[0]


def test_unknown_model(repo_copy):
    error = snakemake_fails(repo_copy, "models=[phi-9-mini]")
    assert "unknown model 'phi-9-mini'" in error and "Pick one of" in error


def test_unknown_config_key(repo_copy):
    error = snakemake_fails(repo_copy, "modles=[fixture-phi-3-mini-4k]")
    assert "'modles'" in error and "Allowed keys: models" in error


def test_unknown_recipe_key(repo_copy):
    recipe = repo_copy / "recipes" / "models" / "fixture-phi-3-mini-4k.yaml"
    recipe.write_text(recipe.read_text() + "quantize: q4\n")
    error = snakemake_fails(repo_copy, "models=[fixture-phi-3-mini-4k]")
    assert "fixture-phi-3-mini-4k.yaml" in error and "'quantize'" in error


@pytest.mark.parametrize("model", ["phi-3-small-8k-instruct", "phi-3.5-vision-instruct"])
def test_unsupported_recipe(repo_copy, model):
    error = snakemake_fails(repo_copy, f"models=[{model}]")
    assert f"model '{model}' is not supported" in error


def test_missing_folder(repo_copy, tmp_path):
    error = snakemake_fails(repo_copy, f"models=[{MODEL}]", f"sources={{{MODEL}: {tmp_path / 'nowhere'}}}")
    assert "nowhere: no such folder" in error


def test_pickle_only_weights(repo_copy, good_checkpoint):
    for shard in good_checkpoint.glob("*.safetensors"):
        shard.rename(shard.with_suffix(".bin"))
    (good_checkpoint / "model.safetensors.index.json").unlink()
    error = snakemake_fails(repo_copy, f"models=[{MODEL}]", f"sources={{{MODEL}: {good_checkpoint}}}")
    assert "only pickle weights" in error and "safetensors" in error


def test_truncated_safetensors(repo_copy, good_checkpoint):
    shard = sorted(good_checkpoint.glob("*.safetensors"))[-1]
    shard.write_bytes(shard.read_bytes()[:-1000])
    error = snakemake_fails(repo_copy, f"models=[{MODEL}]", f"sources={{{MODEL}: {good_checkpoint}}}")
    assert shard.name in error and "truncated" in error and "Download it again" in error


@pytest.mark.parametrize("key, value, words", [("num_hidden_layers", 1, "more than 1 layers"),
                                                ("num_hidden_layers", 3, "model.layers.2.input_layernorm"),
                                                ("hidden_size", 512, "config implies")])
def test_config_that_does_not_match_the_weights(repo_copy, good_checkpoint, key, value, words):
    config = json.loads((good_checkpoint / "config.json").read_text())
    config[key] = value
    (good_checkpoint / "config.json").write_text(json.dumps(config))
    error = snakemake_fails(repo_copy, f"models=[{MODEL}]", f"sources={{{MODEL}: {good_checkpoint}}}")
    assert "config.json does not match the weights" in error and words in error


@pytest.mark.parametrize("architecture, words", [("Phi3SmallForCausalLM", "remote code"),
                                                 ("LlamaForCausalLM", "phi-forge converts Phi3ForCausalLM")])
def test_unsupported_architecture(repo_copy, good_checkpoint, architecture, words):
    config = json.loads((good_checkpoint / "config.json").read_text())
    config["architectures"] = [architecture]
    (good_checkpoint / "config.json").write_text(json.dumps(config))
    error = snakemake_fails(repo_copy, f"models=[{MODEL}]", f"sources={{{MODEL}: {good_checkpoint}}}")
    assert "unsupported architecture" in error and words in error


def test_checkpoint_of_another_architecture_than_the_recipe_says(repo_copy, good_checkpoint):
    moe = "fixture-phi-3.5-moe"
    error = snakemake_fails(repo_copy, f"models=[{moe}]", f"sources={{{moe}: {good_checkpoint}}}")
    assert "config.json says architecture Phi3ForCausalLM, the recipe says PhiMoEForCausalLM" in error


def test_reference_on_cuda_where_torch_has_none(good_checkpoint, tmp_path):
    sees_cuda = run([TORCH_PYTHON, "-c", "import torch; print(torch.cuda.is_available())"]).stdout.strip()
    if sees_cuda == "True":
        pytest.skip("torch sees a CUDA device here: the reference runs on it (pipeline.bench.gpu)")
    result = run([TORCH_PYTHON, "-m", "pipeline.reference", "--checkpoint", good_checkpoint, "--out",
                  tmp_path / "reference", "--device", "cuda"], check=False)
    assert result.returncode == 2 and not (tmp_path / "reference").exists()
    [error] = result.stderr.strip().splitlines()
    assert error.startswith("phi-forge: error: --device cuda: torch ") and "sees no CUDA device" in error
