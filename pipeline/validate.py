"""The one validator: every check of the validation contract, run on any runtime through its target's adapter.

    python -m pipeline.validate --target gguf --artifact Q4_K_M --recipe fixture-phi-3-mini-4k \
        --folder artifacts/fixture-phi-3-mini-4k/gguf/Q4_K_M --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint \
        --reference artifacts/fixture-phi-3-mini-4k/reference --out /tmp/Q4_K_M.validation.json --threads 2

The adapter is pipeline/targets/<target>/runtime.py: `open(folder, checkpoint, facts, spec, threads) -> Runtime`
(pipeline/runtimes/base.py). Runs in the target's toolchain environment. Writes validation.json whatever the
outcome; its status says whether the artifact passed.
"""
import argparse
import importlib
import math
import time
from pathlib import Path

import numpy as np

from pipeline import checkpoint, recipes, task
from pipeline.build import failure as build_failure
from pipeline.cli import run_cli
from pipeline.prompts import PAST_BOUNDARY, WITHOUT_SLIDING_WINDOW
from pipeline.resources import DECODE_THREADS
from pipeline.runtimes.base import Runtime, enough, jumps_past_boundary, stand_in, window_kl_before
from pipeline.validation import (IGNORES_SLIDING_WINDOW, ArtifactError, Reference, attribute, check, compare_logits,
                                 deviation, diverged_at_near_tie, first_difference, greedy_agreement, near_ties,
                                 not_run, overall, perplexity, write)

CONTRACT_CHECKS = ("tokenizer_parity", "stop", "task", "greedy_agreement", "teacher_forced_top1", "kl", "perplexity")
NOT_RUN_AFTER = {"build": "the artifact was not built", "load": "the artifact did not load"}


def tokenizer_parity(runtime: Runtime, chats: list[dict]) -> dict:
    differences = []
    for prompt in chats:
        ours, theirs = prompt["prompt_ids"], runtime.chat_ids(prompt["messages"])
        if ours == theirs:
            continue
        at = first_difference(ours, theirs)
        explanation = runtime.explain_tokenizer_difference(ours, theirs)
        differences.append({"prompt": prompt["name"], "at": at, "reference": ours[at:at + 4],
                            "runtime": theirs[at:at + 4], "lengths": [len(ours), len(theirs)],
                            "explained": explanation})
    unexplained = [d for d in differences if not d["explained"]]
    first = unexplained[0] if unexplained else None
    reason = (f"{len(unexplained)} of {len(chats)} chat prompts tokenize differently from the checkpoint's HF "
              f"tokenizer; first: {first['prompt']} at token {first['at']}, HF {first['reference']} vs "
              f"{first['runtime']}") if first else ""
    return check(not unexplained, reason, prompts=len(chats), mismatches=len(differences), differences=differences)


def decode_speed(runtime: Runtime, timings: list[tuple[list[int], int, float]]) -> float | None:
    """Tokens/s past the first token: each prompt's generation time less that of the same prompt generating one
    token (its prefill), timed after, so a runtime that caches the prompt comes out slower, never faster."""
    tokens = seconds = 0.0
    for ids, generated, took in timings:
        if generated > 1:
            started = time.perf_counter()
            runtime.generate(ids, 1)
            tokens += generated - 1
            seconds += max(took - (time.perf_counter() - started), 0.0)
    return tokens / seconds if seconds else None


