"""The float32 PyTorch reference every artifact is compared with.

For each prompt of the prompt set (pipeline.prompts) it stores the token ids, the greedy continuation (chat
prompts), and per position the top-k logits and the log-sum-exp of the full distribution.

    python -m pipeline.reference --checkpoint artifacts/<model>/checkpoint --out artifacts/<model>/reference

--device cuda computes it on a GPU (float32 throughout, as torch defaults: no TF32); the stored numbers are the CPU's
to within 2e-4 (README "On a GPU").
"""
import argparse
import json
import math
import statistics
import time
from contextlib import ExitStack
from pathlib import Path

import torch
from safetensors.torch import save_file

from pipeline import checkpoint, prompts, recipes, task
from pipeline.architectures import ARCHITECTURES
from pipeline.atomic import atomic_dir
from pipeline.cli import run_cli


def longrope_by_sequence_length(rotary):
    """A rotary embedding forward that picks LongRoPE's factors by the sequence length.

    transformers 5.24's PhiMoE rotary embedding computes its frequencies without the sequence length, so past
    original_max_position_embeddings it keeps short_factor (while switching to long_mscale). LongRoPE, transformers'
    own Phi-3 code and 5.5's PhiMoE switch to long_factor there; so do the OpenVINO and llama.cpp runtimes.
    """
    parameters = rotary.config.rope_parameters

    def forward(x, position_ids):
        seq_len = int(position_ids.max()) + 1
        inv_freq, _ = rotary.rope_init_fn(rotary.config, x.device, seq_len)
        long = seq_len > parameters["original_max_position_embeddings"]
        mscale = parameters["long_mscale"] if long else parameters["short_mscale"]
        freqs = position_ids[..., None].float() * inv_freq.float()
        embedding = torch.cat((freqs, freqs), dim=-1)
        return (embedding.cos() * mscale).to(x.dtype), (embedding.sin() * mscale).to(x.dtype)

    return forward


# Fixes of upstream faults in the reference's own runtime, named by an architecture's reference_rotary_fix
# (pipeline/architectures.py) and applied when its rope type is longrope.
ROTARY_FIXES = {"longrope_by_sequence_length": longrope_by_sequence_length}


def load(folder: Path, device: str = "cpu"):
    import transformers
    from safetensors import safe_open

    tokenizer = transformers.AutoTokenizer.from_pretrained(folder)
    config = transformers.AutoConfig.from_pretrained(folder)
    # Each tensor read with pread into the float32 model, where transformers' memory-mapped load left the stored
    # bf16 pages resident beside it (bench/scale-phi-3-mini-4k.json); its own key conversions still apply.
    with ExitStack() as stack:
        shards = [stack.enter_context(safe_open(path, framework="pt", device="cpu", backend="pread"))
                  for path in checkpoint.weight_files(folder)]
        weights = {name: shard.get_slice(name) for shard in shards for name in shard.keys()}
        model = transformers.MODEL_FOR_CAUSAL_LM_MAPPING[type(config)].from_pretrained(
            None, config=config, dtype=torch.float32, state_dict=weights)
    fix = ARCHITECTURES[model.config.architectures[0]].reference_rotary_fix
    if fix and model.config.rope_parameters.get("rope_type") == "longrope":
        model.model.rotary_emb.forward = ROTARY_FIXES[fix](model.model.rotary_emb)
    return tokenizer, model.to(device).eval()


@torch.no_grad()
def teacher_forced(model, ids: list[int]) -> torch.Tensor:
    return model(torch.tensor([ids], device=model.device)).logits[0].float().cpu()


@torch.no_grad()
def without_sliding_window(model, ids: list[int]) -> torch.Tensor:
    """Logits as a runtime that ignores the sliding window computes them: the yardstick that tells such a runtime
    from one whose error merely grows with length (pipeline.validate's sliding-window diagnosis)."""
    window = model.config.sliding_window
    model.config.sliding_window = None  # read at every forward by transformers' Phi-3 mask and attention
    try:
        return teacher_forced(model, ids)
    finally:
        model.config.sliding_window = window


def top1_margins(logits: torch.Tensor, start: int) -> list[float]:
    """Top-1 minus top-2 log-probability at each position from `start` on: how decisive the reference is."""
    top = logits[start:].log_softmax(-1).topk(2, dim=-1).values
    return (top[:, 0] - top[:, 1]).tolist()


def top_k(logits: torch.Tensor, k: int) -> dict[str, torch.Tensor]:
    values, indices = logits.topk(k, dim=-1)
    return {"topk_logits": values.contiguous(), "topk_ids": indices.to(torch.int32).contiguous(),
            "logsumexp": logits.logsumexp(-1).contiguous()}


