"""onnxruntime-genai on an ONNX artifact folder (model.onnx, model.onnx.data, genai_config.json, tokenizer files).

Generation, end tokens and the tokenizer are genai's own. Teacher-forced logits are genai's too: after
`append_tokens(sequence)` the prefill's `get_output("logits")` holds every position, and its last row is checked
against `get_logits()`. The prefill does not share genai's past/present buffer: that buffer holds only the
sliding window + 16 tokens, so a graph that attends past the window (as the builder makes Phi-3) would fail there
on a long prompt instead of showing, in the long_context and sliding_window checks, what is wrong.

An artifact built for a device runs on that device's provider where the installed package has it
(onnxruntime-genai-cuda on an NVIDIA host), else on the CPU provider in its place, which its validation names.
"""
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime_genai as og

from pipeline.runtimes.base import ArtifactError, Runtime, check, device_stand_in
from pipeline.targets.onnx.build import attention_window

# genai_config.json provider_options the builder writes for each device, by provider name.
PROVIDERS = {"cpu": [], "cuda": ["cuda"], "dml": ["dml"]}
# Whether this onnxruntime-genai package runs a device's provider (onnxruntime-genai-cuda, -directml); an artifact
# for a device it lacks runs on the CPU provider in its place.
PROVIDER_AVAILABLE = {"cpu": lambda: True, "cuda": og.is_cuda_available, "dml": og.is_dml_available}
# What the builder's algo_config writes beyond plain int4 (its table of input names in builders/base.py): k_quant
# always stores zero points, and the mixed placements put some MatMuls (the last, or chosen layers) in 8 bits.
ZERO_POINTS_ALGOS = {"k_quant", "k_quant_last", "k_quant_mixed"}
EIGHT_BIT_ALGOS = {"rtn_last", "k_quant_last", "k_quant_mixed"}


def external_data_problems(folder: Path, model: onnx.ModelProto) -> list[str]:
    """Initializers whose external bytes are missing: the file absent or shorter than offset + length."""
    problems = []
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {entry.key: entry.value for entry in tensor.external_data}
        path = folder / info["location"]
        end = int(info.get("offset", 0)) + int(info.get("length", 0))
        size = path.stat().st_size if path.exists() else None
        if size is None or size < end:
            problems.append(f"{tensor.name} needs bytes up to {end} of {info['location']}, which has "
                            f"{'no file' if size is None else size}")
    return problems


def node_attributes(model: onnx.ModelProto, op_type: str) -> list[dict]:
    return [{a.name: onnx.helper.get_attribute_value(a) for a in node.attribute} | {"inputs": len(node.input)}
            for node in model.graph.node if node.op_type == op_type]