def generation_checks(runtime: Runtime, reference: Reference, thresholds: dict) -> tuple[dict, dict]:
    """Stop, task and greedy agreement over the chat prompts, generating from the reference's prompt ids; and
    the speed: tokens/s of whole generations, prefill included, and of decoding alone."""
    chats = [p for p in reference.data["prompts"] if p["kind"] == "chat"]
    stop_ids = set(reference.data["facts"]["stop_token_ids"])
    max_new = reference.data["max_new_tokens"]
    stopped = answered = exact = tokens = ties = 0
    agreement, seconds, timings = [], 0.0, []
    for prompt in chats:
        started = time.perf_counter()
        generated = runtime.generate(prompt["prompt_ids"], max_new)
        timings.append((prompt["prompt_ids"], len(generated), time.perf_counter() - started))
        seconds += timings[-1][2]
        tokens += len(generated)
        ends = bool(generated) and generated[-1] in stop_ids
        text = runtime.decode(generated[:-1] if ends else generated)
        stopped += ends
        answered += ends and task.is_answered(prompt["answer"], text)
        exact += generated == prompt["generated_ids"]
        tied = near_ties(reference, prompt, generated, thresholds["near_tie_margin"])
        agreement.append(greedy_agreement(prompt["generated_ids"], generated, tied))
        ties += diverged_at_near_tie(prompt["generated_ids"], generated, tied)
    summary = reference.data["summary"]
    ratio = thresholds["task_answered_ratio"]
    stopped_enough, need_stopped = enough(stopped, summary["stopped"], ratio)
    answered_enough, need_answered = enough(answered, summary["answered"], ratio)
    mean_agreement = float(np.mean(agreement))
    checks = {
        "stop": check(stopped_enough,
                      f"stopped on an end token {sorted(stop_ids)} in {stopped} of {len(chats)} chat prompts "
                      f"(reference {summary['stopped']}, at least {need_stopped} needed)",
                      stopped=stopped, prompts=len(chats)),
        "task": check(answered_enough,
                      f"answered {answered} of {len(chats)} (reference {summary['answered']}, at least "
                      f"{need_answered} needed)", answered=answered, reference_answered=summary["answered"],
                      prompts=len(chats)),
        "greedy_agreement": check(mean_agreement >= thresholds["greedy_agreement"],
                                  f"greedy agreement {mean_agreement:.3f} < {thresholds['greedy_agreement']}",
                                  value=mean_agreement, exact=exact, diverged_at_near_tie=ties,
                                  near_tie_margin=thresholds["near_tie_margin"]),
    }
    return checks, {"tokens_per_s": tokens / seconds if seconds else None,
                    "decode_tokens_per_s": decode_speed(runtime, timings)}


def long_prompt_numbers(reference: Reference, prompt: dict, sequence: list[int], logits: np.ndarray,
                        compared: dict) -> dict:
    kl = compared["kl_per_position"]
    boundary = len(sequence) - PAST_BOUNDARY
    top1 = logits[boundary:].argmax(-1) == reference.top_k(prompt["name"])[0][boundary:, 0]
    numbers = {"boundary": boundary, "top1_past_boundary": float(top1.mean()),
               "mean_kl_past_boundary": float(kl[boundary:].mean()),
               "mean_kl_before_boundary": float(kl[:boundary].mean()),
               "max_window_kl_before_boundary": window_kl_before(kl, boundary, PAST_BOUNDARY),
               "perplexity_ratio": perplexity(logits, sequence) / prompt["perplexity"], "kl_per_position": kl}
    if reference.has(prompt["name"], WITHOUT_SLIDING_WINDOW):  # the yardstick of a runtime that ignores the window
        windowless = compare_logits(reference, prompt["name"], logits, WITHOUT_SLIDING_WINDOW)["kl_per_position"]
        numbers["mean_kl_past_boundary_to_reference_without_window"] = float(windowless[boundary:].mean())
    return numbers


def long_context_check(long_prompts: dict, limit: float) -> dict:
    """KL that jumps past a boundary fails; where the runtime's numbers past the sliding window are those of the
    reference computed without the window, the cause is named (ignores-sliding-window), failed or not."""
    bad = {name: v for name, v in long_prompts.items()
           if jumps_past_boundary(v.pop("kl_per_position"), v["boundary"], limit)}
    # Named when the artifact is closer to the windowless reference by more than a tenth of the precision's KL
    # limit: both compare the same logits, so the artifact's own error cancels; one that applies the window is
    # closer to the reference itself.
    ignored = {name: v for name, v in long_prompts.items()
               if "mean_kl_past_boundary_to_reference_without_window" in v
               and v["mean_kl_past_boundary"] - v["mean_kl_past_boundary_to_reference_without_window"] > limit / 10}
    found = {"deviation": deviation("ignores-sliding-window", IGNORES_SLIDING_WINDOW, ["long_context"], "; ".join(
        f"past token {v['boundary']} mean KL {v['mean_kl_past_boundary']:.4f} to the reference, "
        f"{v['mean_kl_past_boundary_to_reference_without_window']:.4f} to the reference without its window"
        for v in ignored.values()))} if ignored else {}
    return check(not bad, "; ".join(
        f"{name}: past token {v['boundary']} top-1 {v['top1_past_boundary']:.3f}, mean KL "
        f"{v['mean_kl_past_boundary']:.4f} (before it {v['mean_kl_before_boundary']:.4f}, worst window of "
        f"{PAST_BOUNDARY} before it {v['max_window_kl_before_boundary']:.4f})" for name, v in bad.items()),
        prompts=long_prompts, **found)


