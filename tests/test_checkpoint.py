"""Facts a target needs come from the checkpoint's own files; a recipe's overrides win."""
import json
import shutil

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


@pytest.mark.parametrize("model", ["fixture-phi-3-mini-4k", "fixture-phi-3-medium-4k", "fixture-phi-4-mini"])
def test_end_of_turn_is_read_off_each_chat_template(pipeline_run, model):
    """Three templates, three ways of closing an assistant turn, one answer: the added token after the message."""
    assert facts(folder(model))["end_of_turn"] == "<|end|>"


def test_an_eos_list_without_the_end_of_turn_gets_it_and_a_finding(pipeline_run, tmp_path):
    copy = tmp_path / "checkpoint"
    shutil.copytree(folder("fixture-phi-3-mini-4k"), copy)
    added = read_json(copy / "added_tokens.json")
    (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": added["<|endoftext|>"]}))
    found = facts(copy)
    assert found["stop_token_ids"] == [added["<|endoftext|>"], added["<|end|>"]]
    assert [f["id"] for f in found["findings"]] == ["eos-lacks-end-of-turn"]
    assert found["findings"][0]["numbers"] == {"eos_token_ids": [added["<|endoftext|>"]],
                                               "end_of_turn_id": added["<|end|>"]}
    overridden = facts(copy, {"stop_tokens": ["<|endoftext|>"]})  # the recipe's list wins, exactly
    assert overridden["stop_token_ids"] == [added["<|endoftext|>"]] and overridden["findings"] == []
    (copy / "generation_config.json").unlink()
    config = read_json(copy / "config.json")
    del config["eos_token_id"]
    (copy / "config.json").write_text(json.dumps(config))
    assert facts(copy)["stop_token_ids"] == [added["<|end|>"]]  # no eos anywhere: the template's still stops it
