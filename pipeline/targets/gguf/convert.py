"""llama.cpp's converter in one pass: the BPE pre-tokenizer named by what it is where the converter does not know
it, and the end-of-turn token and the chat template written with the rest of the metadata.

    python -m pipeline.targets.gguf.convert CHECKPOINT --outtype f16 --outfile OUT.gguf \\
        [--end-of-turn '<|end|>'] [--chat-template FILE] [converter options]

The converter runs with its own arguments. Only when its hash table does not know the checkpoint's BPE
pre-tokenizer (it raises NotImplementedError) is the name taken from pretokenizer.identify. The eot token and chat
template are what llama.cpp's gguf_new_metadata.py would add afterwards (`--special-token eot`, `--chat-template`),
set before the header is written, so the model is written once. Imports nothing that loads the pip gguf package:
the converter must use its own gguf-py.
"""
import argparse
import runpy
import sys
from pathlib import Path

from pipeline.targets.gguf import pretokenizer

# The converter and its gguf-py, extracted from llama-cpp-python's sdist by envs/gguf.setup.yaml.
LLAMA_CPP = Path(sys.prefix) / "llama.cpp"
CONVERTER = LLAMA_CPP / "convert_hf_to_gguf.py"


def main():
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--end-of-turn", help="the token to write as tokenizer.ggml.eot_token_id")
    parser.add_argument("--chat-template", type=Path, help="a file holding the chat template to write")
    ours, converter_args = parser.parse_known_args()
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

    prepare_metadata = base.TextModel.prepare_metadata

    def with_chat_metadata(model, vocab_only: bool):
        prepare_metadata(model, vocab_only)
        writer = model.gguf_writer
        if ours.chat_template:
            writer.add_chat_template(ours.chat_template.read_text())
        if ours.end_of_turn:
            tokens = writer.kv_data[0][base.gguf.Keys.Tokenizer.LIST].value  # str, or bytes from SentencePiece
            writer.add_eot_token_id([t.decode() if isinstance(t, bytes) else t for t in tokens].index(ours.end_of_turn))

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    base.TextModel.prepare_metadata = with_chat_metadata
    sys.argv = [str(CONVERTER), *converter_args]
    runpy.run_path(str(CONVERTER), run_name="__main__")


if __name__ == "__main__":
    main()
