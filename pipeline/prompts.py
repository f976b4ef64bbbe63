"""The validation contract's prompt set, built from the checkpoint's own facts so it fits any Phi model.

- chat: the fixture task's prompts (single-turn, system prompt, multi-turn), graded by pipeline.task;
- text: a plain prose passage, for perplexity;
- long: prose past each context boundary the model has: past original_max_position_embeddings for longrope
  models (where short and long rope factors switch), past sliding_window where it is shorter than the context.
"""
from pathlib import Path

from pipeline import task

PASSAGE = (Path(__file__).parent / "data" / "passage.txt").read_text()
PAST_BOUNDARY = 64  # tokens beyond a boundary, enough for every runtime to be on the far side of it
PAST_ORIGINAL_CONTEXT, PAST_SLIDING_WINDOW = "long-past-original-context", "long-past-sliding-window"
WITHOUT_SLIDING_WINDOW = "without_sliding_window"  # the reference's variant for PAST_SLIDING_WINDOW, in its tensors


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


def build(facts: dict, encode_text, chat_ids) -> list[dict]:
    """Prompts with their token ids; `encode_text(str)` and `chat_ids(messages)` come from the tokenizer."""
    prompts = [{"kind": "chat", **item, "ids": chat_ids(item["messages"])} for item in task.prompt_set()]
    passage_ids = encode_text(PASSAGE)
    prompts.append({"kind": "text", "name": "passage", "text": PASSAGE, "ids": passage_ids})
    for name, length in long_lengths(facts).items():
        ids = list(passage_ids)
        while len(ids) < length:
            ids += passage_ids
        prompts.append({"kind": "long", "name": name, "ids": ids[:length]})
    return prompts
