"""GGUF target: every type and Modelfile of every fixture as the pipeline run built and validated them, and
broken copies (wrong eot, truncated file, wrong Modelfile template, wrong stop list) that the validator fails."""
import hashlib
import json
import shutil
import subprocess

import pytest

from conftest import ARTIFACTS, FIXTURES, NAMESPACE, ROOT, publish_folder, read_json, validate_command
from pipeline import recipes

GGUF_PYTHON = ROOT / ".envs" / "gguf" / "bin" / "python"
ARTIFACT_SPECS = recipes.targets()["targets"]["gguf"]["artifacts"]
TYPES = list(ARTIFACT_SPECS)
PLAIN = [t for t in TYPES if not ARTIFACT_SPECS[t].get("calibrated")]  # F16 first, then fewer bits
IMATRIX = [t for t in TYPES if t not in PLAIN]  # made with the model's importance matrix
MODELS = [m for m in FIXTURES if any(a["target"] == "gguf" for a in recipes.artifacts(recipes.load(m)))]
PHI3 = [m for m in MODELS if recipes.load(m)["architecture"] == "Phi3ForCausalLM"]
BROKEN_MODEL, BROKEN_TYPE = "fixture-phi-3-mini-4k", "Q8_0"


@pytest.fixture(scope="module")
def records(pipeline_run):
    return {(m, t): read_json(ARTIFACTS / m / "gguf" / f"{t}.validation.json") for m in MODELS for t in TYPES}


def test_every_type_has_its_gguf_modelfile_and_license(pipeline_run):
    assert MODELS == FIXTURES  # phi-4-mini's too: its pre-tokenizer is named by what it is (test below)
    for model in MODELS:
        license_text = (ARTIFACTS / model / "checkpoint" / "LICENSE").read_text()
        for gguf_type in TYPES:
            folder = ARTIFACTS / model / "gguf" / gguf_type
            assert sorted(p.name for p in folder.glob("*.gguf")) == [f"{model}-{gguf_type}.gguf"]
            modelfile = (folder / "Modelfile").read_text()
            assert modelfile.startswith(f"FROM ./{model}-{gguf_type}.gguf\n")
            assert (folder / "LICENSE").read_text() == license_text
            card = (publish_folder(ARTIFACTS / model, f"gguf/{gguf_type}") / "README.md").read_text()
            name = f"{NAMESPACE}/{model}:{gguf_type}"
            assert all(f"ollama {command} {name}" in card for command in ("create", "run", "push"))
            assert f"ollama create {name} -f Modelfile" in card


def test_metadata_and_modelfile_checks_pass_everywhere(records):
    for (model, gguf_type), record in records.items():
        checks = record["checks"]
        if model in PHI3:
            assert checks["gguf_metadata"]["status"] == "passed", (model, gguf_type, checks["gguf_metadata"])
        assert checks["gguf_metadata"]["end_of_turn"] == "<|end|>"
        assert checks["gguf_metadata"]["provenance"]["general.name"] == model
        assert checks["modelfile"]["status"] == "passed", (model, gguf_type, checks["modelfile"])
        assert checks["modelfile"]["num_ctx"] == [4096]
        assert checks["modelfile_template"]["status"] == "passed", (model, gguf_type, checks["modelfile_template"])
        assert checks["modelfile_template"]["kinds"] == ["multi-turn", "single-turn", "system prompt"]


def test_phi3_fixtures_pass_every_short_prompt_check_in_every_type(records):
    """Long-context numbers are reported separately (test_longrope_past_the_original_context, the window test);
    PhiMoE is another model in llama.cpp (test_phimoe_routing_deviation_is_named)."""
    for model in PHI3:
        for gguf_type in TYPES:
            record = records[(model, gguf_type)]
            for name in ("tokenizer_parity", "stop", "task", "teacher_forced_top1", "kl", "perplexity"):
                assert record["checks"][name]["status"] == "passed", (model, gguf_type, name, record.get("reason"))
            assert record["checks"]["teacher_forced_top1"]["value"] >= record["thresholds"]["teacher_forced_top1"]
            assert record["tokens_per_s"] > 0


def test_phi3_fixtures_answer_and_stop_on_end_through_the_modelfile(records):
    for model in PHI3:
        for gguf_type in TYPES:
            checks = records[(model, gguf_type)]["checks"]
            # a 3-bit type may get right what the reference got wrong: answered as many, or more
            assert checks["task"]["answered"] >= checks["task"]["reference_answered"] >= 10
            assert checks["modelfile_generation"]["stopped"] == 12
            assert checks["modelfile_generation"]["answered"] == checks["task"]["answered"]


