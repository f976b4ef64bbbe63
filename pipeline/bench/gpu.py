"""The GPU check: a recipe's real-shape checkpoint through the CUDA path, in one prepared run, and what ran.

On a host with an NVIDIA GPU and an environment of envs/gpu.txt (torch's CUDA build, onnxruntime-genai-cuda), in
this repository's root:

    python -m pipeline.bench.gpu run --recipe scale-phi-3-mini-4k --work /tmp/gpu --out gpu.json

makes the recipe's checkpoint (pipeline.fixtures), runs the float32 reference on CUDA (pipeline.reference --device
cuda), builds every artifact of the recipe made for the cuda device (pipeline.build) and validates each in
onnxruntime-genai (pipeline.validate), which runs it on the CUDA provider where the installed package has one and
says so in the validation's not_run list where it does not. Each stage's wall and CPU seconds, peak host memory
and peak GPU memory (NVML, the whole device's use above its use at the stage's start) are recorded, with the GPU,
its copy bandwidth and each artifact's decode speed beside that bandwidth's bound. A stage finished by an earlier
run of the same --work is not run again (its figures are kept): a run stopped by a time limit goes on where it
stopped. --through reference stops after the reference; --artifacts takes some of the cuda artifacts only. Nothing is
asserted: figures are printed and written.

    python -m pipeline.bench.gpu compare --reference REF_A --against REF_B --into gpu.json

sets two references of the same checkpoint side by side (the CUDA one against the CPU one): their greedy
continuations, top-1 agreement per position and the largest difference of the top logit and log-sum-exp.
"""
import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file

from pipeline import checkpoint, machine, recipes
from pipeline.atomic import atomic_file
from pipeline.cli import run_cli
from pipeline.pull import sha256

DEVICE = "cuda"
THROUGH = ["reference", "validate"]


class GpuMemory:
    """The device's memory in use, sampled by NVML every `every` seconds; None without a GPU or NVML."""

    def __init__(self, every: float = 0.2):
        try:
            import pynvml
            pynvml.nvmlInit()
            self.nvml, self.handle = pynvml, pynvml.nvmlDeviceGetHandleByIndex(0)
        except Exception:
            self.nvml = self.handle = None
        self.every = every

    def used_mb(self) -> float | None:
        return self.nvml.nvmlDeviceGetMemoryInfo(self.handle).used / 2**20 if self.handle else None

    def facts(self) -> dict:
        if not self.handle:
            return {}
        name = self.nvml.nvmlDeviceGetName(self.handle)
        return {"gpu": name.decode() if isinstance(name, bytes) else name,
                "gpu_memory_gb": round(self.nvml.nvmlDeviceGetMemoryInfo(self.handle).total / 1e9, 1),
                "driver": self.nvml.nvmlSystemGetDriverVersion()}

    def peak_during(self, process: subprocess.Popen) -> list:
        """Start sampling until `process` ends; the returned list's one element is the peak above the start."""
        peak = [None]
        if self.handle:
            start = self.used_mb()

            def sample():
                while process.poll() is None:
                    peak[0] = max(peak[0] or 0.0, self.used_mb() - start)
                    time.sleep(self.every)
            threading.Thread(target=sample, daemon=True).start()
        return peak


