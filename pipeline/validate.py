"""The one validator: every check of the validation contract, run on any runtime through a small adapter.

    python -m pipeline.validate --model fixture-phi-3-mini-4k --target gguf --artifact Q4_K_M \
        --out artifacts/fixture-phi-3-mini-4k/gguf/Q4_K_M.validation.json

The artifact is artifacts/<model>/<target>/<artifact>/; recipes/targets.yaml names the target's runtime adapter
(pipeline/runtimes/<runtime>.py), which has `open(folder, facts, spec) -> Runtime`. Runs in the target's
toolchain environment. Writes validation.json whatever the outcome; its status says whether the artifact passed.
"""
import argparse
import importlib
import math
import time
from pathlib import Path

import numpy as np

from pipeline import checkpoint, recipes, task
from pipeline.cli import run_cli
from pipeline.prompts import PAST_BOUNDARY
from pipeline.validation import (ArtifactError, Reference, check, compare_logits, greedy_agreement, not_run, overall,
                                 perplexity, write)

ARTIFACTS = Path("artifacts")


class Runtime:
    """What an adapter gives the validator. Subclass it in pipeline/runtimes/<runtime>.py.

    Token ids are the reference's own, so numbers compare the model, not the tokenizer; `chat_ids` is how
    the runtime itself turns a chat into tokens, compared separately.
    """
    name = "unknown"
    version = "unknown"
    device_used = "cpu"
    not_run: list[str] = []  # what could not be run on this machine, in words

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


def first_difference(reference_ids: list[int], runtime_ids: list[int]) -> int:
    for index, (ours, theirs) in enumerate(zip(reference_ids, runtime_ids)):
        if ours != theirs:
            return index
    return min(len(reference_ids), len(runtime_ids))


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


def generation_checks(runtime: Runtime, reference: Reference, thresholds: dict) -> tuple[dict, float | None]:
    """Stop, task and greedy agreement over the chat prompts, generating from the reference's prompt ids."""
    chats = [p for p in reference.data["prompts"] if p["kind"] == "chat"]
    stop_ids = set(reference.data["facts"]["stop_token_ids"])
    max_new = reference.data["max_new_tokens"]
    stopped = answered = exact = tokens = 0
    agreement, seconds = [], 0.0
    for prompt in chats:
        started = time.perf_counter()
        generated = runtime.generate(prompt["prompt_ids"], max_new)
        seconds += time.perf_counter() - started
        tokens += len(generated)
        ends = bool(generated) and generated[-1] in stop_ids
        text = runtime.decode(generated[:-1] if ends else generated)
        stopped += ends
        answered += ends and task.is_answered(prompt["answer"], text)
        exact += generated == prompt["generated_ids"]
        agreement.append(greedy_agreement(prompt["generated_ids"], generated))
    summary = reference.data["summary"]
    ratio = thresholds["task_answered_ratio"]
    need_stopped = math.ceil(summary["stopped"] * ratio)
    need_answered = math.ceil(summary["answered"] * ratio)
    mean_agreement = float(np.mean(agreement))
    checks = {
        "stop": check(stopped >= need_stopped,
                      f"stopped on an end token {sorted(stop_ids)} in {stopped} of {len(chats)} chat prompts "
                      f"(reference {summary['stopped']}, at least {need_stopped} needed)",
                      stopped=stopped, prompts=len(chats)),
        "task": check(answered >= need_answered,
                      f"answered {answered} of {len(chats)} (reference {summary['answered']}, at least "
                      f"{need_answered} needed)", answered=answered, reference_answered=summary["answered"],
                      prompts=len(chats)),
        "greedy_agreement": check(mean_agreement >= thresholds["greedy_agreement"],
                                  f"greedy agreement {mean_agreement:.3f} < {thresholds['greedy_agreement']}",
                                  value=mean_agreement, exact=exact),
    }
    return checks, (tokens / seconds if seconds else None)


