"""openvino-genai's LLMPipeline on CPU, the runtime an OpenVINO IR folder is deployed with.

Fidelity numbers run with INFERENCE_PRECISION_HINT=f32 (CPUs with AVX512-BF16 otherwise compute in bf16);
tokens/s is also measured in the CPU's default precision. LLMPipeline returns no logits for every position, so
teacher-forced logits come from openvino.Core on the same openvino_model.xml, with the same f32 hint.
"""
import time
from collections import Counter

import numpy as np
import openvino as ov
import openvino_genai as og

from pipeline.runtimes.base import ArtifactError, Runtime, check, device_stand_in
from pipeline.validation import log_softmax

DEVICE = "CPU"
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
# What an artifact folder needs: the model, and the tokenizer and detokenizer IR genai encodes and decodes with.
REQUIRED = {"openvino_model": "the model", "openvino_tokenizer": "the tokenizer, which turns text into ids",
            "openvino_detokenizer": "the detokenizer, which turns generated ids into text"}
# NNCF's compressed weights by element type; a weight's last axis is longer than 1, its scales' and zero points' not.
BITS = {"u4": "int4", "i4": "int4", "u8": "int8", "i8": "int8", "f16": "float", "bf16": "float", "f32": "float"}
# optimum-cli flag -> the key NNCF records under rt_info nncf/weight_compression, and how to read it back.
RECORDED = {"group-size": ("group_size", int), "ratio": ("ratio", float), "awq": ("awq", lambda v: v == "True"),
            "scale-estimation": ("scale_estimation", lambda v: v == "True")}
LONG_NEW_TOKENS = 4
# What the validator computes with: teacher-forced logits (openvino.Core), generation (LLMPipeline), both in f32,
# and generation in the CPU's default precision for the speed a user gets.
COMPILE = {"request": lambda folder, threads: ov.Core().compile_model(
               str(folder / "openvino_model.xml"), DEVICE, {**F32, **threads}).create_infer_request(),
           "pipeline": lambda folder, threads: og.LLMPipeline(str(folder), DEVICE, **F32, **threads),
           "default": lambda folder, threads: og.LLMPipeline(str(folder), DEVICE, **threads)}


def last_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def missing_files(folder) -> list[str]:
    return [f"{stem}.xml/.bin ({what})" for stem, what in REQUIRED.items()
            if not ((folder / f"{stem}.xml").is_file() and (folder / f"{stem}.bin").is_file())]


def weight_split(model: ov.Model) -> dict:
    """Layers and parameters per weight precision, read from the IR's constants."""
    layers, params = Counter(), Counter()
    for op in model.get_ops():
        if op.get_type_name() != "Constant":
            continue
        shape = list(op.get_output_shape(0))
        kind = BITS.get(op.get_output_element_type(0).get_type_name())
        if kind and len(shape) >= 2 and shape[-1] > 1 and not (kind == "float" and len(shape) > 2):
            layers[kind] += 1
            params[kind] += int(np.prod(shape))
    total = sum(params.values())
    return {kind: {"layers": layers[kind], "share_of_parameters": params[kind] / total} for kind in sorted(layers)}


def recorded_compression(model: ov.Model) -> dict:
    if not model.has_rt_info(["nncf", "weight_compression"]):
        return {}
    info = model.get_rt_info(["nncf", "weight_compression"]).astype(dict)
    return {key: value.astype(str) for key, value in info.items() if key != "advanced_parameters"}


