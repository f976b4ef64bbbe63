"""The validation contract: the numbers every artifact's validator computes against the float32 reference,
and the one validation.json schema they are written in (pipeline/schemas/validation.schema.yaml).

numpy only, so it runs inside every toolchain's environment. A runtime adapter supplies full-vocabulary logits
for the reference's token sequences; these functions do the comparing.
"""
import json
import math
from pathlib import Path

import jsonschema
import numpy as np
import yaml
from safetensors.numpy import load_file

from pipeline.atomic import atomic_file

SCHEMA = Path(__file__).parent / "schemas" / "validation.schema.yaml"


class ArtifactError(Exception):
    """Raised by a runtime adapter's open() when the artifact cannot be loaded: the message says which file and why.

    Defined here, not in pipeline.validate, so it is one class when the validator runs as `python -m`."""


class Reference:
    """artifacts/<model>/reference/: reference.json and the top-k logits per prompt and position."""

    def __init__(self, folder: Path):
        folder = Path(folder)
        self.data = json.loads((folder / "reference.json").read_text())
        self.tensors = load_file(str(folder / "logits.safetensors"))
        self.prompts = {p["name"]: p for p in self.data["prompts"]}

    def sequence(self, name: str) -> list[int]:
        prompt = self.prompts[name]
        return prompt["prompt_ids"] + prompt.get("generated_ids", [])

    def top_k(self, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.tensors[f"{name}.topk_ids"], self.tensors[f"{name}.topk_logits"],
                self.tensors[f"{name}.logsumexp"])


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def compare_logits(reference: Reference, name: str, logits: np.ndarray) -> dict:
    """Teacher-forced comparison of a runtime's [positions x vocab] logits with the reference's top-k.

    KL(reference || runtime) is summed over the reference's top-k tokens, which hold nearly all its mass.
    """
    ids, ref_logits, ref_lse = reference.top_k(name)
    if logits.shape[0] != ids.shape[0]:
        raise ValueError(f"{name}: runtime gave {logits.shape[0]} positions, reference has {ids.shape[0]}")
    runtime_logprobs = np.take_along_axis(log_softmax(logits), ids.astype(np.int64), axis=-1)
    ref_logprobs = ref_logits.astype(np.float64) - ref_lse[:, None]
    ref_probs = np.exp(ref_logprobs)
    kl = (ref_probs * (ref_logprobs - runtime_logprobs)).sum(-1)
    return {"positions": int(ids.shape[0]),
            "top1_matches": int((logits.argmax(-1) == ids[:, 0]).sum()),
            "kl_per_position": kl,
            "max_abs_logprob_error": float(np.abs(ref_logprobs[:, 0] - runtime_logprobs[:, 0]).max())}


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    logprobs = log_softmax(logits[:-1])
    targets = np.asarray(ids[1:], dtype=np.int64)
    return math.exp(-float(np.take_along_axis(logprobs, targets[:, None], axis=-1).mean()))


def first_difference(reference_ids: list[int], runtime_ids: list[int]) -> int:
    for index, (ours, theirs) in enumerate(zip(reference_ids, runtime_ids)):
        if ours != theirs:
            return index
    return min(len(reference_ids), len(runtime_ids))


def greedy_agreement(reference_ids: list[int], runtime_ids: list[int]) -> float:
    """Share of the reference's greedy continuation the runtime reproduced before its first different token."""
    same = 0
    for ours, theirs in zip(reference_ids, runtime_ids):
        if ours != theirs:
            break
        same += 1
    return same / max(len(reference_ids), 1)


def check(passed: bool, reason: str, **numbers) -> dict:
    return {"status": "passed" if passed else "failed", **({} if passed else {"reason": reason}), **numbers}


def not_run(reason: str) -> dict:
    return {"status": "not_run", "reason": reason}


def overall(checks: dict) -> tuple[str, str | None]:
    failed = [f"{name}: {c['reason']}" for name, c in checks.items() if c["status"] == "failed"]
    return ("failed", "; ".join(failed)) if failed else ("passed", None)


def validate_record(record: dict):
    schema = yaml.safe_load(SCHEMA.read_text())
    jsonschema.validate(record, schema, cls=jsonschema.Draft202012Validator)


def write(path: Path, record: dict):
    validate_record(record)
    with atomic_file(Path(path)) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
