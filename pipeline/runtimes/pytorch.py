"""transformers on a checkpoint folder: the reference's own runtime, at the checkpoint's own dtype.

Validating a checkpoint with it checks the validator itself: it must pass where nothing was converted.
"""
import numpy as np
import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

from pipeline import prompts
from pipeline.runtimes.base import Runtime


class PyTorch(Runtime):
    name = "transformers"
    version = transformers.__version__

    def __init__(self, folder, facts: dict, dtype: str):
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=getattr(torch, dtype)).eval()
        self.chat_template = facts["chat_template"]
        eos = GenerationConfig.from_pretrained(folder).eos_token_id
        self.stop_ids = eos if isinstance(eos, list) else [eos]

    def chat_ids(self, messages):
        return prompts.chat_ids(self.tokenizer, messages, self.chat_template)

    @torch.no_grad()
    def logits(self, ids):
        return self.model(torch.tensor([ids])).logits[0].float().numpy().astype(np.float32)

    @torch.no_grad()
    def generate(self, ids, max_new_tokens):
        out = self.model.generate(torch.tensor([ids]), max_new_tokens=max_new_tokens, do_sample=False,
                                  eos_token_id=self.stop_ids, pad_token_id=self.stop_ids[0])
        return out[0, len(ids):].tolist()

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=False)


def open(folder, checkpoint_folder, facts: dict, spec: dict, threads: int) -> PyTorch:
    torch.set_num_threads(threads)
    return PyTorch(folder, facts, spec["options"].get("dtype", "float32"))
