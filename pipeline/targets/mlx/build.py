"""MLX artifacts with mlx-lm's own converter: affine 4-bit / 8-bit, or one of its mixed-precision recipes; with
option `quantizer: gptq`, mlx-lm's GPTQ on the model's calibration text (pipeline.calibration), recorded in
calibration.json.

The artifact's settings come from recipes/targets.yaml (target `mlx`). After mlx_lm.convert, the folder gets the
checkpoint's own tokenizer files back (mlx-lm writes transformers-5 files that older Mac stacks cannot load and
drops tokenizer.model), config.json's torch_dtype is set to the dtype the weights are stored in, and
generation_config.json lists every stop token (pipeline.checkpoint.write_generation_config). With option
`rope: original_context` (LongRoPE checkpoints) config.json carries short_factor in long_factor's place.
"""
import json
import shutil
from pathlib import Path

import mlx.core as mx
from mlx_lm.convert import convert
from mlx_lm.quant.gptq import gptq_quantize
from mlx_lm.utils import load, save

from pipeline import calibration
from pipeline.checkpoint import write_generation_config
from pipeline.recipes import RecipeError

# Files mlx-lm writes in place of the checkpoint's tokenizer files; removed before the originals are copied.
CONVERTER_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "added_tokens.json", "chat_template.jinja")
# Files copied from the checkpoint as the hub wrote them, where it has them.
KEPT_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "added_tokens.json", "vocab.json", "merges.txt", "LICENSE")
# Artifact option -> mlx_lm.convert keyword.
CONVERT_OPTIONS = {"bits": "q_bits", "group_size": "q_group_size", "mode": "q_mode",
                   "quant_predicate": "quant_predicate", "dtype": "dtype"}
# GPTQ's calibration chunks, the sequence length mlx-lm's GPTQ uses by default
GPTQ_CHUNK_TOKENS = 512
# config.json key stating the context an artifact is exact up to, where that is less than the checkpoint's
VALID_CONTEXT = "valid_context_length"


def convert_kwargs(opts: dict) -> dict:
    return {CONVERT_OPTIONS[key]: value for key, value in opts.items() if key in CONVERT_OPTIONS}


def restore_tokenizer(checkpoint: Path, out: Path) -> list[str]:
    for name in CONVERTER_TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    kept = [name for name in KEPT_FILES if (checkpoint / name).exists()]
    for name in kept:
        shutil.copy2(checkpoint / name, out / name)
    return kept


def original_context_rope(config: dict, facts: dict):
    """mlx-lm's SuScaledRoPE applies long_factor at every length, where the model uses short_factor up to its
    original context: short_factor (and short_mscale) in their place make it exact up to there, which is stated.
    The attention scale mlx-lm derives from max_position_embeddings stays the model's."""
    rope = config["rope_scaling"]
    rope["long_factor"] = rope["short_factor"]
    if "short_mscale" in rope:
        rope["long_mscale"] = rope["short_mscale"]
    config[VALID_CONTEXT] = facts["original_context_length"]


def fix_config(checkpoint: Path, out: Path, spec: dict, facts: dict):
    """torch_dtype as stored: mlx-lm leaves the checkpoint's value even when --dtype changed it; the rope option."""
    opts = spec["options"]
    path = out / "config.json"
    config = json.loads(path.read_text())
    source = json.loads((checkpoint / "config.json").read_text())
    config["torch_dtype"] = opts.get("dtype") or source.get("torch_dtype") or source.get("dtype")
    if opts.get("rope") == "original_context":
        original_context_rope(config, facts)
    path.write_text(json.dumps(config, indent=4) + "\n")


def gptq(checkpoint: Path, folder: Path, opts: dict):
    """mlx-lm's GPTQ (mlx_lm.quant.gptq) on every chunk of the model's calibration text, where its CLI would
    download a text of its own; layers GPTQ does not handle (the embedding) get the same bits and group size."""
    model, tokenizer, config = load(str(checkpoint), lazy=True, return_config=True)
    stored = config.get("torch_dtype") or config.get("dtype") or "bfloat16"
    model.set_dtype(mx.float32)  # the Hessians in bf16 wreck the inverse (KL 7.6 on a fixture); MoE needs float32
    text = calibration.text(checkpoint)
    tokens = mx.array(tokenizer.encode(text))
    chunks = tokens[:tokens.size // GPTQ_CHUNK_TOKENS * GPTQ_CHUNK_TOKENS].reshape(-1, GPTQ_CHUNK_TOKENS)
    bits, group_size = opts["bits"], opts.get("group_size", 64)
    model, config["quantization"] = gptq_quantize(model, chunks, bits, group_size, bits, group_size)
    model.set_dtype(getattr(mx, stored))  # scales and the unquantized tensors as stored, as mlx_lm.convert keeps them
    save(folder, checkpoint, model, tokenizer, config)
    (folder / calibration.RECORD).write_text(json.dumps({
        "method": f"mlx-lm GPTQ over {chunks.shape[0]} chunks of {GPTQ_CHUNK_TOKENS} tokens",
        "chunks": chunks.shape[0], "chunk_tokens": GPTQ_CHUNK_TOKENS, "text": calibration.record(text)}, indent=2) + "\n")


def build(checkpoint: Path, spec: dict, facts: dict, out: Path, base: Path | None = None, threads: int = 1):
    opts = spec["options"]
    if opts.get("rope") == "original_context" and facts.get("rope_type") != "longrope":
        raise RecipeError(f"mlx/{spec['name']} is for LongRoPE checkpoints; this one's rope is "
                          f"{facts.get('rope_type') or 'plain'}, which mlx-lm computes exactly: leave it out of the "
                          "recipe's targets.")
    folder = out / "mlx"  # mlx_lm.convert refuses an existing folder
    if opts.get("quantizer") == "gptq":
        gptq(checkpoint, folder, opts)
    else:
        convert(str(checkpoint), str(folder), quantize=True, **convert_kwargs(opts))
    restore_tokenizer(checkpoint, folder)
    fix_config(checkpoint, folder, spec, facts)
    write_generation_config(checkpoint, folder, facts)
    for path in folder.iterdir():
        path.rename(out / path.name)
    folder.rmdir()
