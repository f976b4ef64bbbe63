"""One row per architecture, as the hub's config.json names it: everything phi-forge knows of it, as data.

A row says which tensors of a checkpoint its config fixes the shape of (names as the hub writes them, shapes in
the sizes `dims` reads off the config), whether it routes to experts, which fault of the reference's runtime needs
fixing for it, and which targets cannot make it and why. Light (no torch): the workflow imports it.
"""
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Architecture:
    model_type: str  # transformers' model_type
    tensors: dict[str, tuple[str, ...]]  # tensor name ({last}: the last layer) -> its shape, in dims() names
    experts: bool = False  # a mixture of experts
    reference_rotary_fix: str | None = None  # pipeline.reference.ROTARY_FIXES entry for its longrope
    unsupported: dict[str, str] = field(default_factory=dict)  # target -> why that target does not make it


# Tensors every Phi checkpoint has.
COMMON_TENSORS = {"model.embed_tokens.weight": ("vocab", "hidden"),
                  "model.layers.{last}.input_layernorm.weight": ("hidden",)}

ARCHITECTURES = {
    "Phi3ForCausalLM": Architecture(
        model_type="phi3",
        tensors={"model.layers.{last}.self_attn.qkv_proj.weight": ("qkv", "hidden"),
                 "model.layers.{last}.mlp.down_proj.weight": ("hidden", "intermediate")}),
    "PhiMoEForCausalLM": Architecture(
        model_type="phimoe",
        tensors={"model.layers.{last}.self_attn.k_proj.weight": ("kv", "hidden")},
        experts=True,
        # transformers 5.24's PhiMoE rotary embedding keeps short_factor past the original context
        reference_rotary_fix="longrope_by_sequence_length",
        unsupported={"onnx": "the genai 0.18 builder makes PhiMoE only as a CUDA int4 graph (onnxruntime's MoE op "
                             "is CUDA-only) and then stops with \"NotImplementedError: The longrope RoPE style is not "
                             "currently supported\""}),
}

# Architectures of the family phi-forge refuses, and why.
REFUSED = {
    "Phi3SmallForCausalLM": "Phi-3-small needs remote code and a tiktoken tokenizer (trust_remote_code)",
    "Phi3VForCausalLM": "Phi-3.5-vision is multimodal and needs remote code",
}


def dims(config: dict) -> dict[str, int]:
    """The sizes a config fixes, by the names the rows' tensor shapes use."""
    hidden, heads = config["hidden_size"], config["num_attention_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    kv_heads = config.get("num_key_value_heads") or heads
    return {"vocab": config["vocab_size"], "hidden": hidden, "intermediate": config["intermediate_size"],
            "kv": kv_heads * head_dim, "qkv": (heads + 2 * kv_heads) * head_dim}


def expected_shapes(architecture: str, config: dict) -> dict[str, list[int]]:
    """Shapes the config implies for the tensors the architecture's row names, in the hub's tensor names."""
    sizes, last = dims(config), config["num_hidden_layers"] - 1
    tensors = {**COMMON_TENSORS, **ARCHITECTURES[architecture].tensors}
    return {name.format(last=last): [sizes[d] for d in shape] for name, shape in tensors.items()}
