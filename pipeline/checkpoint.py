"""What a checkpoint folder is, read from its own files, and whether it is sound. No torch needed.

Checks run before any converter sees the folder: they turn a bad download or a wrong folder into a one-line
error that names the fix, instead of a stack trace deep inside a toolchain.
"""
import json
import struct
from pathlib import Path

from pipeline.architectures import ARCHITECTURES, REFUSED, expected_shapes

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ANSWER_PROBE = "\x00answer\x00"  # an assistant message no chat template contains
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")


class CheckpointError(ValueError):
    """The checkpoint folder cannot be used; the message says why and what to do."""


def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{path.parent}: no {path.name}. Point the source at a full checkpoint folder.")
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{path}: not valid JSON ({error}). Download the file again.")


def safetensors_header(path: Path) -> dict:
    """The tensor table of a .safetensors file, after checking the file holds every byte the table promises."""
    size = path.stat().st_size
    with path.open("rb") as f:
        raw = f.read(8)
        if len(raw) < 8:
            raise CheckpointError(f"{path}: truncated safetensors file ({size} bytes). Download it again.")
        (header_len,) = struct.unpack("<Q", raw)
        if header_len > size - 8:
            raise CheckpointError(f"{path}: truncated safetensors file (header says {header_len} bytes, file "
                                  f"has {size}). Download it again.")
        try:
            header = json.loads(f.read(header_len))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise CheckpointError(f"{path}: corrupt safetensors header. Download it again.")
    header.pop("__metadata__", None)
    end = max((t["data_offsets"][1] for t in header.values()), default=0)
    if 8 + header_len + end != size:
        raise CheckpointError(f"{path}: truncated or padded safetensors file ({size} bytes, expected "
                              f"{8 + header_len + end}). Download it again.")
    return header


def weight_files(folder: Path) -> list[Path]:
    index = folder / "model.safetensors.index.json"
    if index.exists():
        names = sorted(set(read_json(index)["weight_map"].values()))
        missing = [n for n in names if not (folder / n).exists()]
        if missing:
            raise CheckpointError(f"{folder}: shards named in model.safetensors.index.json are missing: "
                                  f"{', '.join(missing)}. Download them again.")
        return [folder / n for n in names]
    files = sorted(folder.glob("*.safetensors"))
    if files:
        return files
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise CheckpointError(f"{folder}: only pickle weights ({', '.join(pickles)}); phi-forge loads safetensors "
                              f"only, since pickle files can run code. Use a revision that has .safetensors "
                              f"files, or convert them yourself with a tool you trust.")
    raise CheckpointError(f"{folder}: no weights (*.safetensors). Point the source at a full checkpoint folder.")


def tensor_table(folder: Path) -> dict[str, dict]:
    table = {}
    for path in weight_files(folder):
        table.update(safetensors_header(path))
    return table


def architecture(config: dict, folder: Path) -> str:
    names = config.get("architectures") or []
    for name in names:
        if name in REFUSED:
            raise CheckpointError(f"{folder}: unsupported architecture {name}: {REFUSED[name]}. "
                                  f"Supported: {', '.join(ARCHITECTURES)}.")
    supported = [n for n in names if n in ARCHITECTURES]
    if not supported:
        raise CheckpointError(f"{folder}: unsupported architecture {names or 'none given'}; phi-forge converts "
                              f"{', '.join(ARCHITECTURES)}. Pick a Phi-3 / Phi-3.5 / Phi-4-mini checkpoint.")
    return supported[0]


def verify(folder: Path) -> dict:
    """Check a checkpoint folder; return its config. Raises CheckpointError with the fix in the message."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CheckpointError(f"{folder}: no such folder. Check the path given as the model's source.")
    config = read_json(folder / "config.json")
    table = tensor_table(folder)
    for name, shape in expected_shapes(architecture(config, folder), config).items():
        if name not in table:
            raise CheckpointError(f"{folder}: config.json does not match the weights: tensor {name} is missing "
                                  f"(config says {config['num_hidden_layers']} layers). Use the config.json that "
                                  f"came with these weights.")
        if table[name]["shape"] != shape:
            raise CheckpointError(f"{folder}: config.json does not match the weights: {name} is "
                                  f"{table[name]['shape']}, config implies {shape}. Use the config.json that came "
                                  f"with these weights.")
    if f"model.layers.{config['num_hidden_layers']}.input_layernorm.weight" in table:
        raise CheckpointError(f"{folder}: config.json does not match the weights: the weights have more than "
                              f"{config['num_hidden_layers']} layers. Use the config.json that came with them.")
    if not any((folder / name).exists() for name in TOKENIZER_FILES):
        raise CheckpointError(f"{folder}: no tokenizer ({' or '.join(TOKENIZER_FILES)}). Include the tokenizer "
                              f"files of the checkpoint.")
    return config


def chat_template(folder: Path, tokenizer_config: dict) -> str | None:
    """The template as transformers finds it: chat_template.jinja (newer saves) before tokenizer_config.json."""
    if (folder / "chat_template.jinja").exists():
        return (folder / "chat_template.jinja").read_text()
    template = tokenizer_config.get("chat_template")
    if isinstance(template, list):  # named templates; the default one is the chat
        template = {t["name"]: t["template"] for t in template}.get("default")
    return template


def render_chat(template: str, messages: list[dict], special_tokens: dict, generation_prompt: bool) -> str:
    """The template rendered the way transformers renders it (sandboxed Jinja, trimmed blocks)."""
    import jinja2
    import jinja2.ext
    import jinja2.sandbox

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    environment = jinja2.sandbox.ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                                               extensions=[jinja2.ext.loopcontrols])
    environment.globals["raise_exception"] = raise_exception
    return environment.from_string(template).render(messages=messages, add_generation_prompt=generation_prompt,
                                                    **special_tokens)


def end_of_turn(template: str | None, tokens: dict[str, int], special_tokens: dict) -> str | None:
    """The added token the chat template closes an assistant message with (<|end|> for Phi); None if none."""
    if not template:
        return None
    messages = [{"role": "user", "content": "?"}, {"role": "assistant", "content": ANSWER_PROBE}]
    after = render_chat(template, messages, special_tokens, False).partition(ANSWER_PROBE)[2]
    closing = [token for token in tokens if after.startswith(token)]
    return max(closing, key=len) if closing else None


def special_tokens(tokenizer_config: dict) -> dict[str, str]:
    """bos_token, eos_token ... as the template sees them (plain strings or AddedToken dicts in the file)."""
    return {key: value["content"] if isinstance(value, dict) else value for key, value in tokenizer_config.items()
            if key.endswith("_token") and isinstance(value, (str, dict))}


def added_tokens(folder: Path, tokenizer_config: dict | None = None) -> dict[int, dict]:
    """id -> the tokenizer's added-token entry (content, special, rstrip ...): tokenizer.json's list over
    tokenizer_config.json's decoder (older saves have only one of them)."""
    tokenizer_config = tokenizer_config or read_json(folder / "tokenizer_config.json")
    entries = {int(i): entry for i, entry in tokenizer_config.get("added_tokens_decoder", {}).items()}
    if (folder / "tokenizer.json").exists():
        entries.update({entry["id"]: entry for entry in read_json(folder / "tokenizer.json")["added_tokens"]})
    return entries


