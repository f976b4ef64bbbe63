"""llama.cpp's converter, with the BPE pre-tokenizer named by what it is where the converter does not know it.

    python -m pipeline.targets.gguf.convert CHECKPOINT --outtype f16 --outfile OUT.gguf [converter options]

The converter runs unchanged with its own arguments; only when its hash table does not know the checkpoint's BPE
pre-tokenizer (it raises NotImplementedError) is the name taken from pretokenizer.identify. Imports nothing that
loads the pip gguf package: the converter must use its own gguf-py.
"""
import runpy
import sys
from pathlib import Path

from pipeline.targets.gguf import pretokenizer

# The converter and its gguf-py, extracted from llama-cpp-python's sdist by envs/gguf.setup.yaml.
LLAMA_CPP = Path(sys.prefix) / "llama.cpp"
CONVERTER = LLAMA_CPP / "convert_hf_to_gguf.py"


def main():
    sys.path[0:0] = [str(LLAMA_CPP), str(LLAMA_CPP / "gguf-py")]
    from conversion import base

    by_hash = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(model, tokenizer) -> str:
        try:
            return by_hash(model, tokenizer)
        except NotImplementedError:
            name = pretokenizer.identify(model.dir_model / "tokenizer.json")
            if name is None:
                raise NotImplementedError(
                    "the BPE pre-tokenizer is none llama.cpp knows, by the hash of its tokenization or by its "
                    f"tokenizer.json pre_tokenizer (known: {', '.join(pretokenizer.KNOWN)})") from None
            base.logger.info(f"BPE pre-tokenizer identified by its tokenizer.json pre_tokenizer: {name}")
            return name

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    sys.argv = [str(CONVERTER), *sys.argv[1:]]
    runpy.run_path(str(CONVERTER), run_name="__main__")


if __name__ == "__main__":
    main()
