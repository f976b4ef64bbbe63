"""MLX artifacts with mlx-lm's own converter: affine 4-bit / 8-bit, or one of its mixed-precision recipes.

The artifact's settings come from recipes/targets.yaml (target `mlx`). After mlx_lm.convert, the folder gets the
checkpoint's own tokenizer files back (mlx-lm writes transformers-5 files that older Mac stacks cannot load and
drops tokenizer.model), config.json's torch_dtype is set to the dtype the weights are stored in, and
generation_config.json lists every stop token (pipeline.checkpoint.write_generation_config).
"""
import json
import shutil
from pathlib import Path

from mlx_lm.convert import convert

from pipeline.checkpoint import write_generation_config

# Files mlx-lm writes in place of the checkpoint's tokenizer files; removed before the originals are copied.
CONVERTER_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                             "added_tokens.json", "chat_template.jinja")
# Files copied from the checkpoint as the hub wrote them, where it has them.
KEPT_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
              "added_tokens.json", "vocab.json", "merges.txt", "LICENSE")
# Artifact option -> mlx_lm.convert keyword.
CONVERT_OPTIONS = {"bits": "q_bits", "group_size": "q_group_size", "mode": "q_mode",
                   "quant_predicate": "quant_predicate", "dtype": "dtype"}


def convert_kwargs(opts: dict) -> dict:
    return {CONVERT_OPTIONS[key]: value for key, value in opts.items() if key in CONVERT_OPTIONS}


def restore_tokenizer(checkpoint: Path, out: Path) -> list[str]:
    for name in CONVERTER_TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
    kept = [name for name in KEPT_FILES if (checkpoint / name).exists()]
    for name in kept:
        shutil.copy2(checkpoint / name, out / name)
    return kept


def fix_config(checkpoint: Path, out: Path, opts: dict):
    """torch_dtype as stored: mlx-lm leaves the checkpoint's value even when --dtype changed it."""
    path = out / "config.json"
    config = json.loads(path.read_text())
    source = json.loads((checkpoint / "config.json").read_text())
    config["torch_dtype"] = opts.get("dtype") or source.get("torch_dtype") or source.get("dtype")
    path.write_text(json.dumps(config, indent=4) + "\n")


def build(checkpoint: Path, spec: dict, facts: dict, out: Path, base: Path | None = None, threads: int = 1):
    opts = spec["options"]
    folder = out / "mlx"  # mlx_lm.convert refuses an existing folder
    convert(str(checkpoint), str(folder), quantize=True, **convert_kwargs(opts))
    restore_tokenizer(checkpoint, folder)
    fix_config(checkpoint, folder, opts)
    write_generation_config(checkpoint, folder, facts)
    for path in folder.iterdir():
        path.rename(out / path.name)
    folder.rmdir()
