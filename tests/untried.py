"""Checkpoint folders laid out as users' own fine-tunes are, not as the hub or the fixture builder writes them.

    python tests/untried.py finetune SOURCE OUT   # SOURCE's weights in float16, one model.safetensors without an
                                                  # index, an older transformers' config.json, no
                                                  # generation_config.json, eos lacking the chat template's <|end|>
    python tests/untried.py shape SOURCE OUT      # a shape none of the fixtures has (3 layers, hidden 512, 8 heads,
                                                  # 4 KV heads), random float32 weights in 3 shards, a
                                                  # generation_config.json with no eos

Run with the torch environment's interpreter. SOURCE is a fixture checkpoint (its tokenizer is reused).
"""
import json
import shutil
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json",
                   "added_tokens.json", "LICENSE")


def copy_tokenizer(source: Path, out: Path):
    out.mkdir(parents=True)
    for name in TOKENIZER_FILES:
        if (source / name).exists():
            shutil.copy(source / name, out / name)


def finetune(source: Path, out: Path):
    copy_tokenizer(source, out)
    tensors = {}
    for shard in sorted(source.glob("*.safetensors")):
        tensors.update({name: t.to(torch.float16) for name, t in load_file(shard).items()})
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    for key in ("auto_map", "original_max_position_embeddings", "embd_pdrop"):
        config.pop(key, None)  # fields transformers 4.38 did not write for a Phi-3 fine-tune
    eos = json.loads((source / "added_tokens.json").read_text())["<|endoftext|>"]
    config.update(torch_dtype="float16", transformers_version="4.38.2", eos_token_id=eos)
    (out / "config.json").write_text(json.dumps(config, indent=2))


def shape(source: Path, out: Path):
    from transformers import AutoConfig, AutoModelForCausalLM

    copy_tokenizer(source, out)
    config = json.loads((source / "config.json").read_text())
    config.update(hidden_size=512, num_hidden_layers=3, intermediate_size=1024, num_attention_heads=8,
                  num_key_value_heads=4, torch_dtype="float32", sliding_window=None)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    (out / "generation_config.json").write_text(json.dumps({"bos_token_id": config["bos_token_id"]}))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(out), dtype=torch.float32)
    tensors = {name: t.contiguous() for name, t in model.state_dict().items()}
    names = sorted(tensors)
    weight_map = {}
    for index in range(3):
        part = names[index::3]
        filename = f"model-{index + 1:05d}-of-00003.safetensors"
        save_file({n: tensors[n] for n in part}, str(out / filename), metadata={"format": "pt"})
        weight_map.update({n: filename for n in part})
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": total},
                                                                  "weight_map": weight_map}))
    (out / "config.json").write_text(json.dumps(config, indent=2))  # from_config must not have rewritten it


if __name__ == "__main__":
    {"finetune": finetune, "shape": shape}[sys.argv[1]](Path(sys.argv[2]), Path(sys.argv[3]))