def fidelity_checks(runtime: Runtime, reference: Reference, thresholds: dict) -> dict:
    """Teacher-forced top-1, KL and perplexity on the chat sequences and the passage; each long prompt apart."""
    matches = positions = 0
    kls, checks, long_prompts = [], {}, {}
    for prompt in reference.data["prompts"]:
        sequence = reference.sequence(prompt["name"])
        logits = runtime.logits(sequence)
        compared = compare_logits(reference, prompt["name"], logits)
        if prompt["kind"] == "long":
            boundary = len(sequence) - PAST_BOUNDARY
            past_kl = compared["kl_per_position"][boundary:]
            past_top1 = float((logits[boundary:].argmax(-1) == reference.top_k(prompt["name"])[0][boundary:, 0])
                              .mean())
            long_prompts[prompt["name"]] = {
                "boundary": boundary, "top1_past_boundary": past_top1, "mean_kl_past_boundary": float(past_kl.mean()),
                "mean_kl_before_boundary": float(compared["kl_per_position"][:boundary].mean()),
                "perplexity_ratio": perplexity(logits, sequence) / prompt["perplexity"]}
            continue
        matches += compared["top1_matches"]
        positions += compared["positions"]
        kls.append(compared["kl_per_position"])
        if prompt["kind"] == "text":
            artifact_ppl = perplexity(logits, sequence)
            ratio = artifact_ppl / prompt["perplexity"]
            checks["perplexity"] = check(ratio <= thresholds["max_perplexity_ratio"],
                                         f"perplexity {artifact_ppl:.3f} is {ratio:.3f}x the reference's "
                                         f"{prompt['perplexity']:.3f} (max {thresholds['max_perplexity_ratio']})",
                                         artifact=artifact_ppl, reference=prompt["perplexity"], ratio=ratio)
    top1 = matches / positions
    kl = np.concatenate(kls)
    checks["teacher_forced_top1"] = check(top1 >= thresholds["teacher_forced_top1"],
                                          f"teacher-forced top-1 agreement {top1:.4f} < "
                                          f"{thresholds['teacher_forced_top1']}", value=top1, positions=positions)
    checks["kl"] = check(kl.mean() <= thresholds["max_mean_kl"],
                         f"mean KL {kl.mean():.4f} > {thresholds['max_mean_kl']}", mean=float(kl.mean()),
                         max=float(kl.max()))
    if long_prompts:
        # A boundary the runtime mishandles (sliding window, short/long rope factors) shows as KL that jumps
        # past it; error that merely accumulates with length is the same on both sides.
        bad = {name: v for name, v in long_prompts.items()
               if v["mean_kl_past_boundary"] > v["mean_kl_before_boundary"] + thresholds["max_mean_kl"]}
        checks["long_context"] = check(not bad, "; ".join(
            f"{name}: past token {v['boundary']} top-1 {v['top1_past_boundary']:.3f}, mean KL "
            f"{v['mean_kl_past_boundary']:.4f} (before it {v['mean_kl_before_boundary']:.4f})"
            for name, v in bad.items()), prompts=long_prompts)
    return checks


def run_checks(runtime: Runtime, reference: Reference, thresholds: dict) -> tuple[dict, float | None]:
    chats = [p for p in reference.data["prompts"] if p["kind"] == "chat"]
    checks = {"tokenizer_parity": tokenizer_parity(runtime, chats)}
    generation, tokens_per_s = generation_checks(runtime, reference, thresholds)
    checks.update(generation)
    checks.update(fidelity_checks(runtime, reference, thresholds))
    checks.update(runtime.extra_checks(reference))
    return checks, tokens_per_s


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith("."))


def parameter_count(checkpoint_folder: Path) -> int:
    return sum(math.prod(t["shape"]) for t in checkpoint.tensor_table(checkpoint_folder).values())


def refused_record(base: dict, spec: dict, status: str = "not_run", reason: str | None = None) -> dict:
    checks = ("tokenizer_parity", "stop", "task", "greedy_agreement", "teacher_forced_top1", "kl", "perplexity")
    reason = reason or spec["refused"]
    return {**base, "runtime": {"name": spec["runtime"], "version": "not run"}, "status": status,
            "reason": reason, "not_run": [reason], "size_bytes": 0,
            "checks": {name: not_run(reason) for name in checks}}


def validate_folder(folder: Path, spec: dict, model: str, artifacts: Path = ARTIFACTS) -> dict:
    """Validate the artifact in `folder` as `spec` (pipeline.recipes.artifact) describes it."""
    base = {"schema_version": 1, "model": model, "artifact": f"{spec['target']}/{spec['name']}",
            "precision": spec["precision"], "device": {"intended": spec["device"], "used": "none"},
            "thresholds": spec["thresholds"]}
    if spec["refused"]:
        return refused_record(base, spec)
    reference = Reference(artifacts / model / "reference")
    adapter = importlib.import_module(f"pipeline.runtimes.{spec['runtime']}")
    started = time.perf_counter()
    try:
        runtime = adapter.open(Path(folder), reference.data["facts"], spec)
    except ArtifactError as error:
        return refused_record(base, spec, "failed", f"{spec['runtime']} cannot load the artifact: {error}")
    load_time = time.perf_counter() - started
    checks, tokens_per_s = run_checks(runtime, reference, spec["thresholds"])
    status, reason = overall(checks)
    size = folder_size(folder)
    return {**base, "runtime": {"name": runtime.name, "version": runtime.version},
            "device": {"intended": spec["device"], "used": runtime.device_used}, "status": status,
            **({"reason": reason} if reason else {}), "not_run": list(runtime.not_run), "size_bytes": size,
            "bits_per_weight": size * 8 / parameter_count(artifacts / model / "checkpoint"),
            "load_time_s": load_time, "tokens_per_s": tokens_per_s, "checks": checks}


def validate(model: str, target: str, name: str, artifacts: Path = ARTIFACTS) -> dict:
    spec = recipes.artifact(recipes.load_supported(model), target, name)
    return validate_folder(artifacts / model / target / name, spec, model, artifacts)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--artifact", required=True)
    parser.add_argument("--artifacts", type=Path, default=ARTIFACTS)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    record = validate(args.model, args.target, args.artifact, args.artifacts)
    write(args.out, record)
    print(f"{args.model} {record['artifact']}: {record['status']}" + (f": {record['reason']}"
                                                                     if record.get("reason") else ""))
    for name, result in record["checks"].items():
        print(f"  {name}: {result['status']}" + (f" ({result['reason']})" if result.get("reason") else ""))


if __name__ == "__main__":
    run_cli(main)
