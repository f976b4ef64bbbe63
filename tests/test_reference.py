"""The float32 reference: the trained fixtures answer the task and end their turn; the stored logits fit."""
import math

import pytest
from safetensors.numpy import load_file

from conftest import ARTIFACTS, FIXTURES, read_json
from pipeline import task


def reference(model):
    return read_json(ARTIFACTS / model / "reference" / "reference.json")


@pytest.mark.parametrize("model", FIXTURES)
def test_every_fixture_answers_decisively_and_stops_at_end(pipeline_run, model):
    """Trained until its answers are not near ties: at least 11 of 12 answered, 12 of 12 ended with <|end|>."""
    data = reference(model)
    end_id = read_json(ARTIFACTS / model / "checkpoint" / "added_tokens.json")["<|end|>"]
    chats = [p for p in data["prompts"] if p["kind"] == "chat"]
    assert len(chats) == len(task.prompt_set())
    for prompt in chats:
        assert prompt["stop_token_id"] == end_id, prompt["name"]
        assert len(prompt["top1_margins"]) == len(prompt["generated_ids"])
    assert data["summary"]["stopped"] == len(chats) and data["summary"]["answered"] >= len(chats) - 1
    assert data["summary"]["answered"] == sum(task.is_answered(p["answer"], p["generated_text"]) for p in chats)
    assert data["summary"]["median_top1_margin"] > 2.0  # nats: the top-1 is seven times likelier than the next


@pytest.mark.parametrize("model", FIXTURES)
def test_logits_are_stored_for_every_position(pipeline_run, model):
    data = reference(model)
    tensors = load_file(str(ARTIFACTS / model / "reference" / "logits.safetensors"))
    for prompt in data["prompts"]:
        positions = len(prompt["prompt_ids"]) + len(prompt.get("generated_ids", []))
        assert positions == prompt["sequence_length"]
        assert tensors[f"{prompt['name']}.topk_ids"].shape == (positions, data["top_k"])
        assert tensors[f"{prompt['name']}.topk_logits"].shape == (positions, data["top_k"])
        top = tensors[f"{prompt['name']}.topk_logits"]
        assert (top[:, :-1] >= top[:, 1:]).all()
        assert (tensors[f"{prompt['name']}.logsumexp"] >= top[:, 0]).all()


def test_long_prompts_cross_each_context_boundary(pipeline_run):
    def long_prompts(model):
        return {p["name"]: len(p["prompt_ids"]) for p in reference(model)["prompts"] if p["kind"] == "long"}

    assert long_prompts("fixture-phi-3-mini-4k") == {"long-past-sliding-window": 2047 + 64}
    assert long_prompts("fixture-phi-3-mini-128k") == {"long-past-original-context": 4096 + 64}
    assert long_prompts("fixture-phi-3.5-moe") == {"long-past-original-context": 4096 + 64}


@pytest.mark.parametrize("model", FIXTURES)
def test_trained_fixture_reads_prose_better_than_chance(pipeline_run, model):
    data = reference(model)
    vocab = read_json(ARTIFACTS / model / "checkpoint" / "config.json")["vocab_size"]
    assert 1 < data["summary"]["perplexity"]["passage"] < vocab / 4
    assert math.isfinite(data["summary"]["perplexity"]["passage"])
