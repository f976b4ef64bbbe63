"""MLX: 4-bit and 8-bit artifacts from mlx-lm's converter and its GPTQ, validated in mlx-lm on the CPU; broken ones
fail."""
import hashlib
import json
import shutil
import subprocess

import pytest

from conftest import ARTIFACTS, FIXTURES, ROOT, publish_folder, read_json, run, validate_command

MLX_PYTHON = ROOT / ".envs" / "mlx" / "bin" / "python"
ARTIFACT_BITS = {"4bit": 4, "8bit": 8}
TOKENIZER_FILES = ("tokenizer.model", "tokenizer.json", "tokenizer_config.json")


def validation(model, artifact):
    return read_json(ARTIFACTS / model / "mlx" / f"{artifact}.validation.json")


@pytest.mark.parametrize("artifact", ARTIFACT_BITS)
@pytest.mark.parametrize("model", FIXTURES)
def test_every_fixture_is_built_and_validated_in_mlx_lm(pipeline_run, model, artifact):
    record = validation(model, artifact)
    assert record["runtime"]["name"] == "mlx-lm"
    assert record["device"] == {"intended": "cpu", "used": "cpu"}
    checks = record["checks"]
    for name in ("tokenizer_parity", "stop", "quantization", "tokenizer_files", "config_dtype"):
        assert checks[name]["status"] == "passed", (name, checks[name])
    assert checks["stop"]["stopped"] == checks["stop"]["prompts"] == 12
    assert checks["compute_dtype"]["computed"] == "float32"
    bits = ARTIFACT_BITS[artifact]
    assert bits < record["bits_per_weight"] < bits + 1.5  # scales and biases, the float norms
    assert record["tokens_per_s"] > 0


@pytest.mark.parametrize("artifact", ARTIFACT_BITS)
def test_mini_4k_passes_and_answers_like_the_reference(pipeline_run, artifact):
    record = validation("fixture-phi-3-mini-4k", artifact)
    assert record["status"] == "passed", record.get("reason")
    assert record["checks"]["task"]["answered"] == 12
    assert record["checks"]["teacher_forced_top1"]["value"] >= 0.9


def test_8bit_is_closer_to_the_reference_than_4bit(pipeline_run):
    for model in ("fixture-phi-3-mini-4k", "fixture-phi-3-medium-4k"):
        assert validation(model, "8bit")["checks"]["kl"]["mean"] < validation(model, "4bit")["checks"]["kl"]["mean"]


