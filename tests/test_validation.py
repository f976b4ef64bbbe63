"""The validation contract: its comparisons on the real reference data, and the validation.json schema."""
import jsonschema
import numpy as np
import pytest

from conftest import ARTIFACTS
from pipeline import validation

MODEL = "fixture-phi-3-mini-4k"


@pytest.fixture
def reference(pipeline_run):
    return validation.Reference(ARTIFACTS / MODEL / "reference")


def logits_from_top_k(reference, name):
    """Full logits rebuilt from the reference: its top-k exactly, the rest of its mass spread evenly."""
    ids, values, lse = reference.top_k(name)
    vocab = reference.data["facts"]["vocab_size"]
    rest = np.exp(lse.astype(np.float64)) - np.exp(values.astype(np.float64)).sum(-1)
    fill = np.log(np.maximum(rest, 1e-30) / (vocab - ids.shape[1]))
    logits = np.repeat(fill[:, None], vocab, axis=1)
    np.put_along_axis(logits, ids.astype(np.int64), values, axis=-1)
    return logits


def test_the_reference_agrees_with_itself(reference):
    logits = logits_from_top_k(reference, "passage")
    result = validation.compare_logits(reference, "passage", logits)
    assert result["top1_matches"] == result["positions"] == len(reference.sequence("passage"))
    assert abs(result["kl_per_position"]).max() < 1e-3
    assert result["max_abs_logprob_error"] < 1e-3


def test_swapped_top_tokens_are_counted_and_cost_kl(reference):
    logits = logits_from_top_k(reference, "passage")
    ids, values, _ = reference.top_k("passage")
    swapped = np.arange(0, ids.shape[0], 2)
    distinct = values[swapped, 0] > values[swapped, 1]
    logits[swapped, ids[swapped, 0]], logits[swapped, ids[swapped, 1]] = values[swapped, 1], values[swapped, 0]
    result = validation.compare_logits(reference, "passage", logits)
    assert result["top1_matches"] == ids.shape[0] - int(distinct.sum())
    assert result["kl_per_position"][swapped[distinct]].min() > 0
    assert result["max_abs_logprob_error"] > 0.01


def test_perplexity_of_uniform_and_of_certain_predictions():
    ids = [3, 1, 4, 1, 5]
    assert validation.perplexity(np.zeros((5, 8)), ids) == pytest.approx(8.0)
    certain = np.full((5, 8), -50.0)
    certain[np.arange(4), ids[1:]] = 50.0
    assert validation.perplexity(certain, ids) == pytest.approx(1.0)


def test_greedy_agreement_counts_the_shared_prefix():
    assert validation.greedy_agreement([5, 6, 7, 8], [5, 6, 7, 8]) == 1.0
    assert validation.greedy_agreement([5, 6, 7, 8], [5, 6, 9, 8]) == 0.5
    assert validation.greedy_agreement([5, 6], [4]) == 0.0


def test_a_divergence_at_a_near_tie_is_no_disagreement():
    assert validation.greedy_agreement([5, 6, 7, 8], [5, 6, 9, 8], [False, False, True, False]) == 1.0
    assert validation.greedy_agreement([5, 6, 7, 8], [5, 6, 9, 8], [True, True, False, True]) == 0.5
    assert validation.greedy_agreement([5, 6, 7], [5], [False]) == 1 / 3  # stopped early: no tie to read


def test_near_ties_are_read_off_the_reference_margins(reference):
    prompt = next(p for p in reference.data["prompts"] if p["kind"] == "chat")
    ids, logits, _ = reference.top_k(prompt["name"])
    at = len(prompt["prompt_ids"]) - 1  # the position that predicts the first generated token
    runner_up = int(ids[at, 1])
    gap = float(logits[at, 0] - logits[at, 1])
    assert validation.near_ties(reference, prompt, [runner_up], gap + 0.01) == [True]
    assert validation.near_ties(reference, prompt, [runner_up], gap - 0.01) == [False]
    assert validation.near_ties(reference, prompt, prompt["generated_ids"][:1], 0.0) == [False]


def test_failed_checks_are_attributed_only_to_a_deviation_that_explains_them():
    checks = record()["checks"]
    checks["kl"] = validation.check(False, "mean KL 0.9 > 0.25", mean=0.9)
    checks["stop"] = validation.check(False, "stopped on 3 of 12", stopped=3, prompts=12)
    checks["rope"] = validation.check(False, "long factor on short prompts", mean_kl=0.9,
                                      deviation=validation.deviation("rope-x", "the rope", ["kl", "perplexity"]))
    attributed, unexplained = validation.attribute(checks)
    assert attributed == {"rope": "rope-x", "kl": "rope-x"}  # perplexity passed: nothing to attribute
    assert unexplained == ["stop"]


def record(**changes):
    base = {
        "schema_version": 1, "model": MODEL, "artifact": "example/int4", "precision": "int4", "profile": "full",
        "runtime": {"name": "example", "version": "1.0"}, "device": {"intended": "cuda", "used": "cpu"},
        "status": "passed", "size_bytes": 1000, "bits_per_weight": 4.5, "load_time_s": 0.1, "tokens_per_s": 90.0,
        "not_run": ["CUDA execution provider: no GPU on this machine"],
        "thresholds": {"teacher_forced_top1": 0.9, "greedy_agreement": 0.6, "max_mean_kl": 0.25,
                       "max_perplexity_ratio": 1.25},
        "checks": {
            "tokenizer_parity": validation.check(True, "", prompts=13, mismatches=0),
            "stop": validation.check(True, "", stopped=12, prompts=12),
            "task": validation.check(True, "", answered=12, reference_answered=12, prompts=12),
            "greedy_agreement": validation.check(True, "", value=1.0, exact=12),
            "teacher_forced_top1": validation.check(True, "", value=0.99, positions=400),
            "kl": validation.check(True, "", mean=0.01, max=0.2, max_abs_logprob_error=0.3),
            "perplexity": validation.check(True, "", artifact=5.1, reference=5.0, ratio=1.02),
            "long_context": validation.not_run("no long prompt for this model"),
        },
    }
    base.update(changes)
    return base


def test_a_complete_record_is_written(tmp_path):
    validation.write(tmp_path / "validation.json", record())
    assert (tmp_path / "validation.json").exists()


def test_a_failed_check_must_say_why(tmp_path):
    bad = record()
    bad["checks"]["stop"] = {"status": "failed", "stopped": 3, "prompts": 12}
    with pytest.raises(jsonschema.ValidationError, match="'reason' is a required property"):
        validation.write(tmp_path / "validation.json", bad)
    assert not (tmp_path / "validation.json").exists()


def test_overall_status_names_each_failed_check():
    checks = record()["checks"]
    checks["stop"] = validation.check(False, "stopped on 3 of 12 prompts", stopped=3, prompts=12)
    assert validation.overall(checks) == ("failed", "stop: stopped on 3 of 12 prompts")


def test_record_without_device_used_is_rejected():
    with pytest.raises(jsonschema.ValidationError):
        validation.validate_record(record(device={"intended": "cpu"}))