def copy_bandwidth_gb_s(gigabytes: float = 2.0, repeats: int = 10) -> float | None:
    """GPU memory bandwidth: a device-to-device copy, bytes read plus written, best of `repeats`."""
    import torch
    if not torch.cuda.is_available():
        return None
    source = torch.empty(int(gigabytes * 1e9) // 4, dtype=torch.float32, device=DEVICE).uniform_()
    target = torch.empty_like(source)
    target.copy_(source)
    best = float("inf")
    for _ in range(repeats):
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        target.copy_(source)
        end.record()
        torch.cuda.synchronize()
        best = min(best, begin.elapsed_time(end) / 1e3)
    return 2 * source.numel() * 4 / best / 1e9


def host(memory: GpuMemory) -> dict:
    """This host, its GPU and the versions of what the stages run on."""
    import torch
    import transformers
    try:
        import onnxruntime_genai as og
        genai = {"onnxruntime_genai": og.__version__, "genai_cuda_provider": og.is_cuda_available()}
    except ImportError as error:
        genai = {"onnxruntime_genai": None, "genai_cuda_provider": False, "genai_error": str(error)}
    facts = {**machine.facts(), **memory.facts(), "torch": torch.__version__,
             "torch_cuda": torch.version.cuda, "torch_sees_cuda": torch.cuda.is_available(),
             "transformers": transformers.__version__, **genai,
             "measured": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    bandwidth = copy_bandwidth_gb_s()
    return {**facts, **({"gpu_copy_bandwidth_gb_s": round(bandwidth, 1)} if bandwidth else {})}


def stage(name: str, command: list, work: Path, memory: GpuMemory) -> dict:
    """Run one stage's command, its output in work/logs/; its figures, kept in work/stages/ once it succeeds."""
    slug = name.replace("/", "--")
    record = work / "stages" / f"{slug}.json"
    if record.exists():
        return {**json.loads(record.read_text()), "reused": True}
    (work / "logs").mkdir(parents=True, exist_ok=True)
    log_path = work / "logs" / f"{slug}.log"
    print(f"{name}: {' '.join(map(str, command))}", flush=True)
    with log_path.open("w") as log:
        started = time.perf_counter()
        process = subprocess.Popen([str(c) for c in command], stdout=log, stderr=subprocess.STDOUT)
        peak = memory.peak_during(process)
        _, status, usage = os.wait4(process.pid, 0)
    figures = {"command": " ".join(map(str, command)), "wall_s": round(time.perf_counter() - started, 2),
               "cpu_s": round(usage.ru_utime + usage.ru_stime, 2), "max_rss_mb": round(usage.ru_maxrss / 1024, 1),
               "gpu_peak_mb": round(peak[0], 1) if peak[0] is not None else None}
    if os.waitstatus_to_exitcode(status):
        lines = [line for line in log_path.read_text(errors="replace").splitlines() if line.strip()]
        return {**figures, "error": lines[-1] if lines else f"exit status {os.waitstatus_to_exitcode(status)}"}
    record.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(record) as tmp:
        tmp.write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def run(recipe_name: str, work: Path, layers: int | None, profile: str, through: str,
        only: list[str] | None = None) -> dict:
    recipe = recipes.load_supported(recipe_name)
    python, memory = sys.executable, GpuMemory()
    facts = host(memory)
    on_cuda = facts["torch_sees_cuda"]
    folder, reference = work / "checkpoint", work / "reference"
    artifacts = [spec for spec in recipes.artifacts(recipe) if spec["device"] == DEVICE
                 and (not only or f"{spec['target']}/{spec['name']}" in only)]
    stages, not_run = {}, []
    stages["fixture"] = stage("fixture", [python, "-m", "pipeline.fixtures", "--recipe", recipe_name, "--out", folder,
                                          *(["--layers", layers] if layers else [])], work, memory)
    if "error" not in stages["fixture"]:
        stages["reference"] = stage("reference", [python, "-m", "pipeline.reference", "--checkpoint", folder, "--out",
                                                  reference, "--recipe", recipe_name, "--profile", profile,
                                                  "--device", DEVICE if on_cuda else "cpu"], work, memory)
    if not on_cuda:
        not_run.append(f"the reference on CUDA: torch {facts['torch']} sees no CUDA device (it ran on the CPU)")
    if not facts["genai_cuda_provider"]:
        not_run.append(f"the CUDA provider: onnxruntime-genai {facts['onnxruntime_genai']} has none here "
                       "(onnxruntime-genai-cuda not installed): the cuda artifacts ran on the CPU provider")
    validations = {}
    referenced = "reference" in stages and "error" not in stages["reference"]
    for spec in artifacts if through == "validate" and referenced else []:
        name = f"{spec['target']}/{spec['name']}"
        out = work / spec["target"] / spec["name"]
        base = spec["options"].get("base")
        stages[name] = stage(name, [python, "-m", "pipeline.build", "--target", spec["target"], "--artifact",
                                    spec["name"], "--recipe", recipe_name, "--checkpoint", folder, "--out", out,
                                    *(["--base", work / spec["target"] / base] if base else [])], work, memory)
        if "error" in stages[name]:
            continue
        result = out.parent / f"{out.name}.validation.json"
        stages[f"validate/{name}"] = stage(f"validate/{name}", [
            python, "-m", "pipeline.validate", "--target", spec["target"], "--artifact", spec["name"], "--recipe",
            recipe_name, "--folder", out, "--checkpoint", folder, "--reference", reference, "--out", result],
            work, memory)
        if result.exists():
            record = json.loads(result.read_text())
            bandwidth = facts.get("gpu_copy_bandwidth_gb_s")
            validations[name] = {key: record.get(key) for key in ("status", "reason", "device", "not_run", "size_bytes",
                                                                  "tokens_per_s", "decode_tokens_per_s")}
            if bandwidth and record.get("size_bytes"):
                validations[name]["bound_tokens_per_s"] = machine.decode_bound(bandwidth, record["size_bytes"])
    shards = checkpoint.weight_files(folder) if folder.exists() else []
    with ThreadPoolExecutor(len(shards) or 1) as pool:
        hashes = dict(zip((p.name for p in shards), pool.map(sha256, shards)))
    return {"recipe": recipe_name, "layers": layers, "profile": profile, "through": through,
            "artifacts": [f"{spec['target']}/{spec['name']}" for spec in artifacts], "host": facts,
            "checkpoint": {"weights_bytes": sum(p.stat().st_size for p in shards), "sha256": hashes},
            "stages": stages, "validations": validations, "not_run": not_run}


def compare(reference: Path, against: Path) -> dict:
    """Two references of one checkpoint side by side, prompt by prompt."""
    records = [json.loads((folder / "reference.json").read_text()) for folder in (reference, against)]
    tensors = [load_file(str(folder / "logits.safetensors")) for folder in (reference, against)]
    prompts = []
    for prompt, other in zip(records[0]["prompts"], records[1]["prompts"]):
        name = prompt["name"]
        same_ids = prompt["prompt_ids"] == other["prompt_ids"] and prompt.get("generated_ids") == other.get(
            "generated_ids")
        top = [t[f"{name}.topk_ids"][:, 0] for t in tensors]
        length = min(len(top[0]), len(top[1]))
        prompts.append({
            "name": name, "same_tokens": same_ids,
            "top1_agreement": float((top[0][:length] == top[1][:length]).mean()),
            "max_abs_top_logit": float(np.abs(tensors[0][f"{name}.topk_logits"][:length, 0]
                                              - tensors[1][f"{name}.topk_logits"][:length, 0]).max()),
            "max_abs_logsumexp": float(np.abs(tensors[0][f"{name}.logsumexp"][:length]
                                              - tensors[1][f"{name}.logsumexp"][:length]).max())})
    return {"reference": {"runtime": records[0]["runtime"], "against": records[1]["runtime"]},
            "prompts": len(prompts), "same_tokens": sum(p["same_tokens"] for p in prompts),
            "min_top1_agreement": min(p["top1_agreement"] for p in prompts),
            "max_abs_top_logit": max(p["max_abs_top_logit"] for p in prompts),
            "max_abs_logsumexp": max(p["max_abs_logsumexp"] for p in prompts), "by_prompt": prompts}


def print_table(result: dict):
    host = result["host"]
    print(f"{host.get('gpu', 'no GPU')}, {host['cpu']} ({host['cores']} cores); torch {host['torch']} "
          f"(CUDA {host['torch_cuda']}), onnxruntime-genai {host['onnxruntime_genai']} (CUDA provider: "
          f"{host['genai_cuda_provider']}); copy bandwidth {host.get('gpu_copy_bandwidth_gb_s')} GB/s")
    print(f"{'stage':46} {'wall s':>8} {'cpu s':>8} {'host GiB':>9} {'GPU GiB':>8}")
    for name, figures in result["stages"].items():
        gpu = figures["gpu_peak_mb"]
        print(f"{name:46} {figures['wall_s']:8.1f} {figures['cpu_s']:8.1f} {figures['max_rss_mb'] / 1024:9.2f} "
              f"{gpu / 1024 if gpu is not None else float('nan'):8.2f}"
              + (f"  failed: {figures['error']}" if "error" in figures else "")
              + ("  (an earlier run's)" if figures.get("reused") else ""))
    for name, record in result["validations"].items():
        bound = record.get("bound_tokens_per_s")
        print(f"{name}: {record['status']}, decode {record['decode_tokens_per_s'] or 0:.1f} tokens/s"
              + (f" (bound {bound:.0f})" if bound else "") + f"; not run: {record['not_run'] or 'nothing'}")
    for line in result["not_run"]:
        print(f"not run: {line}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="the stages, on this host's GPU")
    run_parser.add_argument("--recipe", required=True, help="a fixture recipe, e.g. scale-phi-3-mini-4k")
    run_parser.add_argument("--work", required=True, type=Path, help="the stages' folder (gigabytes at full size)")
    run_parser.add_argument("--out", required=True, type=Path, help="the figures, as JSON")
    run_parser.add_argument("--layers", type=int, help="the checkpoint's depth (default: the recipe's)")
    run_parser.add_argument("--profile", default="ci", help="the validation profile (pipeline/prompts.py)")
    run_parser.add_argument("--through", choices=THROUGH, default="validate")
    run_parser.add_argument("--artifacts", nargs="+", help="only these, e.g. onnx/cuda/cuda-fp16 (default: every "
                                                            "artifact of the recipe made for cuda)")
    compare_parser = commands.add_parser("compare", help="two references of one checkpoint side by side")
    compare_parser.add_argument("--reference", required=True, type=Path)
    compare_parser.add_argument("--against", required=True, type=Path)
    compare_parser.add_argument("--into", required=True, type=Path, help="a run's JSON, to add the comparison to")
    args = parser.parse_args(argv)
    if args.command == "run":
        result = run(args.recipe, args.work, args.layers, args.profile, args.through, args.artifacts)
        with atomic_file(args.out) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
        print_table(result)
    else:
        result = json.loads(args.into.read_text())
        result["reference_comparison"] = compare(args.reference, args.against)
        with atomic_file(args.into) as tmp:
            tmp.write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: v for k, v in result["reference_comparison"].items() if k != "by_prompt"}))


if __name__ == "__main__":
    run_cli(main)
