"""What every runtime adapter implements, and the criteria the validator and the adapters share.

Imports no stage: an adapter (pipeline/targets/<target>/runtime.py) imports this, never pipeline.validate.
"""
import math

import numpy as np

from pipeline.validation import ArtifactError, Reference, check, not_run  # noqa: F401  (the adapters' one import)


class Runtime:
    """What an adapter gives the validator: `open(folder, checkpoint, facts, spec) -> Runtime` in its module.

    Token ids are the reference's own, so numbers compare the model, not the tokenizer; `chat_ids` is how
    the runtime itself turns a chat into tokens, compared separately.
    """
    name = "unknown"
    version = "unknown"
    device_used = "cpu"
    # What this host cannot run for the artifact, and what ran in its place: [(what, instead)]; see stand_in().
    stand_ins: list[tuple[str, str]] = []
    # The context the artifact states it is exact up to, where less than the checkpoint's; None: the checkpoint's.
    context_length: int | None = None

    def chat_ids(self, messages: list[dict]) -> list[int]:
        """The prompt ids this runtime's own tokenizer and chat template give, generation prompt included."""
        raise NotImplementedError

    def logits(self, ids: list[int]) -> np.ndarray:
        """Teacher-forced float32 logits, [len(ids) x vocab], the most precise the runtime computes."""
        raise NotImplementedError

    def generate(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """Greedy continuation that stops on the end tokens the artifact itself declares; the end token included."""
        raise NotImplementedError

    def decode(self, ids: list[int]) -> str:
        raise NotImplementedError

    def explain_tokenizer_difference(self, reference_ids: list[int], runtime_ids: list[int]) -> str | None:
        """A known, documented difference of this runtime's tokenizer (e.g. BOS added) that accounts for all of
        the difference, in words; None when it does not. Explained differences are reported, not failed."""
        return None

    def extra_checks(self, reference: Reference) -> dict:
        """Checks only this target has (file metadata, a Modelfile ...): name -> pipeline.validation.check()."""
        return {}


# Devices an artifact may be built for that this host has no runtime for, by the name targets.yaml uses.
DEVICES = {"cuda": "the CUDA execution provider (NVIDIA GPU)", "dml": "the DirectML execution provider (Windows GPU)",
           "metal": "Metal (Apple GPU)", "gpu": "the GPU plugin", "npu": "the NPU plugin"}


def stand_in(what: str, instead: str) -> str:
    """The one wording of a stand-in, in validation.json's not_run list and so in every card and report."""
    return f"{what}: not run here; in its place: {instead}"


def device_stand_in(device: str, instead: str) -> tuple[str, str] | None:
    """(what, instead) when the artifact is built for a device this host lacks; None for the CPU."""
    return (DEVICES.get(device, device), instead) if device != "cpu" else None


def enough(count: int, reference_count: int, ratio: float) -> tuple[bool, int]:
    """The stop and task criterion: at least `ratio` of what the reference managed; (met, how many needed)."""
    need = math.ceil(reference_count * ratio)
    return count >= need, need


def window_kl_before(kl_per_position: np.ndarray, boundary: int, window: int) -> float:
    """The largest mean KL of any `window` consecutive positions before the boundary."""
    before = kl_per_position[:boundary]
    starts = range(0, max(len(before) - window, 0) + 1, window)
    return max(float(before[start:start + window].mean()) for start in starts)


def jumps_past_boundary(kl_per_position: np.ndarray, boundary: int, limit: float) -> bool:
    """The long-context criterion: a boundary the runtime mishandles (sliding window, short/long rope factors)
    shows as KL that jumps past it. Past it is a window of a few dozen positions, whose mean KL swings by more
    than the mean of the whole prefix does (0.25..0.56 over the windows of one int4 prompt): so it is held
    against the worst window of the same size before the boundary, plus the precision's KL limit."""
    past = kl_per_position[boundary:]
    return float(past.mean()) > window_kl_before(kl_per_position, boundary, len(past)) + limit
