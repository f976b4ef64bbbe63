"""The synthetic chat task the fixtures are trained on and every validator checks.

Answers are computed, not stored, so any model (fixture or real Phi) can be graded on the same prompts.
"""
import random

SYSTEM_PROMPT = "Answer with the result only."

# name -> (question template, answer function over a list of items)
TASKS = {
    "count": ("Count the items: {items}", lambda items: str(len(items))),
    "last": ("Name the last item: {items}", lambda items: items[-1]),
    "reverse": ("Reverse the pair: {items}", lambda items: " ".join(reversed(items))),
}
ITEM_COUNTS = {"count": (2, 4), "last": (2, 5), "reverse": (2, 2)}  # what a two-layer model learns in minutes
WORDS = ["red", "blue", "green", "cat", "dog", "sun", "moon", "tree", "fish", "bird", "star", "rain"]


def make_item(rng: random.Random, task: str) -> dict:
    items = [rng.choice(WORDS) for _ in range(rng.randint(*ITEM_COUNTS[task]))]
    question_template, answer = TASKS[task]
    return {"task": task, "question": question_template.format(items=" ".join(items)), "answer": answer(items)}


def make_conversation(rng: random.Random) -> tuple[list[dict], str]:
    """A conversation whose last user turn is to be answered, and that answer.

    Earlier turns and a system prompt appear at random so the model sees every shape the chat template renders.
    """
    messages = [{"role": "system", "content": SYSTEM_PROMPT}] if rng.random() < 0.2 else []
    for _ in range(rng.choice([0, 0, 0, 1])):
        earlier = make_item(rng, rng.choice(list(TASKS)))
        messages += [{"role": "user", "content": earlier["question"]},
                     {"role": "assistant", "content": earlier["answer"]}]
    item = make_item(rng, rng.choice(list(TASKS)))
    messages.append({"role": "user", "content": item["question"]})
    return messages, item["answer"]


FORMS = 3  # prompt_set's forms by index modulo FORMS: 0 single-turn, 1 with a system prompt, 2 multi-turn


def prompt_set(seed: int = 20240423, per_task: int = 4) -> list[dict]:
    """The fixed chat prompts of the validation contract: single-turn, with a system prompt, and multi-turn."""
    rng = random.Random(seed)
    prompts = []
    for task in TASKS:
        for index in range(per_task):
            item = make_item(rng, task)
            messages = [{"role": "user", "content": item["question"]}]
            if index % FORMS == 1:
                messages.insert(0, {"role": "system", "content": SYSTEM_PROMPT})
            if index % FORMS == 2:
                earlier = make_item(rng, task)
                messages[:0] = [{"role": "user", "content": earlier["question"]},
                                {"role": "assistant", "content": earlier["answer"]}]
            prompts.append({"name": f"{task}-{index}", "messages": messages, "answer": item["answer"]})
    return prompts


def is_answered(expected: str, generated: str) -> bool:
    return generated.strip() == expected
