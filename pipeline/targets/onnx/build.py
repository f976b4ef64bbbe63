"""ONNX for onnxruntime-genai: the genai model builder, plus onnxruntime's own weight-only quantizers on the builder's
float graph where the builder's int4 would hold too much (RTN, k_quant) or cannot quantize (HQQ).

The artifact's device and options come from recipes/targets.yaml. Options the builder would silently ignore, or
combinations it turns into broken graphs, are refused before anything is built. The artifact ships the
checkpoint's own tokenizer files, declares the checkpoint's end tokens in genai_config.json, and attends within
the checkpoint's sliding window (the builder leaves Phi-3's attention unwindowed).
"""
import contextlib
import json
import shutil
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

from pipeline.recipes import RecipeError

EXECUTION_PROVIDERS = {"cpu": "cpu", "cuda": "cuda", "dml": "dml"}
# Option -> the values the builder (or the HQQ quantizer) accepts; passed to --extra_options as key=value.
BUILDER_OPTIONS = {
    "block_size": {16, 32, 64, 128, 256},
    "accuracy_level": {0, 1, 2, 3, 4},
    "algo_config": {"default", "rtn", "k_quant", "rtn_last", "k_quant_last", "k_quant_mixed"},
    "is_symmetric": {True, False},
}
OUR_OPTIONS = {"precision": {"int4", "fp16", "fp32"}, "quantizer": {"builder", "hqq"}}
KNOWN_OPTIONS = {**BUILDER_OPTIONS, **OUR_OPTIONS}
# (device, builder precision) pairs the builder accepts but writes broken graphs for.
INVALID = {
    ("cuda", "fp32"): "the builder writes an invalid graph for it (Graph output (present.0.key) does not exist)",
    ("dml", "fp32"): "the builder writes an invalid graph for it (Graph output (present.0.key) does not exist)",
}
# int4 methods quantized from the builder's float graph by onnxruntime's rtn_quantize, the function the builder itself
# calls, with the builder's node configs: handed a graph whose weights stay on disk it reads one weight at a time and
# drops it once quantized, where the builder quantizes its whole graph in memory beside the checkpoint (3x the bf16
# weights at Phi-3-mini's shape). With tied embeddings the embedding is then gathered from the lm_head's int4 blocks,
# as the builder's int4 does. Same bytes as the builder's int4 on every fixture.
BY_TENSOR = {"rtn": "RTN", "k_quant": "k_quant"}
BUILDER_DEFAULTS = {"block_size": 32, "accuracy_level": 0, "is_symmetric": True}  # the builder's QuantConfig
FLOAT_GRAPH = {"cpu": "fp32", "cuda": "fp16", "dml": "fp16"}  # the builder's io precision of an int4 graph
K_QUANT_ROWS = 4096  # rows of a weight k_quant computes at once (k_quant_by_rows): about 0.5 GB at Phi's widths
EMBEDDING = "/model/embed_tokens"  # the builder's name of the embedding lookup, which it ties to the lm_head
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "special_tokens_map.json",
                   "added_tokens.json")


def check_options(device: str, options: dict):
    """Refuse, with the reason, what the builder would ignore silently or build into a broken graph."""
    for key, value in options.items():
        if key.startswith("int4_"):
            raise RecipeError(f"onnx option '{key}': the builder silently ignores int4_-prefixed options; "
                              f"write '{key[len('int4_'):]}'")
        allowed = KNOWN_OPTIONS.get(key)
        if allowed is None:
            raise RecipeError(f"onnx option '{key}' is unknown; known: {', '.join(sorted(KNOWN_OPTIONS))}")
        if value not in allowed:
            raise RecipeError(f"onnx option {key}={value!r} is not one of {sorted(allowed, key=str)}")
    if "precision" not in options:
        raise RecipeError(f"onnx options need a precision, one of {sorted(OUR_OPTIONS['precision'])}")
    if device not in EXECUTION_PROVIDERS:
        raise RecipeError(f"onnx device '{device}' is not one of {sorted(EXECUTION_PROVIDERS)}")
    invalid = INVALID.get((device, options["precision"]))
    if invalid:
        raise RecipeError(f"onnx {device} {options['precision']}: {invalid}")
    if options.get("quantizer") == "hqq" and (options["precision"] != "fp32" or device != "cpu"):
        raise RecipeError("onnx quantizer hqq quantizes the builder's cpu fp32 graph: set precision fp32, device cpu")
    if options.get("quantizer") == "hqq" and set(options) & {"algo_config", "is_symmetric", "accuracy_level"}:
        raise RecipeError("onnx quantizer hqq takes only block_size (onnxruntime's HQQ quantizer writes no "
                          "accuracy_level and is always asymmetric)")


