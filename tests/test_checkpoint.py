"""Facts a target needs come from the checkpoint's own files; a recipe's overrides win."""
import pytest

from conftest import ARTIFACTS, read_json
from pipeline.checkpoint import CheckpointError, facts


def folder(model):
    return ARTIFACTS / model / "checkpoint"


def test_facts_come_from_the_checkpoint_files(pipeline_run):
    mini = facts(folder("fixture-phi-3-mini-4k"))
    added = read_json(folder("fixture-phi-3-mini-4k") / "added_tokens.json")
    assert mini["stop_tokens"] == ["<|endoftext|>", "<|assistant|>", "<|end|>"]
    assert mini["stop_token_ids"] == [added[t] for t in mini["stop_tokens"]]
    assert (mini["context_length"], mini["sliding_window"], mini["rope_type"]) == (4096, 2047, None)
    tokenizer_config = read_json(folder("fixture-phi-3-mini-4k") / "tokenizer_config.json")
    assert mini["chat_template"] == tokenizer_config["chat_template"]

    moe = facts(folder("fixture-phi-3.5-moe"))
    assert moe["architecture"] == "PhiMoEForCausalLM" and moe["rope_type"] == "longrope"
    assert moe["original_context_length"] == 4096, "read from rope_scaling when the top level lacks it"

    phi4 = facts(folder("fixture-phi-4-mini"))
    assert phi4["stop_tokens"] == ["<|end|>", "<|endoftext|>"] and phi4["tied_embeddings"]


def test_recipe_overrides_win(pipeline_run):
    added = read_json(folder("fixture-phi-3-mini-4k") / "added_tokens.json")
    found = facts(folder("fixture-phi-3-mini-4k"), {"stop_tokens": ["<|end|>"], "context_length": 2048})
    assert found["stop_token_ids"] == [added["<|end|>"]] and found["context_length"] == 2048


def test_override_with_a_token_the_tokenizer_lacks_is_refused(pipeline_run):
    with pytest.raises(CheckpointError, match=r"stop_tokens \['<\|eot_id\|>'\]"):
        facts(folder("fixture-phi-3-mini-4k"), {"stop_tokens": ["<|eot_id|>"]})
