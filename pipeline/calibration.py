"""Calibration text for quantizers that weigh each weight by the activations it meets (llama.cpp's importance
matrix, mlx-lm's GPTQ): the model's own chat distribution, rendered by its chat template, and prose that no
validation prompt uses.

    python -m pipeline.calibration --checkpoint artifacts/<model>/checkpoint --out calibration.txt

Local and deterministic: the chats are pipeline.task conversations drawn with a seed of their own (neither the
validation prompts' nor the fixtures' training seed), each closed by its answer as the template renders an
assistant turn; the prose is pipeline/data/calibration-prose.txt, written for this and kept apart from the
validation passage.
"""
import argparse
import hashlib
import random
from pathlib import Path

from pipeline import checkpoint, task
from pipeline.cli import run_cli

PROSE = Path(__file__).parent / "data" / "calibration-prose.txt"
# What a target's calibration stage (or a build that calibrates itself, MLX's GPTQ) writes beside its output, and
# each calibrated artifact carries: {"method", "text": record(...), ...}; the publish stage's card reads it.
RECORD = "calibration.json"
SEED = 31337
CONVERSATIONS = 200


def chats(tokenizer, chat_template: str, count: int = CONVERSATIONS, seed: int = SEED) -> list[str]:
    rng = random.Random(seed)
    rendered = []
    for _ in range(count):
        messages, answer = task.make_conversation(rng)
        rendered.append(tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}],
                                                      chat_template=chat_template, tokenize=False))
    return rendered


def text(checkpoint_folder: Path) -> str:
    """The calibration text for the checkpoint: a prose paragraph after every tenth chat, so any chunk of it mixes
    both."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(checkpoint_folder)
    paragraphs = [p for p in PROSE.read_text().split("\n\n") if p.strip()]
    parts = []
    for number, chat in enumerate(chats(tokenizer, checkpoint.facts(checkpoint_folder)["chat_template"])):
        parts.append(chat)
        if number % 10 == 9 and paragraphs:
            parts.append(paragraphs[(number // 10) % len(paragraphs)].strip())
    return "\n".join(parts) + "\n"


def record(calibration: str) -> dict:
    """What the text was made from and what it is, for the artifacts built with it."""
    return {"sha256": hashlib.sha256(calibration.encode()).hexdigest(), "characters": len(calibration),
            "chats": {"source": "pipeline.task conversations, rendered by the checkpoint's chat template",
                      "seed": SEED, "count": CONVERSATIONS},
            "prose": {"file": f"pipeline/data/{PROSE.name}",
                      "sha256": hashlib.sha256(PROSE.read_bytes()).hexdigest()}}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path, help="the checkpoint folder")
    parser.add_argument("--out", required=True, type=Path, help="the text file to write")
    args = parser.parse_args(argv)
    args.out.write_text(text(args.checkpoint))
    print(args.out)


if __name__ == "__main__":
    run_cli(main)