def builder_command(python: str, source: Path, out: Path, cache: Path, device: str, options: dict) -> list[str]:
    extra = [f"{key}={str(value).lower() if isinstance(value, bool) else value}"
             for key, value in options.items() if key in BUILDER_OPTIONS and options.get("quantizer") != "hqq"]
    return [python, "-m", "onnxruntime_genai.models.builder", "-i", str(source), "-o", str(out),
            "-p", options["precision"], "-e", EXECUTION_PROVIDERS[device], "-c", str(cache),
            *(["--extra_options", *extra] if extra else [])]


def by_tensor(options: dict, facts: dict) -> bool:
    """Whether to quantize a weight at a time; not for tied embeddings whose rows do not fill whole blocks (the
    builder slices such a lookup's padding off, which share_quantized_embedding does not)."""
    block_size = options.get("block_size", BUILDER_DEFAULTS["block_size"])
    return (options["precision"] == "int4" and options.get("algo_config") in BY_TENSOR
            and not (facts["tied_embeddings"] and facts["hidden_size"] % block_size))


def quantize_by_tensor(folder: Path, options: dict):
    """Replace the float MatMuls of folder/model.onnx with int4 MatMulNBits as the builder's int4 would, in place,
    one weight in memory at a time."""
    import onnx
    from onnxruntime.quantization.neural_compressor import rtn_quantize, weight_only

    if not isinstance(weight_only.quant_tensor_k_quant_cpu, partial):  # rtn_quantize calls it by this name
        weight_only.quant_tensor_k_quant_cpu = partial(k_quant_by_rows, weight_only.quant_tensor_k_quant_cpu)
    settings = {**BUILDER_DEFAULTS, **options}
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    config = {node.name: {"bits": 4, "group_size": settings["block_size"],
                          "scheme": "sym" if settings["is_symmetric"] else "asym"}
              for node in model.graph.node if node.op_type == "MatMul"}
    with contextlib.chdir(folder):  # the quantizers read a graph's external data relative to the working directory
        model = rtn_quantize(model, weight_config=config, accuracy_level=settings["accuracy_level"],
                             algorithm=BY_TENSOR[settings["algo_config"]]).model
    if f"{EMBEDDING}/Transpose" in {node.name for node in model.graph.node}:
        share_quantized_embedding(model, settings["block_size"])
    replace_graph(folder, model)


def k_quant_by_rows(k_quant, weight, num_bits: int, group_size: int):
    """onnxruntime's k_quant of a (transposed) weight, K_QUANT_ROWS rows at a time. Upstream computes a whole weight
    at once in about eight temporaries of its size in float32 and float64: 23 GB for Phi-4-mini's 200064-row lm_head.
    Its blocks are independent, so slices of rows give the same bytes. The quantized values are whole numbers held
    in float64, which rtn_quantize casts to uint8: kept as uint8 here, 1/8 of the memory."""
    import numpy as np

    blocks_per_row = weight.shape[1] // group_size
    quantized = np.empty((weight.shape[0] * blocks_per_row, group_size), np.uint8)
    scales = np.empty((len(quantized), 1), np.float64)
    zero_points = np.empty((len(quantized), 1), np.uint8)
    for start in range(0, weight.shape[0], K_QUANT_ROWS):
        rows = slice(start * blocks_per_row, min(start + K_QUANT_ROWS, weight.shape[0]) * blocks_per_row)
        quantized[rows], scales[rows], zero_points[rows] = k_quant(weight[start:start + K_QUANT_ROWS], num_bits,
                                                                   group_size)
    return quantized, scales, zero_points


def share_quantized_embedding(model, block_size: int):
    """With tied embeddings the float graph gathers the embedding from the transposed float lm_head weight. Once
    the lm_head is int4, gather from its int4 blocks (GatherBlockQuantized) and keep no float copy, as the builder's
    int4 does, with its node names."""
    import numpy as np
    from onnx import helper, numpy_helper

    graph = model.graph
    nodes = {node.name: node for node in graph.node}
    transpose, gather = nodes[f"{EMBEDDING}/Transpose"], nodes[f"{EMBEDDING}/Gather"]
    lm_head = next(node for node in graph.node
                   if node.op_type == "MatMulNBits" and node.input[1].startswith(f"{transpose.input[0]}_Q"))
    blocks = next(tensor for tensor in graph.initializer if tensor.name == lm_head.input[1])
    shape = [blocks.dims[0], blocks.dims[1] * blocks.dims[2]]  # one row of packed int4 per token
    shape_name = f"/model/constants/INT64/{shape}"
    rows, looked_up = f"{EMBEDDING}/Reshape/output_0", f"{EMBEDDING}/GatherBlockQuantized/output_0"
    lookup = [
        helper.make_node("Constant", [], [shape_name], name=f"/model/constant_nodes/INT64/{shape}",
                         value=numpy_helper.from_array(np.array(shape, np.int64), shape_name)),
        helper.make_node("Reshape", [blocks.name, shape_name], [rows], name=f"{EMBEDDING}/Reshape"),
        helper.make_node("GatherBlockQuantized", [rows, gather.input[1], *lm_head.input[2:]], [looked_up],
                         name=f"{EMBEDDING}/GatherBlockQuantized", domain="com.microsoft", bits=4,
                         block_size=block_size, gather_axis=0, quantize_axis=1),
    ]
    kept = [node for node in graph.node if node not in (transpose, gather)]
    for node in kept:
        node.input[:] = [looked_up if name == gather.output[0] else name for name in node.input]
    at = list(graph.node).index(transpose)
    graph.ClearField("node")
    graph.node.extend(kept[:at] + lookup + kept[at:])
    float_weight = next(tensor for tensor in graph.initializer if tensor.name == transpose.input[0])
    graph.initializer.remove(float_weight)


