"""mlx-lm on the CPU (mlx[cpu] on Linux): loads the artifact as `mlx_lm.load` does on a Mac.

Computes in float32: the stored bf16 scales, biases and norms are cast up exactly, so the numbers measure the
quantization, not bf16 rounding (mlx-lm's generate() takes log-probabilities in bf16, where near-ties flip).
PhiMoE has no other choice on CPU: mlx's GatherMM, the experts' matmul, supports float32 only.

Two known mlx-lm deviations are measured on the artifact itself, each against the way to avoid it:
- phi3 ignores `sliding_window` (full attention over the whole context); mlx-lm's `--max-kv-size <window>`
  (a RotatingKVCache, whose mask is the window) restores it;
- longrope (SuScaledRoPE) always applies long_factor, also on prompts shorter than the original context where
  the model uses short_factor; no mlx-lm option selects short_factor, an artifact built with short_factor in
  long_factor's place (build.py, `rope: original_context`) is exact up to the original context it states.
"""
import json
from pathlib import Path

import mlx.core as mx
import mlx_lm
import numpy as np
from mlx.utils import tree_map
from mlx_lm.generate import generate_step
from mlx_lm.models.cache import RotatingKVCache
from mlx_lm.models.rope_utils import SuScaledRoPE

from pipeline import checkpoint, prompts
from pipeline.architectures import ARCHITECTURES
from pipeline.prompts import PAST_BOUNDARY
from pipeline.runtimes.base import ArtifactError, Runtime, check, jumps_past_boundary
from pipeline.targets.mlx.build import KEPT_FILES, VALID_CONTEXT
from pipeline.validation import IGNORES_SLIDING_WINDOW, compare_logits, deviation

LONG_FACTOR = ("mlx-lm's SuScaledRoPE applies LongRoPE's long_factor to every position, also below the original "
               "context where the model uses short_factor")

# safetensors dtype -> config.json torch_dtype
DTYPES = {"BF16": "bfloat16", "F16": "float16", "F32": "float32"}
TOKENIZER_FILES = [name for name in KEPT_FILES if name != "LICENSE"]
# Options of the artifact that mlx-lm records in config.json's `quantization`.
QUANTIZATION_KEYS = ("bits", "group_size", "mode")
MODE_DEFAULTS = {"affine": {"bits": 4, "group_size": 64}}
# What mlx-lm's load reads a config.json `quantization` without (utils.load_model): GPTQ's config states no mode.
LOAD_DEFAULTS = {"mode": "affine"}


def read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError) as error:
        raise ArtifactError(f"config.json does not read: {error}")


def tensor_table(folder: Path) -> dict:
    """Every tensor's header entry, after checking each weights file holds every byte its header promises."""
    try:
        return checkpoint.tensor_table(folder)
    except checkpoint.CheckpointError as error:
        raise ArtifactError(str(error).removesuffix(" Download it again.") + " Rebuild the artifact.")


def layer_quantization(config: dict, layer: str) -> dict:
    settings = config["quantization"]
    return {**settings, **settings.get(layer, {})} if isinstance(settings.get(layer), dict) else settings


def check_group_sizes(config: dict, table: dict):
    """The group size and bits config.json states must be the ones the weights were quantized with."""
    if "quantization" not in config:
        raise ArtifactError("config.json has no `quantization` block: not an mlx-lm quantized model")
    for name, entry in table.items():
        if not name.endswith(".scales"):
            continue
        layer = name[: -len(".scales")]
        settings = layer_quantization(config, layer)
        packed_columns = table[f"{layer}.weight"]["shape"][-1]
        groups = entry["shape"][-1]
        actual = packed_columns * 32 // settings["bits"] // groups
        if actual != settings["group_size"]:
            raise ArtifactError(f"config.json says group_size {settings['group_size']} (bits {settings['bits']}) "
                                f"but {layer} was quantized in groups of {actual}: its scales have {groups} "
                                f"groups per row. Rebuild the artifact or restore its config.json.")


def checkpoint_tokenizer_files(source: Path) -> list[str]:
    """The tokenizer files of the checkpoint the artifact was built from."""
    return [name for name in TOKENIZER_FILES if (source / name).exists()]


def check_tokenizer_files(folder: Path, source: Path):
    expected = checkpoint_tokenizer_files(source)
    missing = [name for name in expected if not (folder / name).exists()]
    if missing:
        raise ArtifactError(f"tokenizer file(s) {', '.join(missing)} missing: the checkpoint has them, and stacks "
                            f"that load the tokenizer from them (older transformers, older mlx-lm) fail without "
                            f"them. Copy them from {source}.")