def test_float_gguf_matches_the_reference_and_quantized_types_lose_more_the_fewer_bits(records):
    for model in PHI3:
        assert records[(model, "F16")]["checks"]["teacher_forced_top1"]["value"] == 1.0
        kl = [records[(model, t)]["checks"]["kl"]["mean"] for t in TYPES]
        assert kl[0] < 1e-4 and min(kl[1:]) > kl[0], (model, kl)
        sizes = [records[(model, t)]["size_bytes"] for t in PLAIN]
        assert sizes == sorted(sizes, reverse=True), (model, sizes)


def tensors(model: str, gguf_type: str) -> dict:
    """name -> (quantization type, sha256 of its data) of a built GGUF."""
    folder = ARTIFACTS / model / "gguf" / gguf_type
    result = subprocess.run([GGUF_PYTHON, "-c", TENSORS, folder / f"{model}-{gguf_type}.gguf"], capture_output=True,
                            text=True, check=True)
    return json.loads(result.stdout)


TENSORS = ("import hashlib, json, sys, gguf; print(json.dumps({t.name: [t.tensor_type.name, "
           "hashlib.sha256(t.data.tobytes()).hexdigest()] for t in gguf.GGUFReader(sys.argv[1]).tensors}))")


def test_imatrix_quants_are_weighed_by_the_models_recorded_importance_matrix(pipeline_run):
    """Each model's importance matrix (the GGUF calibration stage) comes from llama-imatrix over its calibration
    text, which is kept and recorded; a K-quant made with it has the plain type's tensor types and other values;
    IQ4_XS and IQ3_M hold their own types; every imatrix artifact and its card say what it was calibrated on."""
    passage = (ROOT / "pipeline" / "data" / "passage.txt").read_text()
    for model in MODELS:
        calibration = ARTIFACTS / model / "gguf" / "calibration"
        text = (calibration / "calibration.txt").read_text()
        record = read_json(calibration / "calibration.json")
        assert record["text"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
        assert record["chunks"] >= 2 and record["chunk_tokens"] == 512
        assert "<|assistant|>" in text and "<|end|>" in text  # chats as the model's template renders them
        assert not any(paragraph.strip() in text for paragraph in passage.split("\n\n"))  # not the validation's
        for gguf_type in IMATRIX:
            assert read_json(ARTIFACTS / model / "gguf" / gguf_type / "calibration.json") == record
            card = (publish_folder(ARTIFACTS / model, f"gguf/{gguf_type}") / "README.md").read_text()
            assert f"calibrated: llama-imatrix over {record['chunks']} chunks" in card
    model = "fixture-phi-3-mini-4k"
    for gguf_type in ("Q4_K_M", "Q3_K_M"):
        plain, weighed = tensors(model, gguf_type), tensors(model, f"{gguf_type}-imatrix")
        assert {n: t for n, (t, _) in plain.items()} == {n: t for n, (t, _) in weighed.items()}
        quantized = [n for n in plain if plain[n][0] not in ("F32", "F16")]
        changed = [n for n in quantized if plain[n][1] != weighed[n][1]]
        # every matrix llama-imatrix weighs: the token embedding is looked up, not multiplied, and the output
        # matrix it leaves out by default (--process-output), as published imatrix quants do
        assert set(quantized) - set(changed) <= {"token_embd.weight", "output.weight"}, (gguf_type, changed)
        assert len(changed) >= len(quantized) - 2
    for gguf_type, own in (("IQ4_XS-imatrix", "IQ4_XS"), ("IQ3_M-imatrix", "IQ3_S")):
        assert own in {t for t, _ in tensors(model, gguf_type).values()}, gguf_type


def test_a_calibrated_artifact_without_its_calibration_is_refused(pipeline_run, tmp_path):
    model = "fixture-phi-3-mini-4k"
    out = tmp_path / "Q4_K_M-imatrix"
    result = subprocess.run([GGUF_PYTHON, "-m", "pipeline.build", "--target", "gguf", "--artifact", "Q4_K_M-imatrix",
                             "--recipe", model, "--checkpoint", ARTIFACTS / model / "checkpoint",
                             "--base", ARTIFACTS / model / "gguf" / "F16", "--out", out], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 2 and not out.exists()
    assert result.stderr.splitlines()[-1].startswith("phi-forge: error: gguf/Q4_K_M-imatrix is made with the "
                                                     "model's calibration stage: give its folder")


def test_longrope_past_the_original_context(records):
    for gguf_type in TYPES:
        record = records[("fixture-phi-3-mini-128k", gguf_type)]
        long = record["checks"]["long_context"]
        assert long["prompts"]["long-past-original-context"]["boundary"] == 4096
        if record["precision"] != "int4":  # int4 error may grow past the boundary; the check reports it
            assert long["status"] == "passed", long


def test_sliding_window_gap_is_named_with_its_numbers(records):
    """llama.cpp disables Phi's sliding window: past token 2047 the float GGUF computes what the reference computes
    without its window, and the validator names that cause, failed or within the thresholds."""
    for model in ("fixture-phi-3-mini-4k", "fixture-phi-3-medium-4k"):
        record = records[(model, "F16")]
        long = record["checks"]["long_context"]["prompts"]["long-past-sliding-window"]
        assert long["boundary"] == 2047
        windowless, limit = long["mean_kl_past_boundary_to_reference_without_window"], record["thresholds"]["max_mean_kl"]
        # the windowless model to a float's rounding, and farther from the reference by more than that
        assert windowless <= limit / 10 < long["mean_kl_past_boundary"] - windowless
        assert [d["id"] for d in record["deviations"]] == ["ignores-sliding-window"]
        assert record["unexplained"] == []


def test_phimoe_routing_deviation_is_named(records):
    """llama.cpp routes PhiMoE by softmax top-2: every type is closer to the reference recomputed with that routing
    than to the reference at most positions, and that accounts for each of its failed checks. F16, without
    quantization's noise, is far from the reference and at a float's rounding from the softmax-routed one."""
    for gguf_type in TYPES:
        record = records[("fixture-phi-3.5-moe", gguf_type)]
        routing = record["checks"]["expert_routing"]
        limit = record["thresholds"]["max_mean_kl"]
        assert record["status"] == "failed" and routing["status"] == "failed", (gguf_type, routing)
        assert routing["deviation"]["id"] == "llamacpp-phimoe-softmax-routing"
        assert routing["mean_kl_to_softmax_routing"] <= limit  # with llama.cpp's routing, within the limit
        assert routing["closer_to_softmax_routing"] > routing["positions"] / 2
        assert "attn_factor" in record["checks"]["gguf_metadata"]["reason"]
        assert record["unexplained"] == [], (gguf_type, record["unexplained"])
    f16 = records[("fixture-phi-3.5-moe", "F16")]
    routing = f16["checks"]["expert_routing"]
    assert routing["mean_kl_to_softmax_routing"] <= f16["thresholds"]["max_mean_kl"] < routing["mean_kl"]
    assert f16["checks"]["kl"]["status"] == "failed"


def test_tokenizer_matches_or_differs_only_as_documented(records):
    for model in MODELS:
        parity = records[(model, "F16")]["checks"]["tokenizer_parity"]
        assert parity["status"] == "passed", parity
        for difference in parity["differences"]:
            assert "RSTRIP" in difference["explained"] or "BOS" in difference["explained"]


def test_transformers_reader(records):
    for model in ["fixture-phi-3-mini-4k", "fixture-phi-3-medium-4k"]:
        for gguf_type in TYPES:
            reader = records[(model, gguf_type)]["checks"]["transformers_reader"]
            assert reader["status"] == "passed" and reader["median_cosine"] >= 0.999, reader
    assert "longrope" in records[("fixture-phi-3-mini-128k", "F16")]["checks"]["transformers_reader"]["reason"]
    assert "phimoe" in records[("fixture-phi-3.5-moe", "F16")]["checks"]["transformers_reader"]["reason"]


# Through every branch of o200k's split: capitals before lower case, contractions in either case, digit runs,
# punctuation runs before newlines and slashes, whitespace runs, CJK, emoji with joiners, a combining mark.
SPLIT_PROBE = ("HTTPServer's JSONParser I'VE we'Re don'T 1234567 3.14159 x=-42;\n\n  \t indent\r\n"
               "path/to//file.txt ...!!!\n/ 你好，世界 😶\u200d🌫️ e\u0301te CAFÉ naïve")
TOKENIZE = ("import json, sys, llama_cpp; from transformers import AutoTokenizer; "
            "v = llama_cpp.Llama(sys.argv[1], vocab_only=True, verbose=False); "
            "h = AutoTokenizer.from_pretrained(sys.argv[2]); "
            "print(json.dumps([v.tokenize(sys.argv[3].encode(), add_bos=False, special=False), "
            "h.encode(sys.argv[3], add_special_tokens=False), v.metadata['tokenizer.ggml.pre']]))")


def test_phi4_mini_pre_tokenizer_is_named_by_what_it_is(records):
    """Its small vocabulary's hash is none llama.cpp's converter knows; its tokenizer.json pre_tokenizer is o200k's,
    named gpt-4o as for the real Phi-4-mini, and llama.cpp then splits a probe through every branch of that regex
    into HF's tokens (the validator's tokenizer parity covers the chat prompts)."""
    model = "fixture-phi-4-mini"
    gguf_path = ARTIFACTS / model / "gguf" / "F16" / f"{model}-F16.gguf"
    result = subprocess.run([GGUF_PYTHON, "-c", TOKENIZE, gguf_path, ARTIFACTS / model / "checkpoint", SPLIT_PROBE],
                            capture_output=True, text=True, check=True)
    llama, hf, pre = json.loads(result.stdout.splitlines()[-1])
    assert pre == "gpt-4o" and llama == hf and len(hf) > 40
    for gguf_type in TYPES:
        assert records[(model, gguf_type)]["checks"]["tokenizer_parity"]["status"] == "passed", gguf_type


def test_a_pre_tokenizer_llama_cpp_does_not_implement_is_refused(pipeline_run, tmp_path):
    """A split that differs from o200k's by one quantifier (digits two at a time) is none llama.cpp implements:
    the converter stops with one line that says so, and writes no GGUF."""
    checkpoint = tmp_path / "checkpoint"
    shutil.copytree(ARTIFACTS / "fixture-phi-4-mini" / "checkpoint", checkpoint)
    tokenizer = json.loads((checkpoint / "tokenizer.json").read_text())
    split = tokenizer["pre_tokenizer"]["pretokenizers"][0]["pattern"]
    assert "\\p{N}{1,3}" in split["Regex"]
    split["Regex"] = split["Regex"].replace("\\p{N}{1,3}", "\\p{N}{1,2}")
    (checkpoint / "tokenizer.json").write_text(json.dumps(tokenizer))
    out = tmp_path / "out.gguf"
    result = subprocess.run([GGUF_PYTHON, "-m", "pipeline.targets.gguf.convert", checkpoint, "--outtype", "f16",
                             "--outfile", out], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode != 0 and not out.exists()
    assert "the BPE pre-tokenizer is none llama.cpp knows" in result.stderr.splitlines()[-1]


def broken_copy(tmp_path):
    """An artifacts root holding a copy of one GGUF artifact, its model's checkpoint and reference linked."""
    root = tmp_path / "artifacts"
    (root / BROKEN_MODEL / "gguf").mkdir(parents=True)
    for name in ("checkpoint", "reference"):
        (root / BROKEN_MODEL / name).symlink_to(ARTIFACTS / BROKEN_MODEL / name)
    folder = root / BROKEN_MODEL / "gguf" / BROKEN_TYPE
    shutil.copytree(ARTIFACTS / BROKEN_MODEL / "gguf" / BROKEN_TYPE, folder)
    return root, folder


def validate(root, tmp_path):
    out = tmp_path / "validation.json"
    subprocess.run(validate_command(GGUF_PYTHON, BROKEN_MODEL, "gguf", BROKEN_TYPE,
                                    root / BROKEN_MODEL / "gguf" / BROKEN_TYPE, out), cwd=ROOT, check=True,
                   capture_output=True)
    return read_json(out)


NEW_METADATA = ROOT / ".envs" / "gguf" / "llama.cpp" / "gguf-py" / "gguf" / "scripts" / "gguf_new_metadata.py"
# Every metadata key and value, and a digest of the tensor data, of each GGUF named.
CONTENTS = ("import hashlib, json, sys, gguf; "
            "print(json.dumps([[{f.name: f.contents() for f in r.fields.values() if not f.name.startswith('GGUF.')}, "
            "hashlib.sha256(b''.join(t.data.tobytes() for t in r.tensors)).hexdigest()] "
            "for r in map(gguf.GGUFReader, sys.argv[1:])]))")
FACTS = ("import json, sys; from pathlib import Path; from pipeline.checkpoint import facts; "
         "print(json.dumps(facts(Path(sys.argv[1]))))")


def test_chat_metadata_is_what_llama_cpps_script_writes(pipeline_run, tmp_path):
    """The builder writes eot and the chat template in the converter's one pass; llama.cpp's own way is the
    converter, then gguf_new_metadata.py: the same keys and values, the same tensor data."""
    checkpoint = ARTIFACTS / MODELS[0] / "checkpoint"
    facts = json.loads(subprocess.run([GGUF_PYTHON, "-c", FACTS, checkpoint], check=True, capture_output=True,
                                      text=True, cwd=ROOT).stdout)
    (tmp_path / "template.jinja").write_text(facts["chat_template"])
    subprocess.run([GGUF_PYTHON, "-m", "pipeline.targets.gguf.convert", checkpoint, "--outtype", "f16", "--outfile",
                    tmp_path / "builder.gguf", "--end-of-turn", facts["end_of_turn"], "--chat-template",
                    tmp_path / "template.jinja"], check=True, capture_output=True, cwd=ROOT)
    converter = ROOT / ".envs" / "gguf" / "llama.cpp" / "convert_hf_to_gguf.py"
    subprocess.run([GGUF_PYTHON, converter, checkpoint, "--outtype", "f16", "--outfile", tmp_path / "raw.gguf"],
                   check=True, capture_output=True)
    subprocess.run([GGUF_PYTHON, NEW_METADATA, tmp_path / "raw.gguf", tmp_path / "script.gguf", "--special-token",
                    "eot", facts["end_of_turn"], "--chat-template", facts["chat_template"], "--force"],
                   check=True, capture_output=True, env={"PYTHONPATH": str(NEW_METADATA.parents[2])})
    builder, script = json.loads(subprocess.run([GGUF_PYTHON, "-c", CONTENTS, tmp_path / "builder.gguf",
                                                 tmp_path / "script.gguf"], check=True, capture_output=True,
                                                text=True).stdout)
    assert builder[0]["tokenizer.ggml.eot_token_id"] == builder[0]["tokenizer.ggml.tokens"].index(facts["end_of_turn"])
    assert builder[0]["tokenizer.chat_template"] == facts["chat_template"]
    assert builder == script


def test_wrong_eot_fails(pipeline_run, tmp_path):
    root, folder = broken_copy(tmp_path)
    gguf = folder / f"{BROKEN_MODEL}-{BROKEN_TYPE}.gguf"
    subprocess.run([GGUF_PYTHON, NEW_METADATA, gguf, tmp_path / "wrong.gguf", "--special-token", "eot",
                    "<|endoftext|>", "--force"], check=True, capture_output=True,
                   env={"PYTHONPATH": str(NEW_METADATA.parents[2])})
    shutil.move(tmp_path / "wrong.gguf", gguf)
    record = validate(root, tmp_path)
    assert record["status"] == "failed"
    assert record["checks"]["gguf_metadata"]["reason"].startswith("tokenizer.ggml.eot_token_id is 512, the "
                                                                  "checkpoint says 519")


def test_truncated_gguf_fails(pipeline_run, tmp_path):
    root, folder = broken_copy(tmp_path)
    gguf = folder / f"{BROKEN_MODEL}-{BROKEN_TYPE}.gguf"
    gguf.write_bytes(gguf.read_bytes()[:gguf.stat().st_size // 2])
    record = validate(root, tmp_path)
    assert record["status"] == "failed"
    assert "truncated" in record["reason"], record["reason"]


def test_wrong_template_in_modelfile_fails(pipeline_run, tmp_path):
    root, folder = broken_copy(tmp_path)
    modelfile = folder / "Modelfile"
    modelfile.write_text(modelfile.read_text().replace("<|user|>\n{{ .Content }}", "<|user|>{{ .Content }}"))
    record = validate(root, tmp_path)
    assert record["status"] == "failed"
    reason = record["checks"]["modelfile_template"]["reason"]
    assert reason.startswith("TEMPLATE rendered by Go's text/template differs from the checkpoint's chat template in "
                             "12 of 12 conversations"), reason
    assert record["checks"]["modelfile"]["status"] == "passed"


def test_wrong_stop_list_fails(pipeline_run, tmp_path):
    root, folder = broken_copy(tmp_path)
    modelfile = folder / "Modelfile"
    modelfile.write_text(modelfile.read_text().replace('PARAMETER stop "<|end|>"\n', ""))
    record = validate(root, tmp_path)
    assert record["status"] == "failed"
    assert "missing ['<|end|>']" in record["checks"]["modelfile"]["reason"]
    assert record["checks"]["modelfile_template"]["status"] == "passed"
