"""The BPE pre-tokenizer of a checkpoint, named as llama.cpp names it (tokenizer.ggml.pre), by what it is.

llama.cpp's converter knows a pre-tokenizer only by the hash of one test string's tokenization
(get_vocab_base_pre), which depends on the vocabulary: a checkpoint with its own, smaller or retrained vocabulary
never matches, although its pre-tokenizer may be exactly one llama.cpp implements. Here the tokenizer.json
pre_tokenizer is compared, step by step, with those llama.cpp implements; llama.cpp's src/llama-vocab.cpp quotes
each one's tokenizer.json regex beside its own rewrite of it. The validator's tokenizer parity proves the match.
"""
import json
from pathlib import Path

# o200k's split, as llama-vocab.cpp quotes it for LLAMA_VOCAB_PRE_TYPE_GPT4O ("original regex from tokenizer.json").
O200K_SPLIT = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
               r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")

# tokenizer.ggml.pre -> its pre-tokenizer steps, in the form steps() gives them.
KNOWN = {
    "gpt-4o": [("Split", O200K_SPLIT), ("ByteLevel", False, False)],  # Phi-4-mini (Xenova/gpt-4o in the converter)
}


def step(entry: dict) -> tuple:
    """One pre-tokenizer step as what decides the token ids. A Split that keeps only the regex's matches (Removed,
    inverted) splits like one that isolates them when the regex matches every character, as o200k's does (its
    last alternative is \\s+ after one for every other character class); ByteLevel's trim_offsets moves offsets,
    not ids."""
    kind = entry["type"]
    if kind == "Split":
        pattern = entry["pattern"].get("Regex")
        keeps_matches = (entry["behavior"], entry.get("invert", False)) in {("Isolated", False), ("Removed", True)}
        return ("Split", pattern) if pattern and keeps_matches else ("Split", json.dumps(entry, sort_keys=True))
    if kind == "ByteLevel":
        return "ByteLevel", entry.get("add_prefix_space", False), entry.get("use_regex", True)
    return kind, json.dumps(entry, sort_keys=True)


def steps(pre_tokenizer: dict | None) -> list[tuple]:
    if not pre_tokenizer:
        return []
    if pre_tokenizer["type"] == "Sequence":
        return [step(entry) for entry in pre_tokenizer["pretokenizers"]]
    return [step(pre_tokenizer)]


def identify(tokenizer_json: Path) -> str | None:
    """The name llama.cpp gives the checkpoint's pre-tokenizer, or None when it implements none like it."""
    found = steps(json.loads(Path(tokenizer_json).read_text()).get("pre_tokenizer"))
    return next((name for name, known in KNOWN.items() if known == found), None)