def fidelity_checks(runtime: Runtime, reference: Reference, thresholds: dict) -> dict:
    """Teacher-forced top-1 (at the reference's decisive positions), KL and perplexity on the chat sequences and
    the passage; each long prompt apart."""
    matches = positions = near_tie_positions = 0
    kls, checks, long_prompts, beyond = [], {}, {}, {}
    for prompt in reference.data["prompts"]:
        sequence = reference.sequence(prompt["name"])
        if runtime.context_length and len(sequence) > runtime.context_length:
            beyond[prompt["name"]] = len(sequence)
            continue
        logits = runtime.logits(sequence)
        compared = compare_logits(reference, prompt["name"], logits, near_tie_margin=thresholds["near_tie_margin"])
        if prompt["kind"] == "long":
            long_prompts[prompt["name"]] = long_prompt_numbers(reference, prompt, sequence, logits, compared)
            continue
        matches += compared["top1_matches"]
        positions += compared["positions"]
        near_tie_positions += compared["near_tie_positions"]
        kls.append(compared["kl_per_position"])
        if prompt["kind"] == "text":
            artifact_ppl = perplexity(logits, sequence)
            ratio = artifact_ppl / prompt["perplexity"]
            checks["perplexity"] = check(ratio <= thresholds["max_perplexity_ratio"],
                                         f"perplexity {artifact_ppl:.3f} is {ratio:.3f}x the reference's "
                                         f"{prompt['perplexity']:.3f} (max {thresholds['max_perplexity_ratio']})",
                                         artifact=artifact_ppl, reference=prompt["perplexity"], ratio=ratio)
    kl = np.concatenate(kls)
    if positions:
        top1 = matches / positions
        checks["teacher_forced_top1"] = check(top1 >= thresholds["teacher_forced_top1"],
                                              f"teacher-forced top-1 agreement {top1:.4f} < "
                                              f"{thresholds['teacher_forced_top1']}", value=top1, positions=positions,
                                              near_tie_positions=near_tie_positions)
    else:  # a reference with flat logits (random weights) has no choice to agree with
        checks["teacher_forced_top1"] = {**not_run(f"the reference is decisive at no position: its top-2 are within "
                                                   f"{thresholds['near_tie_margin']} nats at all {near_tie_positions}"),
                                         "positions": 0, "near_tie_positions": near_tie_positions}
    checks["kl"] = check(kl.mean() <= thresholds["max_mean_kl"],
                         f"mean KL {kl.mean():.4f} > {thresholds['max_mean_kl']}", mean=float(kl.mean()),
                         max=float(kl.max()))
    if long_prompts:
        checks["long_context"] = long_context_check(long_prompts, thresholds["max_mean_kl"])
    elif beyond:
        checks["long_context"] = not_run(f"every long prompt is beyond the {runtime.context_length} tokens the "
                                         "artifact states it is exact up to")
    if beyond:
        checks["long_context"]["beyond_stated_context"] = beyond
    return checks


def beyond_context(runtime: Runtime, checks: dict) -> list[str]:
    """validation.json's not_run entries for the prompts longer than the context the artifact states."""
    beyond = checks.get("long_context", {}).get("beyond_stated_context", {})
    return [f"{name} ({length} tokens): not run; beyond the {runtime.context_length} tokens the artifact states it "
            "is exact up to" for name, length in beyond.items()]


def run_checks(runtime: Runtime, reference: Reference, thresholds: dict) -> tuple[dict, dict]:
    chats = [p for p in reference.data["prompts"] if p["kind"] == "chat"]
    checks = {"tokenizer_parity": tokenizer_parity(runtime, chats)}
    generation, speed = generation_checks(runtime, reference, thresholds)
    checks.update(generation)
    checks.update(fidelity_checks(runtime, reference, thresholds))
    checks.update(runtime.extra_checks(reference))
    return checks, speed


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith("."))


def parameter_count(checkpoint_folder: Path) -> int:
    return sum(math.prod(t["shape"]) for t in checkpoint.tensor_table(checkpoint_folder).values())


def refused_record(base: dict, spec: dict) -> dict:
    return {**base, "runtime": {"name": spec["runtime"], "version": "not run"}, "status": "not_run",
            "reason": spec["refused"], "not_run": [spec["refused"]], "size_bytes": 0,
            "checks": {name: not_run(spec["refused"]) for name in CONTRACT_CHECKS}}