def facts(folder: Path, overrides: dict | None = None) -> dict:
    """What targets need to know, from the checkpoint's own files; a recipe's `overrides` win."""
    folder = Path(folder)
    config = read_json(folder / "config.json")
    tokenizer_config = read_json(folder / "tokenizer_config.json")
    generation = read_json(folder / "generation_config.json") if (folder / "generation_config.json").exists() else {}
    eos = generation.get("eos_token_id", config.get("eos_token_id"))
    eos_ids = [] if eos is None else eos if isinstance(eos, list) else [eos]
    names = {i: entry["content"] for i, entry in added_tokens(folder, tokenizer_config).items()}
    ids = {content: i for i, content in names.items()}
    template = chat_template(folder, tokenizer_config)
    end = end_of_turn(template, ids, special_tokens(tokenizer_config))
    stop_ids, findings = list(eos_ids), []
    if end and ids[end] not in eos_ids:  # the template ends every turn with it: a stop token whatever eos says
        stop_ids.append(ids[end])
        findings.append({"id": "eos-lacks-end-of-turn", "cause": (
            f"the checkpoint's eos_token_id {eos_ids} lacks {end} (id {ids[end]}), the token its chat template "
            f"closes every assistant message with; phi-forge stops on it too, so runtimes that stop on eos alone "
            f"would run on past the answer"), "numbers": {"eos_token_ids": eos_ids, "end_of_turn_id": ids[end]}})
    rope = config.get("rope_scaling") or {}
    found = {
        "architecture": architecture(config, folder),
        "model_type": config["model_type"],
        "chat_template": template,
        "end_of_turn": end,
        "stop_token_ids": stop_ids,
        "stop_tokens": [names.get(i) for i in stop_ids],
        "findings": findings,
        "context_length": config["max_position_embeddings"],
        "original_context_length": config.get("original_max_position_embeddings",
                                              rope.get("original_max_position_embeddings")),
        "sliding_window": config.get("sliding_window"),
        "rope_type": rope.get("type") or rope.get("rope_type"),
        "vocab_size": config["vocab_size"],
        "hidden_size": config["hidden_size"],
        "tied_embeddings": bool(config.get("tie_word_embeddings")),
        "weights_bytes": sum(p.stat().st_size for p in weight_files(folder)),
    }
    for key, value in (overrides or {}).items():
        found[key] = value
    if overrides and "stop_tokens" in overrides:  # the recipe's list, exactly
        unknown = [t for t in overrides["stop_tokens"] if t not in ids]
        if unknown:
            raise CheckpointError(f"recipe overrides stop_tokens {unknown}, which the tokenizer does not have.")
        found["stop_token_ids"] = [ids[t] for t in overrides["stop_tokens"]]
        found["findings"] = [f for f in findings if f["id"] != "eos-lacks-end-of-turn"]
    if not found["stop_token_ids"]:
        raise CheckpointError(f"{folder}: no end token: neither generation_config.json nor config.json has an "
                              f"eos_token_id and the chat template closes no turn with a special token. Add "
                              f"overrides: stop_tokens to the recipe.")
    return found


def write_generation_config(folder: Path, out: Path, facts: dict):
    """The artifact's generation_config.json: the checkpoint's (if any) with eos_token_id set to every stop id,
    the end of turn included; mlx-lm and openvino-genai stop on what it lists."""
    path = Path(folder) / "generation_config.json"
    generation = read_json(path) if path.exists() else {}
    generation["eos_token_id"] = facts["stop_token_ids"]
    (Path(out) / "generation_config.json").write_text(json.dumps(generation, indent=2) + "\n")
