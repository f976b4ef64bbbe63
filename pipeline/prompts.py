"""The validation contract's prompt set, built from the checkpoint's own facts so it fits any Phi model.

- chat: the fixture task's prompts (single-turn, system prompt, multi-turn), graded by pipeline.task;
- text: a plain prose passage, for perplexity;
- long: prose past each context boundary the model has: past original_max_position_embeddings for longrope
  models (where short and long rope factors switch), past sliding_window where it is shorter than the context.

A profile says which chat prompts run (PROFILES); the passage and the long prompts run in each.
"""
from pathlib import Path

from pipeline import task

PASSAGE = (Path(__file__).parent / "data" / "passage.txt").read_text()
PAST_BOUNDARY = 64  # tokens beyond a boundary, enough for every runtime to be on the far side of it
PAST_ORIGINAL_CONTEXT, PAST_SLIDING_WINDOW = "long-past-original-context", "long-past-sliding-window"
WITHOUT_SLIDING_WINDOW = "without_sliding_window"  # the reference's variant for PAST_SLIDING_WINDOW, in its tensors
# Validation profiles: every check of the contract runs in each. "ci" bounds the cost of CI artifact builds: of each
# task one prompt, each in another form (single-turn, with a system prompt, multi-turn). "full" is the default, and
# the only one the publish gate lets through.
PROFILES = {"full": "every chat prompt", "ci": "one chat prompt per task, each in another form"}


def chat_ids(tokenizer, messages: list[dict], chat_template: str | None = None) -> list[int]:
    """Token ids of a chat as the HF tokenizer makes them with the checkpoint's template (or the given one)."""
    return list(tokenizer.apply_chat_template(messages, chat_template=chat_template, add_generation_prompt=True,
                                              tokenize=True, return_dict=True)["input_ids"])


def long_lengths(facts: dict) -> dict[str, int]:
    lengths = {}
    if facts.get("rope_type") == "longrope" and facts.get("original_context_length"):
        lengths[PAST_ORIGINAL_CONTEXT] = facts["original_context_length"] + PAST_BOUNDARY
    window = facts.get("sliding_window")
    if window and window < facts["context_length"]:
        lengths[PAST_SLIDING_WINDOW] = window + PAST_BOUNDARY
    return lengths


def chat_prompts(profile: str) -> list[dict]:
    prompts = task.prompt_set()
    if profile == "ci":
        kept = {f"{name}-{number % task.FORMS}" for number, name in enumerate(task.TASKS)}
        prompts = [p for p in prompts if p["name"] in kept]
    return prompts


def build(facts: dict, encode_text, chat_ids, profile: str = "full") -> list[dict]:
    """Prompts with their token ids; `encode_text(str)` and `chat_ids(messages)` come from the tokenizer."""
    prompts = [{"kind": "chat", **item, "ids": chat_ids(item["messages"])} for item in chat_prompts(profile)]
    passage_ids = encode_text(PASSAGE)
    prompts.append({"kind": "text", "name": "passage", "text": PASSAGE, "ids": passage_ids})
    for name, length in long_lengths(facts).items():
        ids = list(passage_ids)
        while len(ids) < length:
            ids += passage_ids
        prompts.append({"kind": "long", "name": name, "ids": ids[:length]})
    return prompts
