"""GGUF for llama.cpp, with an Ollama Modelfile beside each file.

The float type is converted once per model by llama.cpp's own converter (the copy in llama-cpp-python's sdist,
matching the compiled llama.cpp); every other type is quantized from it by llama.cpp's quantizer. Each artifact
folder is what a user publishes: <model>-<TYPE>.gguf, its Modelfile and the checkpoint's LICENSE
(the publish stage adds the model card).

    python -m pipeline.targets.gguf --model fixture-phi-3-mini-4k --artifact F16 \
        --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint --out artifacts/fixture-phi-3-mini-4k/gguf/F16
    python -m pipeline.targets.gguf --model fixture-phi-3-mini-4k --artifact Q4_K_M \
        --checkpoint artifacts/fixture-phi-3-mini-4k/checkpoint --base artifacts/fixture-phi-3-mini-4k/gguf/F16 \
        --out artifacts/fixture-phi-3-mini-4k/gguf/Q4_K_M
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline import checkpoint, recipes
from pipeline.atomic import atomic_dir
from pipeline.cli import run_cli

TARGET = "gguf"
# The converter and its gguf-py, extracted from llama-cpp-python's sdist by envs/gguf.setup.yaml.
LLAMA_CPP = Path(sys.prefix) / "llama.cpp"
CONVERTER = LLAMA_CPP / "convert_hf_to_gguf.py"
NEW_METADATA = LLAMA_CPP / "gguf-py" / "gguf" / "scripts" / "gguf_new_metadata.py"
ROLES = ("system", "user", "assistant")
PROBE = "\x00{}\x00"  # a message content no template contains


def gguf_name(model: str, gguf_type: str) -> str:
    return f"{model}-{gguf_type}.gguf"


def gguf_file(folder: Path) -> Path:
    found = sorted(Path(folder).glob("*.gguf"))
    if len(found) != 1:
        raise checkpoint.CheckpointError(f"{folder} should hold exactly one .gguf file, it holds {len(found)}")
    return found[0]


def end_of_turn(tokenizer, facts: dict) -> str:
    """The stop token the chat template closes every message with (<|end|> for Phi)."""
    text = render(tokenizer, facts["chat_template"], [{"role": "user", "content": PROBE.format(0)}], False)
    after = text.split(PROBE.format(0), 1)[1]
    found = [token for token in facts["stop_tokens"] if after.startswith(token)]
    if not found:
        raise checkpoint.CheckpointError(f"the chat template ends a message with {after[:20]!r}, which is none of "
                                         f"the stop tokens {facts['stop_tokens']}")
    return found[0]


def render(tokenizer, template: str, messages: list[dict], generation_prompt: bool = True) -> str:
    """The chat template rendered as transformers renders it (apply_chat_template refuses an empty chat)."""
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(conversations=[messages], chat_template=template,
                                        add_generation_prompt=generation_prompt, **tokenizer.special_tokens_map)
    return rendered[0]


def ollama_template(tokenizer, template: str) -> str:
    """The checkpoint's chat template as a Go text/template over Ollama's .Messages.

    Each role's text around a message is read off the Jinja template itself; a conversation of every role
    checks that the pieces compose, so a template that does not render message by message is refused.
    """
    generation = render(tokenizer, template, [])
    pieces = {}
    for role in ROLES:
        text = render(tokenizer, template, [{"role": role, "content": PROBE.format(0)}])
        if not text.endswith(generation):
            raise checkpoint.CheckpointError(f"the chat template puts text after the generation prompt for {role}")
        before, _, after = text[:len(text) - len(generation)].partition(PROBE.format(0))
        pieces[role] = (before, after) if _ else None  # None: the template drops this role
    conversation = [{"role": role, "content": PROBE.format(i)} for i, role in enumerate(ROLES + ("user",))]
    composed = "".join(pieces[m["role"]][0] + m["content"] + pieces[m["role"]][1]
                       for m in conversation if pieces[m["role"]]) + generation
    if composed != render(tokenizer, template, conversation):
        raise checkpoint.CheckpointError("the chat template does not render message by message; no Ollama "
                                         "TEMPLATE can be derived from it")
    branches = [f'{{{{ if eq .Role "{role}" }}}}{before}{{{{ .Content }}}}{after}{{{{ end }}}}'
                for role, piece in pieces.items() if piece for before, after in [piece]]
    return "{{ range .Messages }}" + "".join(branches) + "{{ end }}" + generation


def modelfile(gguf: str, template: str, stops: list[str], num_ctx: int, license_text: str) -> str:
    lines = [f"FROM ./{gguf}", f'TEMPLATE """{template}"""']
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    lines += [f"PARAMETER num_ctx {num_ctx}", f'LICENSE """{license_text}"""']
    return "\n".join(lines) + "\n"


def num_ctx(spec: dict, facts: dict) -> int:
    return min(spec["options"]["num_ctx"], facts["context_length"])


def metadata_override(model: str, recipe: dict, folder: Path) -> dict:
    provenance_path = folder.parent / "provenance.json"
    provenance = checkpoint.read_json(provenance_path) if provenance_path.exists() else {}
    return {"general.name": model, "general.license.name": recipe["license"], "general.quantized_by": "phi-forge",
            "general.source.url": provenance.get("recipe_source", recipe["source"])}


def convert(folder: Path, model: str, recipe: dict, spec: dict, facts: dict, out: Path):
    """The float GGUF from the checkpoint, then eot and the chat template written into its metadata."""
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        (scratch / "metadata.json").write_text(json.dumps(metadata_override(model, recipe, folder)))
        raw = scratch / "converted.gguf"
        subprocess.run([sys.executable, str(CONVERTER), str(folder),
                        "--outtype", spec["options"]["type"].lower(), "--outfile", str(raw),
                        "--metadata", str(scratch / "metadata.json")], check=True)
        subprocess.run([sys.executable, str(NEW_METADATA), str(raw), str(out / gguf_name(model, spec["name"])),
                        "--special-token", "eot", facts["end_of_turn"], "--chat-template", facts["chat_template"],
                        "--force"], check=True, env={**os.environ, "PYTHONPATH": str(LLAMA_CPP / "gguf-py")})


def quantize(base: Path, model: str, spec: dict, out: Path, threads: int):
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = getattr(llama_cpp, f"LLAMA_FTYPE_MOSTLY_{spec['options']['type']}")
    params.nthread = threads
    target = out / gguf_name(model, spec["name"])
    status = llama_cpp.llama_model_quantize(str(gguf_file(base)).encode(), str(target).encode(), params)
    if status != 0:
        raise RuntimeError(f"llama_model_quantize to {spec['options']['type']} returned {status}")


def build(model: str, artifact: str, folder: Path, out: Path, base: Path | None = None, threads: int = 2):
    from transformers import AutoTokenizer

    recipe = recipes.load_supported(model)
    spec = recipes.artifact(recipe, TARGET, artifact)
    facts = checkpoint.facts(folder, recipe.get("overrides"))
    tokenizer = AutoTokenizer.from_pretrained(folder)
    facts["end_of_turn"] = end_of_turn(tokenizer, facts)
    template = ollama_template(tokenizer, facts["chat_template"])
    with atomic_dir(out) as scratch:
        if "base" in spec["options"]:
            quantize(base, model, spec, scratch, threads)
        else:
            convert(folder, model, recipe, spec, facts, scratch)
        gguf = gguf_name(model, artifact)
        license_text = (folder / "LICENSE").read_text()
        (scratch / "Modelfile").write_text(modelfile(gguf, template, facts["stop_tokens"], num_ctx(spec, facts),
                                                     license_text))
        shutil.copy(folder / "LICENSE", scratch / "LICENSE")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, help="recipe name (recipes/models/<model>.yaml)")
    parser.add_argument("--artifact", required=True, help="artifact name in recipes/targets.yaml, e.g. Q4_K_M")
    parser.add_argument("--checkpoint", required=True, type=Path)
    parser.add_argument("--base", type=Path, help="the float GGUF folder a quantized type is made from")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    build(args.model, args.artifact, args.checkpoint, args.out, args.base, args.threads)
    print(args.out)


if __name__ == "__main__":
    run_cli(main)
