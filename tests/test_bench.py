"""The scale benchmark's code path on the smallest real shape (one layer of Phi-3-mini-4k's width and vocabulary,
0.6 GB): every stage it is asked for runs through the workflow, its figures are Snakemake's own benchmark files,
beside the tool by hand. Figures are the benchmark's to print; here only that they were measured."""
import json
import shutil
import sys

from safetensors.numpy import load_file, save_file

from conftest import ARTIFACTS, ROOT, SNAKEMAKE, TORCH_PYTHON, read_json, run
from pipeline import recipes
from pipeline.bench import measure
from pipeline.fixtures import shapes
from pipeline.runtimes.base import DEVICES

PYTHON = SNAKEMAKE.parent / "python"


def test_scale_benchmark_measures_each_stage_and_the_tool_by_hand(pipeline_run, tmp_path):
    out = tmp_path / "scale.json"
    run([PYTHON, "-m", "pipeline.bench.scale", "--layers", "1", "--artifacts", "gguf/F16", "--work",
         tmp_path / "work", "--out", out])
    [depth] = read_json(out)["depths"]
    hub = shapes.SHAPES["phi3-mini-4k"]["hub"]
    hidden, intermediate, vocab = hub["hidden"], hub["intermediate"], 32064  # the hub's config.json
    per_layer = hidden * 3 * hidden + hidden * hidden + 2 * intermediate * hidden + intermediate * hidden + 2 * hidden
    assert depth["weights_bytes"] == 2 * (2 * vocab * hidden + per_layer + hidden)  # bf16: the real shape, 1 layer
    assert {"fixture", "pull", "gguf/F16"} <= set(depth["stages"])
    for stage, figures in depth["stages"].items():
        assert figures["wall_s"] > 0 and figures["max_rss_mb"] > 0, (stage, figures)
    assert depth["by_hand"]["gguf/F16"]["wall_s"] > 0
    assert depth["disk_bytes"]["gguf/F16"] >= depth["weights_bytes"]  # F16 of bf16 weights: no smaller
    assert not (tmp_path / "work" / "repo" / "artifacts").exists(), "each depth's artifacts are removed"
    assert json.loads(out.read_text())["machine"]["cores"] > 0

    # The matrix reads the run back: F16's bytes on disk, the newest run's where two measured it, the rest named
    later = read_json(out)
    later["machine"]["measured"] = "9999-12-31T00:00:00Z"
    later["depths"][0]["disk_bytes"]["gguf/F16"] *= 2
    (tmp_path / "later.json").write_text(json.dumps(later))
    table = run([PYTHON, "-m", "pipeline.bench.matrix", tmp_path / "later.json", out, "--layers", "1"]).stdout
    matrix = recipes.artifacts(recipes.load_supported("scale-phi-3-mini-4k"))
    assert f"| gguf/F16 | {2 * depth['disk_bytes']['gguf/F16'] / 1e9:.2f} | - | - | - | later.json |" in table
    assert f"1 of {len(matrix)} artifacts measured" in table
    assert "not measured at this depth: " in table and "gguf/Q4_K_M," in table


def test_reference_load_benchmark_prints_both_loads(pipeline_run):
    """The reference's pread load and transformers' own, on a fixture checkpoint: one row with both figures."""
    out = run([TORCH_PYTHON, "-m", "pipeline.bench.reference_load", ARTIFACTS / "fixture-phi-3-mini-4k" / "checkpoint"])
    row = next(line for line in out.stdout.splitlines() if line.startswith("float32 load"))
    assert len(row.split()) == 8 and all(float(value) > 0 for value in row.split()[2:])


def test_a_tool_that_writes_more_than_a_pipe_holds_is_measured_to_its_end():
    """onnxruntime's k_quant writes a progress bar of about 1 MB to stderr; the measurement waits for the tool
    without reading its output as it goes, which a pipe would have stopped at 64 KB."""
    writer = "import sys, time; sys.stderr.write('x' * 2**20); time.sleep(0.2)"
    figures = measure(["timeout", "60", sys.executable, "-c", writer])  # a stopped tool fails, it does not hang
    assert figures["wall_s"] >= 0.2 and figures["peak_rss_mb"] > 0


def test_gpu_check_records_what_ran_and_goes_on_where_it_stopped(pipeline_run, tmp_path):
    """The GPU check's code path on one layer of Phi-3-mini's shape. Without CUDA (as in CI) every stage still
    runs, on the CPU, and the figures say what did not run on the GPU; a second run reuses what the first did."""
    python, work, out = ROOT / ".envs" / "onnx" / "bin" / "python", tmp_path / "work", tmp_path / "gpu.json"
    command = [python, "-m", "pipeline.bench.gpu", "run", "--recipe", "scale-phi-3-mini-4k", "--layers", "1",
               "--work", work, "--out", out, "--artifacts", "onnx/cuda/cuda-fp16"]
    run(command)
    result = read_json(out)
    assert list(result["stages"]) == ["fixture", "reference", "onnx/cuda/cuda-fp16", "validate/onnx/cuda/cuda-fp16"]
    for stage, figures in result["stages"].items():
        assert "error" not in figures and figures["wall_s"] > 0 and figures["max_rss_mb"] > 0, (stage, figures)
    validation = result["validations"]["onnx/cuda/cuda-fp16"]
    reference = read_json(work / "reference" / "reference.json")
    on_gpu = result["host"]["genai_cuda_provider"]
    assert validation["device"] == {"intended": "cuda", "used": "cuda" if on_gpu else "cpu"}
    assert any(line.startswith(f"{DEVICES['cuda']}: not run here") for line in validation["not_run"]) != on_gpu
    assert reference["runtime"]["device"] == ("cuda" if result["host"]["torch_sees_cuda"] else "cpu")
    assert len(result["not_run"]) == (not result["host"]["torch_sees_cuda"]) + (not on_gpu)
    assert set(result["checkpoint"]["sha256"]) == {p.name for p in (work / "checkpoint").glob("*.safetensors")}

    run([*command, "--through", "reference"])
    assert all(figures["reused"] for figures in read_json(out)["stages"].values())

    # Two references side by side: one top logit moved by 0.5 is the largest difference found, and only there
    moved = tmp_path / "moved"
    shutil.copytree(work / "reference", moved)
    logits = load_file(str(moved / "logits.safetensors"))
    name = reference["prompts"][1]["name"]
    logits[f"{name}.topk_logits"][3, 0] += 0.5
    save_file(logits, str(moved / "logits.safetensors"))
    run([python, "-m", "pipeline.bench.gpu", "compare", "--reference", work / "reference", "--against", moved,
         "--into", out])
    comparison = read_json(out)["reference_comparison"]
    assert comparison["prompts"] == comparison["same_tokens"] == len(reference["prompts"])
    assert comparison["min_top1_agreement"] == 1.0 and comparison["max_abs_logsumexp"] == 0.0
    assert abs(comparison["max_abs_top_logit"] - 0.5) < 1e-3
    assert [p["name"] for p in comparison["by_prompt"] if p["max_abs_top_logit"] > 0] == [name]
