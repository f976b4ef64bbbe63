"""The fixture family: hub-shaped files, real structure, deterministic builds."""
import hashlib
import signal
import subprocess
import time

import pytest

from conftest import ARTIFACTS, FIXTURES, ROOT, TORCH_PYTHON, checkpoint_files, read_json, run
from pipeline.checkpoint import tensor_table

# The keys of the hub's Phi-3-mini-4k-instruct config.json (shared/reference/hub, complete first version) plus
# attention_bias, which a later hub revision added.
HUB_PHI3_KEYS = {"_name_or_path", "architectures", "attention_bias", "attention_dropout", "auto_map", "bos_token_id",
                 "embd_pdrop", "eos_token_id", "hidden_act", "hidden_size", "initializer_range",
                 "intermediate_size", "max_position_embeddings", "model_type", "num_attention_heads",
                 "num_hidden_layers", "num_key_value_heads", "original_max_position_embeddings", "pad_token_id",
                 "resid_pdrop", "rms_norm_eps", "rope_scaling", "rope_theta", "sliding_window",
                 "tie_word_embeddings", "torch_dtype", "transformers_version", "use_cache", "vocab_size"}
CHAT_TOKENS = ["<|endoftext|>", "<|assistant|>", "<|system|>", "<|end|>", "<|user|>"]


def checkpoint(model):
    return ARTIFACTS / model / "checkpoint"


@pytest.mark.parametrize("model", FIXTURES)
def test_hub_files_are_all_there(pipeline_run, model):
    names = {p.name for p in checkpoint(model).iterdir()}
    assert {"config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
            "special_tokens_map.json", "added_tokens.json", "LICENSE", "model.safetensors.index.json"} <= names
    assert ("tokenizer.model" in names) != ({"vocab.json", "merges.txt"} <= names)  # SentencePiece or BPE
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} <= names
    assert "MIT License" in (checkpoint(model) / "LICENSE").read_text()


@pytest.mark.parametrize("model", FIXTURES)
def test_config_is_in_the_hub_shape(pipeline_run, model):
    config = read_json(checkpoint(model) / "config.json")
    assert "rope_parameters" not in config and "rope_theta" in config, "hub fields, not transformers 5's"
    if config["model_type"] == "phi3" and "partial_rotary_factor" not in config:
        assert set(config) == HUB_PHI3_KEYS
    assert config["hidden_size"] % 256 == 0 and config["intermediate_size"] % 256 == 0
    assert config["vocab_size"] % 64 == 0
    table = tensor_table(checkpoint(model))
    assert table["model.embed_tokens.weight"]["shape"] == [config["vocab_size"], config["hidden_size"]]
    assert {t["dtype"] for t in table.values()} == {"BF16"}
    tokenizer = read_json(checkpoint(model) / "tokenizer.json")
    assert max(t["id"] for t in tokenizer["added_tokens"]) < config["vocab_size"], "rows padded past the tokenizer"
    assert config["vocab_size"] - max(t["id"] for t in tokenizer["added_tokens"]) <= 64


@pytest.mark.parametrize("model", FIXTURES)
def test_chat_tokens_agree_across_tokenizer_files(pipeline_run, model):
    folder = checkpoint(model)
    added = read_json(folder / "added_tokens.json")
    in_json = {t["content"]: t["id"] for t in read_json(folder / "tokenizer.json")["added_tokens"]}
    decoder_table = read_json(folder / "tokenizer_config.json")["added_tokens_decoder"]
    decoder = {entry["content"]: int(i) for i, entry in decoder_table.items()}
    for token in CHAT_TOKENS:
        assert added[token] == in_json[token] == decoder[token]
    generation = read_json(folder / "generation_config.json")
    assert isinstance(generation["eos_token_id"], list) and added["<|end|>"] in generation["eos_token_id"]
    template = read_json(folder / "tokenizer_config.json")["chat_template"]
    assert "<|end|>" in template and "<|assistant|>" in template  # Phi-4 builds '<|user|>' from the role


def test_each_shape_has_its_real_structure(pipeline_run):
    mini4k = read_json(checkpoint("fixture-phi-3-mini-4k") / "config.json")
    assert mini4k["rope_scaling"] is None and mini4k["sliding_window"] == 2047
    assert mini4k["max_position_embeddings"] == 4096

    longrope = read_json(checkpoint("fixture-phi-3-mini-128k") / "config.json")
    half_rotary = longrope["hidden_size"] // longrope["num_attention_heads"] // 2
    assert longrope["rope_scaling"]["type"] == "longrope"
    assert len(longrope["rope_scaling"]["long_factor"]) == len(longrope["rope_scaling"]["short_factor"]) == half_rotary
    assert longrope["original_max_position_embeddings"] == 4096 and longrope["max_position_embeddings"] == 131072

    medium = read_json(checkpoint("fixture-phi-3-medium-4k") / "config.json")
    assert medium["num_key_value_heads"] < medium["num_attention_heads"]

    moe = read_json(checkpoint("fixture-phi-3.5-moe") / "config.json")
    assert moe["architectures"] == ["PhiMoEForCausalLM"] and moe["attention_bias"] and moe["lm_head_bias"]
    assert "original_max_position_embeddings" not in moe, "the hub keeps it inside rope_scaling only"
    table = tensor_table(checkpoint("fixture-phi-3.5-moe"))
    assert "lm_head.bias" in table and "model.layers.0.self_attn.q_proj.bias" in table
    assert f"model.layers.0.block_sparse_moe.experts.{moe['num_local_experts'] - 1}.w1.weight" in table

    phi4 = read_json(checkpoint("fixture-phi-4-mini") / "config.json")
    assert phi4["partial_rotary_factor"] == 0.75 and phi4["tie_word_embeddings"]
    assert phi4["num_key_value_heads"] < phi4["num_attention_heads"]
    assert "lm_head.weight" not in tensor_table(checkpoint("fixture-phi-4-mini"))
    assert read_json(checkpoint("fixture-phi-4-mini") / "tokenizer_config.json")["tokenizer_class"] == "GPT2Tokenizer"
    rotary_half = int(phi4["hidden_size"] // phi4["num_attention_heads"] * 0.75) // 2
    assert len(phi4["rope_scaling"]["long_factor"]) == rotary_half


def sha256s(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in checkpoint_files(folder)}


BUILD_TWICE = """
import sys
from pathlib import Path
from pipeline.fixtures.build import build
for out in sys.argv[1:]:
    build("phi3-mini-4k", Path(out), seed=1, train_steps=50, base_vocab=512, log=lambda line: None)
"""


def test_fixture_build_is_deterministic(tmp_path):
    """Two builds of a trained fixture give the same bytes, file for file (50 steps: what varies between
    machines, threads and kernels, shows from the first step; the recipe's 1500 would cost minutes)."""
    run([TORCH_PYTHON, "-c", BUILD_TWICE, tmp_path / "one", tmp_path / "two"])
    assert sha256s(tmp_path / "one") == sha256s(tmp_path / "two")


def test_interrupted_build_leaves_nothing_that_looks_finished(tmp_path):
    out = tmp_path / "fixture"
    build = subprocess.Popen([TORCH_PYTHON, "-m", "pipeline.fixtures", "--recipe", "fixture-phi-3-mini-4k",
                              "--out", out], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and not any(tmp_path.glob(".fixture.partial-*/tokenizer.json")):
        time.sleep(0.5)
    assert any(tmp_path.glob(".fixture.partial-*/tokenizer.json")), "the build should be under way"
    build.send_signal(signal.SIGTERM)
    build.wait(timeout=60)
    assert not out.exists()
