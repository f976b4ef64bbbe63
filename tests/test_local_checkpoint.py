"""Checkpoints nobody has tried, through a local-folder recipe, every target: a fine-tune saved by an older
transformers (float16, one model.safetensors, no generation_config.json, an eos list without the chat template's
<|end|>) and a shape none of the fixtures has (random float32 weights in three shards, a generation_config.json
without eos). Made by tests/untried.py from the mini-4k fixture's files."""
import json

import pytest

from conftest import ARTIFACTS, ROOT, SNAKEMAKE, TORCH_PYTHON, publish_folder, read_json, run
from pipeline import recipes, validation

SOURCE = "fixture-phi-3-mini-4k"
MODELS = {"untried-finetune": "finetune", "untried-shape": "shape"}
TARGETS = {"gguf": ["F16", "Q4_K_M"], "mlx": ["4bit"], "onnx": ["cpu_and_mobile/cpu-int4-kquant-block-32-acc-level-4"],
           "openvino": ["int8"]}


@pytest.fixture(scope="module")
def untried(pipeline_run, tmp_path_factory):
    """The two folders, a recipe each in a copy of the repository, and the workflow run on both."""
    import shutil
    import subprocess

    base = tmp_path_factory.mktemp("untried")
    copy = base / "repo"
    files = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split()
    for name in files:
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, copy / name)
    (copy / ".envs").symlink_to(ROOT / ".envs")
    for model, kind in MODELS.items():
        run([TORCH_PYTHON, ROOT / "tests" / "untried.py", kind, ARTIFACTS / SOURCE / "checkpoint", base / kind])
        recipe = {"name": model, "source": str(base / kind), "architecture": "Phi3ForCausalLM", "license": "mit",
                  "targets": TARGETS}
        (copy / "recipes" / "models" / f"{model}.yaml").write_text(json.dumps(recipe))
    run([SNAKEMAKE, "--cores", "2", "--config", f"models=[{','.join(MODELS)}]", "--", "all"], cwd=copy)
    return copy / "artifacts"


def specs(model, artifacts):
    recipe = {"name": model, "targets": TARGETS, "source": "/", "architecture": "Phi3ForCausalLM", "license": "mit"}
    return [(spec, read_json(artifacts / model / f"{spec['target']}/{spec['name']}.validation.json"))
            for spec in recipes.artifacts(recipe)]


def test_every_target_builds_and_validates_both(untried):
    for model in MODELS:
        built = specs(model, untried)
        assert len(built) == sum(len(names) for names in TARGETS.values())
        for spec, record in built:
            validation.validate_record(record)
            assert record["status"] in ("passed", "failed") and record["size_bytes"] > 0, (model, spec["name"])
            assert (publish_folder(untried / model, f"{spec['target']}/{spec['name']}") / "README.md").exists()


def test_end_of_turn_comes_from_the_chat_template(untried):
    """The fine-tune's eos list lacks <|end|>: the reference stops on it anyway, the finding says so with the
    ids, and every artifact carries it, so each stops where the reference does."""
    folder = untried / "untried-finetune"
    facts = read_json(folder / "reference" / "reference.json")["facts"]
    end = read_json(folder / "checkpoint" / "added_tokens.json")["<|end|>"]
    assert facts["end_of_turn"] == "<|end|>" and end in facts["stop_token_ids"]
    [finding] = facts["findings"]
    assert finding["id"] == "eos-lacks-end-of-turn" and finding["numbers"]["end_of_turn_id"] == end
    assert end not in finding["numbers"]["eos_token_ids"]
    summary = read_json(folder / "reference" / "reference.json")["summary"]
    assert summary["stopped"] == 12 and summary["answered"] >= 11
    for spec, record in specs("untried-finetune", untried):
        assert record["checks"]["stop"]["stopped"] == 12, spec["name"]
        assert record["checkpoint_findings"] == [finding]
        assert record["unexplained"] == [], (spec["name"], record.get("reason"))
    artifact = folder / "gguf" / "F16"
    gguf = read_json(folder / "gguf" / "F16.validation.json")["checks"]
    assert gguf["gguf_metadata"]["end_of_turn"] == "<|end|>" and gguf["gguf_metadata"]["status"] == "passed"
    assert 'PARAMETER stop "<|end|>"' in (artifact / "Modelfile").read_text()
    # llama.cpp rstrips Phi-3's special tokens only under a Phi-3 name; the fine-tune's GGUF name says the family
    assert gguf["gguf_metadata"]["provenance"]["general.name"] == "untried-finetune (phi-3 family)"
    assert gguf["tokenizer_parity"]["status"] == "passed"
    assert gguf["modelfile_generation"]["answered"] == summary["answered"]
    onnx = read_json(folder / "onnx" / TARGETS["onnx"][0] / "genai_config.json")
    assert end in onnx["model"]["eos_token_id"]
    for target, name in (("openvino", "int8"), ("mlx", "4bit")):
        assert end in read_json(folder / target / name / "generation_config.json")["eos_token_id"], target
    assert "eos-lacks-end-of-turn" in (untried / "summary.md").read_text()
    assert "eos-lacks-end-of-turn" in (untried / "report.md").read_text()