class MLX(Runtime):
    name = "mlx-lm"
    version = f"{mlx_lm.__version__} (mlx {mx.__version__})"
    device_used = "cpu"

    def __init__(self, folder: Path, checkpoint_folder: Path, facts: dict, spec: dict):
        mx.set_default_device(mx.cpu)
        self.folder, self.checkpoint, self.facts, self.spec = folder, checkpoint_folder, facts, spec
        self.config = read_config(folder)
        self.context_length = self.config.get(VALID_CONTEXT)
        self.table = tensor_table(folder)
        check_group_sizes(self.config, self.table)
        check_tokenizer_files(folder, checkpoint_folder)
        try:
            self.model, self.tokenizer = mlx_lm.load(str(folder))
        except Exception as error:  # whatever mlx-lm raises on a broken folder is the reason it failed
            raise ArtifactError(f"mlx_lm.load failed: {type(error).__name__}: {error}")
        self.model.update(tree_map(lambda p: p.astype(mx.float32) if mx.issubdtype(p.dtype, mx.floating) else p,
                                   self.model.parameters()))
        self.stop_ids = set(self.tokenizer.eos_token_ids)
        self.vocab = len(self.tokenizer._tokenizer)
        self.memo = {}
        self.stand_ins = [("Metal (Apple GPU)", "mlx's CPU backend (mlx[cpu]) on the same files")]
        if ARCHITECTURES[facts["architecture"]].experts:
            self.stand_ins.append(("bfloat16 compute (as on Apple GPUs): mlx's CPU GatherMM, the experts' matmul, "
                                   "supports float32 only", "float32 compute"))

    def chat_ids(self, messages):
        return prompts.chat_ids(self.tokenizer._tokenizer, messages)

    def forward(self, ids: list[int], cache=None) -> np.ndarray:
        return np.array(self.model(mx.array([ids]), cache=cache)[0].astype(mx.float32))

    def logits(self, ids):
        """Memoized: the long prompts' logits are reused by the sliding-window and short-factor checks."""
        key = tuple(ids)
        if key not in self.memo:
            self.memo[key] = self.forward(ids)
        return self.memo[key]

    def mask_padding(self, tokens, logits):
        """Padded embedding rows have no token: mlx-lm's streaming detokenizer raises IndexError on them."""
        if logits.shape[-1] <= self.vocab:
            return logits
        return mx.where(mx.arange(logits.shape[-1]) >= self.vocab, -mx.inf, logits)

    def generate(self, ids, max_new_tokens):
        generated = []
        for token, _ in generate_step(mx.array(ids), self.model, max_tokens=max_new_tokens,
                                      sampler=lambda logprobs: mx.argmax(logprobs, axis=-1),
                                      logits_processors=[self.mask_padding]):
            generated.append(int(token))
            if generated[-1] in self.stop_ids:
                break
        return generated

    def decode(self, ids):
        return self.tokenizer.decode([i for i in ids if i < self.vocab])

    def extra_checks(self, reference):
        checks = {"quantization": self.quantization_check(), "tokenizer_files": self.tokenizer_files_check(),
                  "config_dtype": self.dtype_check(), "compute_dtype": self.compute_check()}
        if self.facts.get("sliding_window") and self.facts["sliding_window"] < self.facts["context_length"]:
            checks["sliding_window"] = self.sliding_window_check(reference)
        if any(isinstance(layer.self_attn.rope, SuScaledRoPE) for layer in self.model.layers):
            checks["longrope_short_factor"] = self.short_factor_check(reference)
        return checks

    def quantization_check(self) -> dict:
        """config.json's `quantization` is what the recipe asked for."""
        options = self.spec["options"]
        stated = {**LOAD_DEFAULTS, **self.config["quantization"]}
        wanted = {**MODE_DEFAULTS.get(options.get("mode", "affine"), {}), "mode": "affine",
                  **{k: options[k] for k in QUANTIZATION_KEYS if k in options}}
        wrong = {k: [stated.get(k), v] for k, v in wanted.items() if stated.get(k) != v}
        per_layer = sorted(k for k, v in stated.items() if isinstance(v, dict))
        if options.get("quant_predicate") and not per_layer:
            wrong["quant_predicate"] = [None, options["quant_predicate"]]
        return check(not wrong, "config.json quantization differs from the recipe (stated, wanted): "
                     + ", ".join(f"{k} {v[0]} != {v[1]}" for k, v in wrong.items()),
                     stated={k: stated.get(k) for k in QUANTIZATION_KEYS}, wanted=wanted,
                     layers_with_own_settings=len(per_layer))

    def tokenizer_files_check(self) -> dict:
        """The checkpoint's tokenizer files, byte for byte, not transformers-5 re-serialisations older stacks reject."""
        expected = checkpoint_tokenizer_files(self.checkpoint)
        changed = [name for name in expected
                   if (self.folder / name).read_bytes() != (self.checkpoint / name).read_bytes()]
        return check(not changed, f"{', '.join(changed)} differ from the checkpoint's files", files=expected,
                     changed=changed)

    def dtype_check(self) -> dict:
        """config.json's torch_dtype is the dtype the float tensors are stored in (mlx-lm's --dtype leaves it)."""
        stored = sorted({DTYPES.get(t["dtype"], t["dtype"]) for t in self.table.values() if t["dtype"] in DTYPES})
        stated = self.config.get("torch_dtype")
        return check(stored == [stated], f"config.json torch_dtype {stated}, weights stored as {stored}",
                     stated=stated, stored=stored)

    def compute_check(self) -> dict:
        return check(True, "", stored=self.config.get("torch_dtype"), computed="float32")

    def mean_kl(self, reference, names, forward) -> float:
        return float(np.concatenate([compare_logits(reference, name, forward(reference.sequence(name)))
                                     ["kl_per_position"] for name in names]).mean())

    def sliding_window_check(self, reference) -> dict:
        """Past the window: KL with mlx-lm as loaded (full attention) against with --max-kv-size <window>."""
        window = self.facts["sliding_window"]
        long_prompts = [p["name"] for p in reference.data["prompts"]
                        if p["kind"] == "long" and len(reference.sequence(p["name"])) > window]
        if not long_prompts:
            return check(True, "", window=window, prompts=[])
        results, limit = {}, self.spec["thresholds"]["max_mean_kl"]
        for name in long_prompts:
            sequence = reference.sequence(name)
            boundary = len(sequence) - PAST_BOUNDARY
            stock_logits = self.logits(sequence)
            windowed_logits = self.forward(sequence, [RotatingKVCache(window) for _ in self.model.layers])
            stock = compare_logits(reference, name, stock_logits)["kl_per_position"]
            windowed = compare_logits(reference, name, windowed_logits)["kl_per_position"]
            # The long_context criterion (KL jumps past the boundary), as loaded and with the window applied.
            results[name] = {"boundary": boundary, "mean_kl_past_boundary": float(stock[boundary:].mean()),
                             "mean_kl_past_boundary_with_max_kv_size": float(windowed[boundary:].mean()),
                             "mean_kl_before_boundary": float(stock[:boundary].mean()),
                             "max_abs_logit_change_past_boundary": float(
                                 np.abs(stock_logits[boundary:] - windowed_logits[boundary:]).max()),
                             "deviates": jumps_past_boundary(stock, boundary, limit),
                             "restored_with_max_kv_size": not jumps_past_boundary(windowed, boundary, limit)}
        bad = {n: r for n, r in results.items() if r["deviates"]}
        return check(not bad, "; ".join(
            f"mlx-lm ignores sliding_window {window}: {n} past token {r['boundary']} mean KL "
            f"{r['mean_kl_past_boundary']:.4f} (before it {r['mean_kl_before_boundary']:.4f}); with --max-kv-size "
            f"{window} {r['mean_kl_past_boundary_with_max_kv_size']:.4f}, which "
            f"{'restores' if r['restored_with_max_kv_size'] else 'does not restore'} it" for n, r in bad.items()),
            window=window, workaround=f"--max-kv-size {window}", prompts=results,
            **({"deviation": deviation("ignores-sliding-window", IGNORES_SLIDING_WINDOW, ["long_context"], "; ".join(
                f"past token {r['boundary']} mean KL {r['mean_kl_past_boundary']:.4f}, with --max-kv-size "
                f"{r['mean_kl_past_boundary_with_max_kv_size']:.4f}" for r in bad.values()))} if bad else {}))

    def short_factor_check(self, reference) -> dict:
        """Prompts shorter than the original context: KL as loaded (long_factor) against with short_factor."""
        rope_scaling = self.config["rope_scaling"]
        original = self.facts["original_context_length"]
        names = [p["name"] for p in reference.data["prompts"]
                 if p["kind"] != "long" and len(reference.sequence(p["name"])) <= original]
        stock = self.mean_kl(reference, names, self.logits)
        ratio = mx.array(rope_scaling["short_factor"], dtype=mx.float32) / mx.array(rope_scaling["long_factor"],
                                                                                    dtype=mx.float32)
        ropes = [layer.self_attn.rope for layer in self.model.layers]
        long_freqs = [rope._freqs for rope in ropes]
        for rope in ropes:
            rope._freqs = rope._freqs * ratio
        try:
            short = self.mean_kl(reference, names, self.forward)
        finally:
            for rope, freqs in zip(ropes, long_freqs):
                rope._freqs = freqs
        limit = self.spec["thresholds"]["max_mean_kl"]
        # With short_factor within the precision's KL limit, the long factor accounts for every number it moves.
        explains = ["kl", "teacher_forced_top1", "perplexity", "greedy_agreement", "task", "stop"] if short <= limit else []
        return check(stock <= short + limit,
                     f"mlx-lm applies long_factor below the original context {original}: mean KL {stock:.4f} on "
                     f"{len(names)} short prompts, {short:.4f} with short_factor (no mlx-lm option selects it)",
                     prompts=len(names), mean_kl=stock, mean_kl_with_short_factor=short,
                     **({"deviation": deviation("mlx-longrope-long-factor", LONG_FACTOR, explains,
                                                f"mean KL {stock:.4f}, {short:.4f} with short_factor")}
                        if stock > short + limit else {}))


def open(folder, checkpoint_folder, facts: dict, spec: dict, threads: int) -> MLX:
    # `threads` has nothing to set: mlx's CPU backend (mlx[cpu] on Linux) computes on one core, its matmuls in the
    # reference BLAS it bundles.
    return MLX(Path(folder), Path(checkpoint_folder), facts, spec)