def perplexity(logits: torch.Tensor, ids: list[int]) -> float:
    return math.exp(torch.nn.functional.cross_entropy(logits[:-1], torch.tensor(ids[1:])).item())


@torch.no_grad()
def greedy(model, ids: list[int], stop_ids: list[int], max_new_tokens: int) -> list[int]:
    out = model.generate(torch.tensor([ids], device=model.device), max_new_tokens=max_new_tokens, do_sample=False,
                         eos_token_id=stop_ids, pad_token_id=stop_ids[0])
    return out[0, len(ids):].tolist()


def run(folder: Path, out: Path, max_new_tokens: int, k: int, overrides: dict | None = None,
        profile: str = "full", log=print, device: str = "cpu") -> dict:
    facts = checkpoint.facts(folder, overrides)
    tokenizer, model = load(folder, device)
    stop_ids = facts["stop_token_ids"]
    prompt_set = prompts.build(facts, lambda text: tokenizer.encode(text),
                               lambda messages: prompts.chat_ids(tokenizer, messages, facts["chat_template"]),
                               profile)
    tensors, records = {}, []
    for prompt in prompt_set:
        started = time.perf_counter()
        record = {key: prompt[key] for key in ("kind", "name", "messages", "answer") if key in prompt}
        record["prompt_ids"] = prompt["ids"]
        sequence = prompt["ids"]
        if prompt["kind"] == "chat":
            generated = greedy(model, prompt["ids"], stop_ids, max_new_tokens)
            stopped = bool(generated) and generated[-1] in stop_ids
            text = tokenizer.decode(generated[:-1] if stopped else generated, skip_special_tokens=False)
            record.update(generated_ids=generated, generated_text=text, stopped=stopped,
                          stop_token_id=generated[-1] if stopped else None,
                          answered=stopped and task.is_answered(prompt["answer"], text))
            sequence = prompt["ids"] + generated
        logits = teacher_forced(model, sequence)
        if prompt["kind"] == "chat":
            record["top1_margins"] = top1_margins(logits[:-1], len(prompt["ids"]) - 1)
        else:
            record["perplexity"] = perplexity(logits, sequence)
        if prompt["name"] == prompts.PAST_SLIDING_WINDOW:
            for key, value in top_k(without_sliding_window(model, sequence), k).items():
                tensors[f"{prompt['name']}.{prompts.WITHOUT_SLIDING_WINDOW}.{key}"] = value
        record["sequence_length"] = len(sequence)
        for key, value in top_k(logits, k).items():
            tensors[f"{prompt['name']}.{key}"] = value
        records.append(record)
        log(f"{prompt['name']}: {len(sequence)} tokens, {time.perf_counter() - started:.1f}s"
            + (f", answered={record['answered']} stopped={record['stopped']}" if prompt["kind"] == "chat" else
               f", perplexity={record['perplexity']:.3f}"))
    import transformers
    chat = [r for r in records if r["kind"] == "chat"]
    reference = {
        "runtime": {"name": "transformers", "version": transformers.__version__, "torch": torch.__version__,
                    "device": device},
        "dtype": "float32",
        "profile": profile,
        "top_k": k,
        "max_new_tokens": max_new_tokens,
        "facts": facts,
        "summary": {"answered": sum(r["answered"] for r in chat), "stopped": sum(r["stopped"] for r in chat),
                    "chat_prompts": len(chat),
                    "median_top1_margin": statistics.median(m for r in chat for m in r["top1_margins"]),
                    "perplexity": {r["name"]: r["perplexity"] for r in records if "perplexity" in r}},
        "prompts": records,
    }
    with atomic_dir(out) as scratch:
        save_file(tensors, str(scratch / "logits.safetensors"))
        (scratch / "reference.json").write_text(json.dumps(reference, indent=1) + "\n")
    return reference


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=20)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="torch device to compute on, e.g. cuda (float32 throughout: "
                                                         "no TF32, torch's default)")
    parser.add_argument("--recipe", help="apply this recipe's overrides (stop tokens, chat template, ...)")
    parser.add_argument("--profile", choices=list(prompts.PROFILES), default="full",
                        help="the validation profile: which chat prompts (pipeline.prompts.PROFILES)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise recipes.RecipeError(f"--device {args.device}: torch {torch.__version__} sees no CUDA device here; leave "
                                  "--device at cpu, or run where torch has one")
    checkpoint.verify(args.checkpoint)
    overrides = recipes.load_supported(args.recipe).get("overrides") if args.recipe else None
    reference = run(args.checkpoint, args.out, args.max_new_tokens, args.top_k, overrides, args.profile,
                    device=args.device)
    summary = reference["summary"]
    print(f"reference: {summary['answered']}/{summary['chat_prompts']} answered, "
          f"{summary['stopped']}/{summary['chat_prompts']} stopped on their own")


if __name__ == "__main__":
    run_cli(main)
