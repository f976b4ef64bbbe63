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

    def top_k(self, name: str, variant: str | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The stored top-k of prompt `name`; of a variant of the reference model (e.g. without_sliding_window)."""
        key = f"{name}.{variant}" if variant else name
        return (self.tensors[f"{key}.topk_ids"], self.tensors[f"{key}.topk_logits"], self.tensors[f"{key}.logsumexp"])

    def has(self, name: str, variant: str) -> bool:
        return f"{name}.{variant}.topk_ids" in self.tensors


def log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


# Positions whose float64 log-probabilities are computed together: at once, a 4160-token prompt over Phi-4-mini's
# 200064-token vocabulary is 6.7 GB per float64 copy, and log_softmax makes three.
POSITIONS_AT_ONCE = 256


def log_softmax_at(logits: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """log_softmax(logits) taken at `ids` ([positions x k]), a block of positions at a time: the same numbers."""
    out = np.empty(ids.shape, dtype=np.float64)
    for start in range(0, len(logits), POSITIONS_AT_ONCE):
        rows = slice(start, start + POSITIONS_AT_ONCE)
        out[rows] = np.take_along_axis(log_softmax(logits[rows]), ids[rows], axis=-1)
    return out


def compare_logits(reference: Reference, name: str, logits: np.ndarray, variant: str | None = None,
                   near_tie_margin: float = 0.0) -> dict:
    """Teacher-forced comparison of a runtime's [positions x vocab] logits with the reference's top-k.

    KL(reference || runtime) is summed over the reference's top-k tokens, which hold nearly all its mass. Top-1
    agreement is counted where the reference is decisive: a position whose top-2 log-probabilities are within
    `near_tie_margin` is a near tie that any rounding may flip, counted apart (near_tie_positions).
    """
    ids, ref_logits, ref_lse = reference.top_k(name, variant)
    if logits.shape[0] != ids.shape[0]:
        raise ValueError(f"{name}: runtime gave {logits.shape[0]} positions, reference has {ids.shape[0]}")
    runtime_logprobs = log_softmax_at(logits, ids.astype(np.int64))
    ref_logprobs = ref_logits.astype(np.float64) - ref_lse[:, None]
    ref_probs = np.exp(ref_logprobs)
    kl = (ref_probs * (ref_logprobs - runtime_logprobs)).sum(-1)
    decisive = (ref_logits[:, 0] - ref_logits[:, 1]) >= near_tie_margin
    return {"positions": int(decisive.sum()), "near_tie_positions": int((~decisive).sum()),
            "top1_matches": int(((logits.argmax(-1) == ids[:, 0]) & decisive).sum()),
            "kl_per_position": kl,
            "max_abs_logprob_error": float(np.abs(ref_logprobs[:, 0] - runtime_logprobs[:, 0]).max())}


def perplexity(logits: np.ndarray, ids: list[int]) -> float:
    targets = np.asarray(ids[1:], dtype=np.int64)
    return math.exp(-float(log_softmax_at(logits[:-1], targets[:, None]).mean()))


def first_difference(reference_ids: list[int], runtime_ids: list[int]) -> int:
    for index, (ours, theirs) in enumerate(zip(reference_ids, runtime_ids)):
        if ours != theirs:
            return index
    return min(len(reference_ids), len(runtime_ids))


def greedy_agreement(reference_ids: list[int], runtime_ids: list[int], near_tie: list[bool] | None = None) -> float:
    """Share of the reference's greedy continuation the runtime reproduced before its first different token.

    A first difference where `near_tie` says the reference itself nearly chose the runtime's token is no
    disagreement of the artifact: the rest of the continuation is not comparable, and the prompt counts as agreed.
    """
    if diverged_at_near_tie(reference_ids, runtime_ids, near_tie):
        return 1.0
    return first_difference(reference_ids, runtime_ids) / max(len(reference_ids), 1)


def diverged_at_near_tie(reference_ids: list[int], runtime_ids: list[int], near_tie: list[bool] | None) -> bool:
    at = first_difference(reference_ids, runtime_ids)
    return bool(near_tie) and at < min(len(reference_ids), len(near_tie)) and near_tie[at]


def near_ties(reference: Reference, prompt: dict, runtime_ids: list[int], margin: float) -> list[bool]:
    """Per generated position: the runtime's token is within `margin` (log-probability) of the reference's top-1."""
    ids, logits, _ = reference.top_k(prompt["name"])
    start = len(prompt["prompt_ids"]) - 1
    ties = []
    for offset, token in enumerate(runtime_ids[:len(prompt["generated_ids"])]):
        row_ids, row = ids[start + offset], logits[start + offset]
        found = np.flatnonzero(row_ids == token)
        ties.append(bool(found.size) and float(row[0] - row[found[0]]) < margin)
    return ties


def check(passed: bool, reason: str, **numbers) -> dict:
    return {"status": "passed" if passed else "failed", **({} if passed else {"reason": reason}), **numbers}


def not_run(reason: str) -> dict:
    return {"status": "not_run", "reason": reason}


IGNORES_SLIDING_WINDOW = ("the runtime attends past the checkpoint's sliding_window (full attention): past the "
                          "window each position sees tokens the model itself never attends to")


def deviation(id: str, cause: str, explains: list[str], numbers: str = "") -> dict:
    """What a check carries when it has measured a named deviation of the runtime or checkpoint: its id, the cause
    in words, the numbers that show it on this artifact, and the contract checks whose failure it accounts for
    (proven by the check's own numbers)."""
    return {"id": id, "cause": cause, "numbers": numbers, "explains": explains}


def attribute(checks: dict) -> tuple[dict, list[str]]:
    """Each failed check -> the id of the deviation that accounts for it; and the failed checks none accounts for."""
    attributed = {}
    for name, result in checks.items():
        found = result.get("deviation")
        for explained in ([name, *found["explains"]] if found else []):
            if checks.get(explained, {}).get("status") == "failed":
                attributed.setdefault(explained, found["id"])
    unexplained = [name for name, result in checks.items() if result["status"] == "failed" and name not in attributed]
    return attributed, unexplained


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