@pytest.mark.parametrize("model", FIXTURES)
def test_artifact_keeps_the_checkpoints_tokenizer_files_and_states_its_dtype(pipeline_run, model):
    for artifact, bits in ARTIFACT_BITS.items():
        folder = ARTIFACTS / model / "mlx" / artifact
        for name in TOKENIZER_FILES:
            source = ARTIFACTS / model / "checkpoint" / name
            if source.exists():  # Phi-4-mini's BPE tokenizer has no tokenizer.model
                assert (folder / name).read_bytes() == source.read_bytes(), name
        config = read_json(folder / "config.json")
        assert config["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
        assert config["torch_dtype"] == read_json(ARTIFACTS / model / "checkpoint" / "config.json")["torch_dtype"]
        assert "TokenizersBackend" not in (folder / "tokenizer_config.json").read_text()


def test_sliding_window_deviation_is_measured_and_the_workaround_proven(pipeline_run):
    """mlx-lm's phi3 attends past sliding_window 2047; --max-kv-size 2047 brings the numbers back."""
    for model in ("fixture-phi-3-mini-4k", "fixture-phi-3-medium-4k"):
        for artifact in ARTIFACT_BITS:
            checks = validation(model, artifact)["checks"]
            numbers = checks["sliding_window"]["prompts"]["long-past-sliding-window"]
            assert numbers["boundary"] == 2047 and numbers["max_abs_logit_change_past_boundary"] > 0.1
            long_context = checks["long_context"]["prompts"]["long-past-sliding-window"]
            assert long_context["mean_kl_past_boundary"] == pytest.approx(numbers["mean_kl_past_boundary"])
    for artifact in ARTIFACT_BITS:
        record = validation("fixture-phi-3-medium-4k", artifact)
        numbers = record["checks"]["sliding_window"]["prompts"]["long-past-sliding-window"]
        if record["checks"]["sliding_window"]["status"] == "failed":
            assert numbers["deviates"] and numbers["restored_with_max_kv_size"]
            assert "mlx-lm ignores sliding_window 2047" in record["reason"]


LONGROPE = ["fixture-phi-3-mini-128k", "fixture-phi-3.5-moe", "fixture-phi-4-mini"]


@pytest.mark.parametrize("model", LONGROPE)
def test_longrope_long_factor_on_short_prompts_is_measured(pipeline_run, model):
    for artifact in ARTIFACT_BITS:
        record = validation(model, artifact)
        numbers = record["checks"]["longrope_short_factor"]
        assert numbers["prompts"] == 13  # 12 chat prompts and the passage, all shorter than the original context
        # with short_factor the artifact is within its KL limit: the long factor is the whole of the failure
        assert numbers["mean_kl"] > 0.5 > record["thresholds"]["max_mean_kl"] >= numbers["mean_kl_with_short_factor"]
        assert record["status"] == "failed" and "mlx-lm applies long_factor" in record["reason"]
        assert numbers["deviation"]["id"] == "mlx-longrope-long-factor"
        assert record["unexplained"] == [], (artifact, record["unexplained"])


@pytest.mark.parametrize("model", LONGROPE)
def test_the_original_context_variant_restores_the_reference_numbers(pipeline_run, model):
    """short_factor in long_factor's place: on the short prompts the KL the default 4-bit loses to long_factor is
    gone, within the int4 limit; the variant states its context in config.json, validation.json and its card, and
    lists the prompt past it as not run."""
    default, variant = validation(model, "4bit"), validation(model, "4bit-original-context")
    original = read_json(ARTIFACTS / model / "reference" / "reference.json")["facts"]["original_context_length"]
    config = read_json(ARTIFACTS / model / "mlx" / "4bit-original-context" / "config.json")
    assert config["rope_scaling"]["long_factor"] == config["rope_scaling"]["short_factor"]
    assert config["valid_context_length"] == variant["valid_context_length"] == original
    limit = variant["thresholds"]["max_mean_kl"]
    assert variant["checks"]["kl"]["mean"] <= limit < default["checks"]["kl"]["mean"]
    assert variant["checks"]["longrope_short_factor"]["status"] == "passed"
    long = variant["checks"]["long_context"]
    assert "long-past-original-context" in long["beyond_stated_context"]
    assert "long-past-original-context" not in long.get("prompts", {})
    assert any(line.startswith("long-past-original-context") and f"beyond the {original} tokens" in line
               for line in variant["not_run"])
    card = (publish_folder(ARTIFACTS / model, "mlx/4bit-original-context") / "README.md").read_text()
    assert f"exact up to {original} tokens" in card


def test_the_original_context_variant_is_refused_for_a_checkpoint_without_longrope(pipeline_run, tmp_path):
    model = "fixture-phi-3-mini-4k"
    result = subprocess.run([MLX_PYTHON, "-m", "pipeline.build", "--target", "mlx", "--artifact",
                             "4bit-original-context", "--checkpoint", ARTIFACTS / model / "checkpoint", "--out",
                             tmp_path / "out", "--recipe", model], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 2 and not (tmp_path / "out").exists()
    assert result.stderr.splitlines() == ["phi-forge: error: mlx/4bit-original-context is for LongRoPE checkpoints; "
                                          "this one's rope is plain, which mlx-lm computes exactly: leave it out of "
                                          "the recipe's targets."]


@pytest.mark.parametrize("model", ["fixture-phi-3-mini-4k", "fixture-phi-3-medium-4k"])
def test_gptq_is_made_on_the_models_calibration_text_and_says_so(pipeline_run, model):
    """mlx-lm's GPTQ runs on pipeline.calibration's text of this checkpoint (not a download), recorded beside the
    weights and on the card, and quantizes at 4bit's bits and group size."""
    folder = ARTIFACTS / model / "mlx" / "4bit-gptq"
    record = read_json(folder / "calibration.json")
    text = run([MLX_PYTHON, "-c", "import sys; from pathlib import Path; from pipeline import calibration; "
                "sys.stdout.write(calibration.text(Path(sys.argv[1])))", ARTIFACTS / model / "checkpoint"]).stdout
    assert record["text"]["sha256"] == hashlib.sha256(text.encode()).hexdigest()
    assert record["method"].startswith("mlx-lm GPTQ over ") and record["chunks"] > 0
    quantization = read_json(folder / "config.json")["quantization"]
    assert (quantization["bits"], quantization["group_size"]) == (4, 64)
    assert validation(model, "4bit-gptq")["checks"]["quantization"]["status"] == "passed"
    card = (publish_folder(ARTIFACTS / model, "mlx/4bit-gptq") / "README.md").read_text()
    assert "- calibrated: mlx-lm GPTQ over " in card


def test_phimoe_is_validated_in_float32_and_says_so(pipeline_run):
    for artifact in ARTIFACT_BITS:
        record = validation("fixture-phi-3.5-moe", artifact)
        assert any("float32" in line and "GatherMM" in line for line in record["not_run"])


@pytest.fixture
def broken(tmp_path):
    """A copy of fixture-phi-3-mini-4k's 4-bit artifact in a scratch artifacts root, and a validator for it."""
    model = "fixture-phi-3-mini-4k"
    root = tmp_path / "artifacts"
    (root / model).mkdir(parents=True)
    for name in ("checkpoint", "reference"):
        (root / model / name).symlink_to(ARTIFACTS / model / name)
    folder = root / model / "mlx" / "4bit"
    shutil.copytree(ARTIFACTS / model / "mlx" / "4bit", folder)

    def validate():
        out = tmp_path / "4bit.validation.json"
        run(validate_command(MLX_PYTHON, model, "mlx", "4bit", folder, out))
        return read_json(out)

    return folder, validate


def assert_failed_to_load(record, *words):
    assert record["status"] == "failed"
    assert record["checks"]["load"]["status"] == "failed"
    for word in words:
        assert word in record["reason"], record["reason"]


def test_wrong_group_size_in_config_fails(pipeline_run, broken):
    folder, validate = broken
    config = read_json(folder / "config.json")
    config["quantization"]["group_size"] = config["quantization_config"]["group_size"] = 32
    (folder / "config.json").write_text(json.dumps(config))
    assert_failed_to_load(validate(), "config.json says group_size 32", "quantized in groups of 64")


def test_missing_tokenizer_file_fails(pipeline_run, broken):
    folder, validate = broken
    (folder / "tokenizer.model").unlink()
    assert_failed_to_load(validate(), "tokenizer.model missing")


def test_truncated_weights_fail(pipeline_run, broken):
    folder, validate = broken
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1000])
    assert_failed_to_load(validate(), "model.safetensors: truncated")


def test_dtype_option_is_what_config_json_states(pipeline_run, tmp_path):
    """mlx_lm.convert --dtype float16 leaves torch_dtype bfloat16; the builder states the stored dtype."""
    model = "fixture-phi-3-mini-4k"
    out = tmp_path / "artifacts" / model / "mlx" / "fp16-scales"
    out.mkdir(parents=True)
    run([MLX_PYTHON, "-c", "import sys; from pathlib import Path; from pipeline.targets.mlx.build import build; "
         "from pipeline.checkpoint import facts; checkpoint = Path(sys.argv[1]); "
         "build(checkpoint, {'options': {'bits': 8, 'group_size': 64, 'dtype': 'float16'}}, facts(checkpoint), "
         "Path(sys.argv[2]))", ARTIFACTS / model / "checkpoint", out])
    assert read_json(out / "config.json")["torch_dtype"] == "float16"
    raw = (out / "model.safetensors").read_bytes()
    header = json.loads(raw[8:8 + int.from_bytes(raw[:8], "little")])
    assert {entry["dtype"] for name, entry in header.items() if name.endswith(".scales")} == {"F16"}