class OpenVINOGenAI(Runtime):
    name = "openvino-genai"
    version = og.__version__
    def __init__(self, folder, facts: dict, spec: dict, threads: int):
        self.folder, self.facts, self.spec = folder, facts, spec
        self.threads = {"INFERENCE_NUM_THREADS": threads}
        self.stand_ins = [("teacher-forced logits from LLMPipeline, which returns none for every position",
                           "openvino.Core on the same openvino_model.xml with INFERENCE_PRECISION_HINT=f32"),
                          *[device_stand_in(device, "the CPU plugin") for device in ("gpu", "npu")]]
        self.alive = (None, None)
        self.last_logits = {}  # each sequence's last position, kept by logits(): the fidelity checks' forward of a
        # long prompt serves long_prompt_generation too, where a second one costs minutes at a real size
        self.generation_config = self.compiled("pipeline").get_generation_config()
        self.tokenizer = og.Tokenizer(str(folder))
        self.device_used = f"{DEVICE} (openvino {ov.__version__}, f32 inference precision)"

    def compiled(self, kind: str):
        """The one compiled model alive, of COMPILE's kinds. Each holds the IR's weights in its own layout, so the
        one before is released first: three side by side put a validation at 2.6x the bf16 weights at
        Phi-3-mini's shape."""
        if self.alive[0] != kind:
            self.alive = (None, None)
            self.alive = (kind, COMPILE[kind](self.folder, self.threads))
        return self.alive[1]

    def chat_ids(self, messages):
        # genai's own chat path: the template stored in the tokenizer IR, then encoding without added specials.
        self.last_messages = messages  # for explain_tokenizer_difference, which the validator calls right after
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True)
        return self.tokenizer.encode(text, add_special_tokens=False).input_ids.data[0].tolist()

    def explain_tokenizer_difference(self, reference_ids, runtime_ids):
        """genai renders chat templates with minja, which folds a system message into the first user turn when
        the template has no system role (minja's system-role polyfill); HF's jinja runs the template as written,
        which may drop it. Verified exactly: genai gives HF's ids once the system message is left out, and its
        own ids once the system message is folded into the user turn by hand."""
        messages = self.last_messages
        if len(messages) < 2 or messages[0]["role"] != "system" or messages[1]["role"] != "user":
            return None
        rest = messages[2:]
        folded = [{"role": "user", "content": f"{messages[0]['content']}\n{messages[1]['content']}"}, *rest]
        if self.chat_ids(messages[1:]) == reference_ids and self.chat_ids(folded) == runtime_ids:
            return ("the chat template has no system role: HF's template drops the system message, genai's minja "
                    "folds it into the first user turn")
        return None

    def logits(self, ids):
        request = self.compiled("request")
        request.reset_state()
        n = len(ids)
        request.infer({"input_ids": np.array([ids], dtype=np.int64),
                       "attention_mask": np.ones((1, n), dtype=np.int64),
                       "position_ids": np.arange(n, dtype=np.int64)[None],
                       "beam_idx": np.zeros(1, dtype=np.int32)})
        logits = request.get_tensor("logits").data[0].astype(np.float32)
        self.last_logits[tuple(ids)] = logits[-1]
        return logits

    def last_position(self, ids):
        if tuple(ids) not in self.last_logits:
            self.logits(ids)
        return self.last_logits[tuple(ids)]

    def config(self, max_new_tokens: int) -> og.GenerationConfig:
        # The artifact's own generation config: its eos and stop ids, as a user's pipeline would have them.
        config = self.generation_config
        config.max_new_tokens, config.do_sample = max_new_tokens, False
        config.apply_chat_template = False  # prompts are already templated ids
        return config

    def generate(self, ids, max_new_tokens, kind="pipeline"):
        result = self.compiled(kind).generate(ov.Tensor(np.array([ids], dtype=np.int64)), self.config(max_new_tokens))
        return list(result.tokens[0])

    def decode(self, ids):
        return self.tokenizer.decode(ids, skip_special_tokens=False)

    def end_tokens(self) -> dict:
        config = self.config(1)
        declared = sorted(config.stop_token_ids | {config.eos_token_id})
        expected = sorted(self.facts["stop_token_ids"])
        missing = sorted(set(expected) - set(declared))
        return check(not missing, f"the artifact's generation config stops on {declared}, not on the checkpoint's "
                                  f"end tokens {missing} ({self.facts['stop_tokens']}); generation runs past them",
                     declared=declared, expected=expected)

    def weight_compression(self) -> dict:
        """NNCF's split of int4/int8/float weights, and the settings it recorded, against the recipe's."""
        model = ov.Core().read_model(self.folder / "openvino_model.xml")
        split, recorded = weight_split(model), recorded_compression(model)
        options, precision = self.spec["options"], self.spec["precision"]
        problems = [f"{flag}: recipe {options[flag]}, IR {recorded.get(key)}" for flag, (key, read) in RECORDED.items()
                    if flag in options and (key not in recorded or read(recorded[key]) != read(str(options[flag])))]
        if not recorded.get("mode", "").startswith(precision):
            problems.append(f"NNCF mode {recorded.get('mode')}, not {precision}")
        if precision not in split:
            problems.append(f"no {precision} weights in the IR (split {split})")
        if precision == "int8" and "int4" in split:
            problems.append(f"int4 weights in an int8 artifact ({split['int4']['layers']} layers)")
        return check(not problems, "the IR does not reflect the recipe: " + "; ".join(problems),
                     split=split, nncf=recorded)

    def long_prompt_generation(self, reference) -> dict:
        """genai's own generate() on each long prompt against the same IR's teacher-forced logits (openvino.Core):
        its first token must be the model's own top-1, or within the precision's near-tie margin of it. The two
        compute one IR differently (genai's paged attention and KV cache against Core's stateful request): 0.16
        nats apart on an int4 near tie that each broke its own way, on one build and not on another. What the
        weights change against the reference is long_context's to judge; the reference's next token is reported."""
        margin = self.spec["thresholds"]["near_tie_margin"]
        long_prompts = [p["name"] for p in reference.data["prompts"] if p["kind"] == "long"]
        sequences = {name: reference.sequence(name) for name in long_prompts}
        # every prompt's logits (kept from the fidelity checks), then every generation: one compiled model at a time
        logprobs = {name: log_softmax(self.last_position(ids)) for name, ids in sequences.items()}
        firsts = {name: self.generate(ids, LONG_NEW_TOKENS)[0] for name, ids in sequences.items()}
        results = {}
        for name, ids in sequences.items():
            top1 = int(logprobs[name].argmax())
            results[name] = {"tokens": len(ids), "first": firsts[name], "model_top1": top1,
                             "behind_top1": float(logprobs[name][top1] - logprobs[name][firsts[name]]),
                             "reference": int(reference.top_k(name)[0][-1, 0])}
        wrong = {name: r for name, r in results.items() if r["behind_top1"] >= margin}
        return check(not wrong, "LLMPipeline's first token after the long prompt is not the model's own top-1 "
                                f"(openvino.Core on the same IR) nor within {margin} nats of it: {wrong}",
                     prompts=results, near_tie_margin=margin)

    def default_precision_speed(self, reference) -> dict:
        """tokens/s as a user gets it: the CPU's default inference precision (bf16 where the CPU has it)."""
        chats = [p for p in reference.data["prompts"] if p["kind"] == "chat"]
        tokens, started = 0, time.perf_counter()
        for prompt in chats:
            tokens += len(self.generate(prompt["prompt_ids"], reference.data["max_new_tokens"], "default"))
        seconds = time.perf_counter() - started
        return check(True, "", tokens_per_s=tokens / seconds, tokens=tokens,
                     inference_precision=ov.Core().get_property(DEVICE, "INFERENCE_PRECISION_HINT").get_type_name())

    def extra_checks(self, reference):
        # the long prompts first, while the f32 models are the ones compiled; the default precision last
        checks = {}
        if any(p["kind"] == "long" for p in reference.data["prompts"]):
            checks["long_prompt_generation"] = self.long_prompt_generation(reference)
        return {**checks, "end_tokens": self.end_tokens(), "weight_compression": self.weight_compression(),
                "default_precision_speed": self.default_precision_speed(reference)}


def open(folder, checkpoint_folder, facts: dict, spec: dict, threads: int) -> OpenVINOGenAI:
    missing = missing_files(folder)
    if missing:
        raise ArtifactError(f"{folder} lacks {', '.join(missing)}: openvino-genai cannot run it without them")
    try:
        return OpenVINOGenAI(folder, facts, spec, threads)
    except RuntimeError as error:
        raise ArtifactError(f"OpenVINO cannot load {folder}: {last_line(error)}")