def quantize_hqq(folder: Path, options: dict):
    """Replace the fp32 MatMuls of folder/model.onnx with HQQ-quantized int4 MatMulNBits, in place, one weight in
    memory at a time."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import HQQWeightOnlyQuantConfig, MatMulNBitsQuantizer

    block_size = options.get("block_size", 32)
    model = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    with contextlib.chdir(folder):
        quantizer = MatMulNBitsQuantizer(model, block_size=block_size,
                                         algo_config=HQQWeightOnlyQuantConfig(block_size=block_size, bits=4))
        quantizer.process()
    replace_graph(folder, quantizer.model.model)


def replace_graph(folder: Path, model):
    """Write a quantized graph over folder/model.onnx and its data, every tensor external as the builder writes
    them, after reading from the old data what the graph keeps of it (embeddings, norms)."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    load_external_data_for_model(model, str(folder))
    (folder / "model.onnx").unlink()
    (folder / "model.onnx.data").unlink()
    onnx.save_model(model, str(folder / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="model.onnx.data", size_threshold=0)


def attention_window(facts: dict) -> int:
    """GroupQueryAttention's local_window_size for this checkpoint: its sliding window, -1 for none."""
    window = facts.get("sliding_window")
    return window if window and window < facts["context_length"] else -1


def apply_sliding_window(folder: Path, facts: dict):
    """The builder leaves local_window_size at -1 for Phi-3 (full attention) although the checkpoint has a
    sliding window: set it, as the builder itself does for Mistral. Without it, positions past the window differ
    from the reference, and genai's shared KV buffer (window + 16 tokens) cannot take a longer prompt."""
    import onnx

    window = attention_window(facts)
    graph = onnx.load(str(folder / "model.onnx"), load_external_data=False)
    for node in graph.graph.node:
        for attribute in node.attribute:
            if node.op_type == "GroupQueryAttention" and attribute.name == "local_window_size":
                attribute.i = window
    onnx.save(graph, str(folder / "model.onnx"))


def ship_checkpoint_tokenizer(source: Path, out: Path, facts: dict):
    """The checkpoint's own tokenizer files (the builder re-saves them through transformers 5), its chat template
    and end tokens (recipe overrides applied) declared where genai reads them."""
    for name in TOKENIZER_FILES:
        (out / name).unlink(missing_ok=True)
        if (source / name).exists():
            shutil.copy2(source / name, out / name)
    (out / "chat_template.jinja").unlink(missing_ok=True)
    tokenizer_config = json.loads((out / "tokenizer_config.json").read_text())
    if tokenizer_config.get("chat_template") != facts["chat_template"]:
        tokenizer_config["chat_template"] = facts["chat_template"]
        (out / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2, ensure_ascii=False))
    config_file = out / "genai_config.json"
    config = json.loads(config_file.read_text())
    config["model"]["eos_token_id"] = facts["stop_token_ids"]
    config_file.write_text(json.dumps(config, indent=4) + "\n")


def build(checkpoint: Path, spec: dict, facts: dict, out: Path, base: Path | None = None, threads: int = 1):
    options = spec["options"]
    check_options(spec["device"], options)
    tensor_at_a_time = by_tensor(options, facts)
    graph_options = {"precision": FLOAT_GRAPH[spec["device"]]} if tensor_at_a_time else options
    with tempfile.TemporaryDirectory() as cache:
        command = builder_command(sys.executable, checkpoint, out, Path(cache), spec["device"], graph_options)
        print(" ".join(command), flush=True)
        subprocess.run(command, check=True)
    if tensor_at_a_time:
        quantize_by_tensor(out, options)
    if options.get("quantizer") == "hqq":
        quantize_hqq(out, options)
    apply_sliding_window(out, facts)
    ship_checkpoint_tokenizer(checkpoint, out, facts)