def stopped_record(base: dict, spec: dict, folder: Path, step: str, reason: str) -> dict:
    """An artifact that failed before any check could run, at `step`: its build or its load."""
    return {**base, "runtime": {"name": spec["runtime"], "version": "not run"}, "status": "failed",
            "reason": reason, "not_run": [], "size_bytes": folder_size(folder), "unexplained": [step],
            "checks": {step: check(False, reason),
                       **{name: not_run(NOT_RUN_AFTER[step]) for name in CONTRACT_CHECKS}}}


COST_ONLY = ("fidelity to a trained model", "random untrained weights in the published model's exact shape (a "
             "scale benchmark's checkpoint): these numbers are for cost, not fidelity")


def validate_folder(folder: Path | None, checkpoint_folder: Path, reference_folder: Path, spec: dict,
                    adapter: str | None = None, threads: int = DECODE_THREADS) -> dict:
    """Validate the artifact in `folder` as `spec` (pipeline.recipes.artifact) describes it, in the runtime of
    its target (or the adapter module named), computing on `threads` cores."""
    # every record names its profile, a refused or unbuilt artifact's too (references before profiles were full)
    profile = checkpoint.read_json(Path(reference_folder) / "reference.json").get("profile", "full")
    base = {"schema_version": 1, "model": spec["model"], "artifact": f"{spec['target']}/{spec['name']}",
            "precision": spec["precision"], "device": {"intended": spec["device"], "used": "none"},
            "thresholds": spec["thresholds"], "profile": profile}
    if spec["refused"]:
        return refused_record(base, spec)
    why_not_built = build_failure(folder)
    if why_not_built:
        return stopped_record(base, spec, Path(folder), "build", f"the build failed: {why_not_built}")
    reference = Reference(reference_folder)
    module = importlib.import_module(adapter or f"pipeline.targets.{spec['target']}.runtime")
    started = time.perf_counter()
    try:
        runtime = module.open(Path(folder), Path(checkpoint_folder), reference.data["facts"], spec, threads)
    except ArtifactError as error:
        return stopped_record(base, spec, Path(folder), "load",
                              f"the artifact does not load in {spec['runtime']}: {error}")
    load_time = time.perf_counter() - started
    checks, speed = run_checks(runtime, reference, spec["thresholds"])
    status, reason = overall(checks)
    attributed, unexplained = attribute(checks)
    size = folder_size(folder)
    return {**base, "runtime": {"name": runtime.name, "version": runtime.version},
            "device": {"intended": spec["device"], "used": runtime.device_used}, "status": status,
            **({"reason": reason} if reason else {}),
            "deviations": [{**c["deviation"], "check": name} for name, c in checks.items() if "deviation" in c],
            "attributed": attributed, "unexplained": unexplained,
            "checkpoint_findings": reference.data["facts"].get("findings", []),
            "not_run": [stand_in(what, instead) for what, instead in runtime.stand_ins]
            + beyond_context(runtime, checks), "size_bytes": size,
            **({"valid_context_length": runtime.context_length} if runtime.context_length else {}),
            "bits_per_weight": size * 8 / parameter_count(checkpoint_folder),
            "load_time_s": load_time, **speed, "threads": threads, "checks": checks}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--recipe", required=True, help="the model's recipe: thresholds, refusals")
    parser.add_argument("--folder", type=Path, help="the artifact folder (none for an artifact the recipe refuses)")
    parser.add_argument("--checkpoint", required=True, type=Path, help="the checkpoint it was built from")
    parser.add_argument("--reference", required=True, type=Path, help="the checkpoint's reference folder")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=DECODE_THREADS,
                        help="cores the runtime computes on (the rule's threads)")
    args = parser.parse_args(argv)
    recipe = recipes.load_supported(args.recipe)
    record = validate_folder(args.folder, args.checkpoint, args.reference,
                             recipes.artifact(recipe, args.target, args.artifact), threads=args.threads)
    if recipe.get("fixture", {}).get("size") == "hub":
        record.update(cost_only=True, not_run=[*record["not_run"], stand_in(*COST_ONLY)])
    write(args.out, record)
    print(f"{record['model']} {record['artifact']}: {record['status']}" + (f": {record['reason']}"
                                                                         if record.get("reason") else ""))
    for name, result in record["checks"].items():
        print(f"  {name}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))


if __name__ == "__main__":
    run_cli(main)