class Genai(Runtime):
    name = "onnxruntime-genai"
    version = og.__version__

    def __init__(self, folder: Path, facts: dict, spec: dict, threads: int):
        self.folder, self.facts, self.spec = folder, facts, spec
        on_device = PROVIDER_AVAILABLE[spec["device"]]()
        self.device_used = spec["device"] if on_device else "cpu"
        self.stand_ins = [s for s in [device_stand_in(spec["device"], "onnxruntime-genai's CPU provider on the "
                                                                      "same graph")] if s and not on_device]
        self.graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
        problems = external_data_problems(folder, self.graph)
        if problems:
            raise ArtifactError(f"truncated external data: {len(problems)} tensors; first: {problems[0]}")
        self.genai_config = json.loads((folder / "genai_config.json").read_text())
        config = og.Config(str(folder))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {"intra_op_num_threads": threads}}}}))
        if not on_device:
            config.clear_providers()
        self.model = og.Model(config)
        self.tokenizer = og.Tokenizer(self.model)

    def chat_ids(self, messages):
        text = self.tokenizer.apply_chat_template(json.dumps(messages), add_generation_prompt=True)
        return [int(i) for i in self.tokenizer.encode(text)]

    def generator(self, max_length: int, **search) -> og.Generator:
        params = og.GeneratorParams(self.model)
        params.set_search_options(max_length=max_length, do_sample=False, **search)
        return og.Generator(self.model, params)

    def prefill(self, ids) -> tuple[np.ndarray, np.ndarray]:
        """All positions' logits from the prefill, and get_logits()'s last position, as float32."""
        generator = self.generator(len(ids) + 1, past_present_share_buffer=False)
        generator.append_tokens(ids)
        every = np.asarray(generator.get_output("logits"))[0].astype(np.float32)
        return every, np.asarray(generator.get_logits())[0, -1].astype(np.float32)

    def logits(self, ids):
        every, _ = self.prefill(ids)
        return every

    def generate(self, ids, max_new_tokens):
        generator = self.generator(len(ids) + max_new_tokens)
        generator.append_tokens(ids)
        out = []
        while not generator.is_done():
            generator.generate_next_token()
            out.append(int(generator.get_next_tokens()[0]))
        return out

    def decode(self, ids):
        return self.tokenizer.decode(ids)

    def extra_checks(self, reference):
        return {"quantization": self.quantization_check(), "genai_config": self.genai_config_check(),
                "sliding_window": self.window_check(), "teacher_forced_logits": self.logits_source_check(reference)}

    def window_check(self) -> dict:
        """Attention is windowed as the checkpoint's sliding window says (the builder leaves it off for Phi-3)."""
        found = sorted({node["local_window_size"] for node in node_attributes(self.graph, "GroupQueryAttention")})
        wanted = attention_window(self.facts)
        return check(found == [wanted], f"GroupQueryAttention local_window_size {found}, checkpoint's window {wanted}",
                     found=found, wanted=wanted)

    def quantization_check(self) -> dict:
        """The graph is what the recipe asked for: MatMulNBits with its block size, accuracy level, symmetry, and
        the 8-bit MatMuls of a mixed algo_config beside the 4-bit ones."""
        options = self.spec["options"]
        nodes = node_attributes(self.graph, "MatMulNBits")
        if self.spec["precision"] != "int4":
            return check(not nodes, f"{len(nodes)} MatMulNBits nodes in a {options['precision']} graph",
                         matmulnbits=len(nodes))
        algo = options.get("algo_config")
        asymmetric = (options.get("quantizer") == "hqq" or options.get("is_symmetric") is False
                      or algo in ZERO_POINTS_ALGOS)
        wanted = {"bits": 4, "block_size": options.get("block_size", 32)}
        if "accuracy_level" in options:
            wanted["accuracy_level"] = options["accuracy_level"]
        wanted["inputs"] = 4 if asymmetric else 3  # zero points are the 4th input
        wanted_bits = [4, 8] if algo in EIGHT_BIT_ALGOS else [4]
        found = sorted({json.dumps({key: node.get(key) for key in wanted}, sort_keys=True) for node in nodes})
        bits = sorted({json.loads(f)["bits"] for f in found})
        wrong = [f for f in found if {**json.loads(f), "bits": 4} != wanted]  # bits are judged apart, below
        reason = ("no MatMulNBits nodes: the graph is not int4" if not nodes else
                  f"MatMulNBits attributes {wrong} differ from the recipe's {wanted} (an option the builder ignored)"
                  if wrong else f"MatMulNBits of {bits} bits where the recipe's algo_config {algo} makes {wanted_bits}")
        return check(bool(nodes) and not wrong and bits == wanted_bits, reason, matmulnbits=len(nodes),
                     wanted={**wanted, "bits": wanted_bits}, found=[json.loads(f) for f in found])

    def genai_config_check(self) -> dict:
        """genai_config.json declares the checkpoint's end tokens, context length and vocabulary, and the
        providers the artifact is built for."""
        model = self.genai_config["model"]
        providers = [name for entry in model["decoder"]["session_options"].get("provider_options", [])
                     for name in entry]
        eos = model["eos_token_id"] if isinstance(model["eos_token_id"], list) else [model["eos_token_id"]]
        found = {"eos_token_id": sorted(eos), "context_length": model["context_length"],
                 "vocab_size": model["vocab_size"], "providers": providers}
        wanted = {"eos_token_id": sorted(self.facts["stop_token_ids"]), "context_length": self.facts["context_length"],
                  "vocab_size": self.facts["vocab_size"], "providers": PROVIDERS[self.spec["device"]]}
        wrong = [f"{key} {found[key]} (checkpoint: {wanted[key]})" for key in wanted if found[key] != wanted[key]]
        return check(not wrong, "genai_config.json: " + "; ".join(wrong), found=found)

    def logits_source_check(self, reference) -> dict:
        """The prefill's all-position logits end where get_logits() does (get_output lags during decoding)."""
        prompt = reference.data["prompts"][0]
        every, last = self.prefill(reference.sequence(prompt["name"]))
        difference = float(np.abs(every[-1] - last).max())
        return check(difference <= 1e-5, f"prefill logits' last row differs from get_logits() by {difference:.3g}",
                     method="genai: append_tokens(sequence) without a shared past/present buffer, then "
                            "get_output('logits') for every position",
                     max_abs_difference_last_position=difference)


def open(folder, checkpoint_folder, facts: dict, spec: dict, threads: int) -> Genai:
    return Genai(Path(folder), facts, spec, threads)
