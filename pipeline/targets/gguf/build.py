"""GGUF for llama.cpp, with an Ollama Modelfile beside each file.

The float type is converted once per model by llama.cpp's own converter (the copy in llama-cpp-python's sdist,
matching the compiled llama.cpp), run by convert.py, which also writes the eot token and chat template and names a
BPE pre-tokenizer the converter knows only by hash; every other type is quantized from it (options.base) by
llama.cpp's quantizer.
Each artifact folder is what a user publishes: <model>-<TYPE>.gguf, its Modelfile and the checkpoint's LICENSE
(the publish stage adds the model card).
"""
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf

from pipeline import checkpoint
from pipeline.calibration import RECORD
from pipeline.targets.gguf import modelfile

# llama.cpp gives Phi-3's special tokens the rstrip that HF's tokenizer.json gives them only when general.name
# contains one of these (llama-vocab.cpp); under another name, llama.cpp and Ollama keep the newline after
# <|user|> / <|assistant|> and a fine-tune answers nothing (measured: 0 of 12 through the Modelfile, 12 of 12 with
# the name). So a checkpoint whose special tokens rstrip gets the family in its GGUF's name.
LLAMA_CPP_PHI3_NAMES = ("phi-3", "phi3")
IMATRIX = "imatrix.gguf"  # the calibration stage's importance matrix (calibrate.py)


def model_name(model: str, checkpoint_folder: Path) -> str:
    """general.name: the model's, with " (phi-3 family)" where llama.cpp would otherwise not rstrip."""
    rstrips = any(token["special"] and token.get("rstrip")
                  for token in checkpoint.added_tokens(checkpoint_folder).values())
    if not rstrips or any(name in model.lower() for name in LLAMA_CPP_PHI3_NAMES):
        return model
    return f"{model} (phi-3 family)"


def gguf_name(model: str, gguf_type: str) -> str:
    return f"{model}-{gguf_type}.gguf"


def gguf_file(folder: Path) -> Path:
    found = sorted(Path(folder).glob("*.gguf"))
    if len(found) != 1:
        raise checkpoint.CheckpointError(f"{folder} should hold exactly one .gguf file, it holds {len(found)}")
    return found[0]


def file_type(gguf_type: str) -> int:
    """gguf-py's general.file_type for a type name (F16, Q8_0, Q4_K_M ...)."""
    return int(getattr(gguf.LlamaFileType, "ALL_F32" if gguf_type == "F32" else f"MOSTLY_{gguf_type}"))


def metadata_override(spec: dict, facts: dict, checkpoint_folder: Path) -> dict:
    keys = gguf.Keys.General
    return {keys.NAME: model_name(spec["model"], checkpoint_folder), keys.LICENSE_NAME: spec["license"],
            keys.QUANTIZED_BY: "phi-forge",
            keys.SOURCE_URL: facts["source"]}


def convert(folder: Path, spec: dict, facts: dict, out: Path):
    """The float GGUF from the checkpoint, eot and the chat template in its metadata, in the converter's one pass."""
    with tempfile.TemporaryDirectory(dir=out.parent) as scratch:
        scratch = Path(scratch)
        (scratch / "metadata.json").write_text(json.dumps(metadata_override(spec, facts, folder)))
        (scratch / "chat_template.jinja").write_text(facts["chat_template"])
        subprocess.run([sys.executable, "-m", "pipeline.targets.gguf.convert", str(folder),
                        "--outtype", spec["options"]["type"].lower(), "--outfile", str(out),
                        "--metadata", str(scratch / "metadata.json"),
                        "--chat-template", str(scratch / "chat_template.jinja"),
                        *(["--end-of-turn", facts["end_of_turn"]] if facts["end_of_turn"] else [])], check=True)


def tool(name: str) -> Path:
    """llama.cpp's own program (llama-quantize, llama-imatrix), built with the bindings (envs/gguf.cmake)."""
    import llama_cpp

    return Path(llama_cpp.__file__).parent / "bin" / name


def quantize(base: Path, spec: dict, out: Path, threads: int, calibration: Path | None = None):
    """llama.cpp's quantizer from the base GGUF; weighing each column by the model's importance matrix (the
    calibration stage's, calibrate.py) if given. Its output goes to the build's log, its last line into the error."""
    weights = ["--imatrix", Path(calibration) / IMATRIX] if calibration else []
    gguf_type = spec["options"]["type"]
    result = subprocess.run([tool("llama-quantize"), *weights, gguf_file(base), out, gguf_type, str(threads)],
                            capture_output=True, text=True)
    sys.stderr.write(result.stdout + result.stderr)
    if result.returncode != 0:
        said = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
        raise RuntimeError(f"llama-quantize to {gguf_type} exited with status {result.returncode}: "
                           f"{said[-1] if said else 'no output'}")


def build(checkpoint_folder: Path, spec: dict, facts: dict, out: Path, base: Path | None = None, threads: int = 1,
          calibration: Path | None = None):
    """Into `out` (a scratch folder the caller renames into place): the GGUF, its Modelfile and LICENSE."""
    name = gguf_name(spec["model"], spec["name"])
    if "base" in spec["options"]:
        quantize(base, spec, out / name, threads, calibration)
        if calibration:  # how the importance matrix was made: its calibration text's sources and digest
            shutil.copy(Path(calibration) / RECORD, out / RECORD)
    else:
        convert(checkpoint_folder, spec, facts, out / name)
    from transformers import AutoTokenizer  # only now: its memory would add to the converter's and the quantizer's

    template = modelfile.ollama_template(AutoTokenizer.from_pretrained(checkpoint_folder), facts["chat_template"])
    license_text = (checkpoint_folder / "LICENSE").read_text()
    (out / "Modelfile").write_text(modelfile.write(name, template, facts["stop_tokens"],
                                                   modelfile.num_ctx(spec, facts), license_text))
    shutil.copy(checkpoint_folder / "LICENSE", out / "LICENSE")
