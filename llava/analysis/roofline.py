"""Analytical roofline model of LLaVA-1.5 prefill and decode cost.

The counting conventions follow LLM-Viewer (Yuan et al. 2024, "LLM Inference Unveiled: Survey and
Roofline Model Insights"), which PruMerge's Table 2 cites: every operator of a decoder layer gets an
operation count and a memory-traffic count (weights read, activations read/written, KV cache
read/written); its time is ``max(ops / peak, bytes / bandwidth)`` and the network time is the sum
over operators.  All assumptions are listed in ``docs/Efficiency.md``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

GIGA = 1e9
TERA = 1e12

#: Visual-token presets: ``none`` keeps CLIP's 24x24 grid, ``prumerge`` the paper's 5.5 % average
#: (32 tokens), ``prumerge_plus`` the paper's 25 % (144 tokens).
REDUCTION_TOKENS: dict[str, int] = {"none": 576, "prumerge": 32, "prumerge_plus": 144}

#: Precisions as (weight bits, activation bits, KV-cache bits).
PRECISIONS: dict[str, tuple[int, int, int]] = {
    "fp16": (16, 16, 16),
    "int8": (8, 8, 8),
    "int4": (4, 4, 4),
    "w8a16": (8, 16, 16),
    "w4a16": (4, 16, 16),
}


@dataclass(frozen=True)
class TransformerSpec:
    """Shape of a pre-norm transformer stack (decoder LLM or ViT encoder)."""

    name: str
    layers: int
    hidden: int
    intermediate: int
    heads: int
    kv_heads: int
    vocab: int = 0
    gated_mlp: bool = True

    @property
    def head_dim(self) -> int:
        """Per-head width."""
        return self.hidden // self.heads

    @property
    def kv_width(self) -> int:
        """Width of the K (or V) projection output."""
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> dict[str, tuple[int, int]]:
        """``(in, out)`` of every matrix multiply with weights in one layer."""
        shapes = {
            "q_proj": (self.hidden, self.hidden),
            "k_proj": (self.hidden, self.kv_width),
            "v_proj": (self.hidden, self.kv_width),
            "o_proj": (self.hidden, self.hidden),
            "up_proj": (self.hidden, self.intermediate),
            "down_proj": (self.intermediate, self.hidden),
        }
        if self.gated_mlp:
            shapes["gate_proj"] = (self.hidden, self.intermediate)
        return shapes

    def layer_params(self) -> int:
        """Weights of the linear layers of one block (norm weights and biases are ignored)."""
        return sum(i * o for i, o in self.linear_shapes().values())

    def weight_params(self) -> int:
        """Weights of the whole stack: all blocks plus the embedding and LM head when ``vocab`` > 0."""
        return self.layers * self.layer_params() + 2 * self.vocab * self.hidden


LLM_PRESETS: dict[str, TransformerSpec] = {
    "vicuna-7b": TransformerSpec("vicuna-7b", 32, 4096, 11008, 32, 32, 32000),
    "vicuna-13b": TransformerSpec("vicuna-13b", 40, 5120, 13824, 40, 40, 32000),
}
LLM_PRESETS["llama-2-7b"] = LLM_PRESETS["vicuna-7b"]
LLM_PRESETS["llama-2-13b"] = LLM_PRESETS["vicuna-13b"]

#: CLIP ViT-L/14 at 336 px: 24 layers, width 1024, MLP 4096 (GELU, ungated), 16 heads.
CLIP_VIT_L_336 = TransformerSpec("clip-vit-l-14-336", 24, 1024, 4096, 16, 16, 0, gated_mlp=False)
CLIP_TOKENS = 577  # 24 x 24 patches + CLS


@dataclass(frozen=True)
class Device:
    """Peak dense throughput (TFLOP/s or TOP/s) and memory bandwidth (GB/s) of an accelerator."""

    name: str
    fp16_tflops: float
    int8_tops: float
    bandwidth_gbps: float

    def peak(self, w_bits: int, a_bits: int) -> float:
        """Peak op/s: integer tensor cores when weights and activations are both <= 8 bit."""
        if w_bits <= 8 and a_bits <= 8:
            return self.int8_tops * TERA
        return self.fp16_tflops * TERA


#: V100 numbers are the ones LLM-Viewer uses (112 TFLOP/s FP16 tensor, 62 TOP/s INT8, 900 GB/s);
#: the others are NVIDIA's dense (non-sparse) SXM data-sheet figures.
DEVICES: dict[str, Device] = {
    "v100": Device("v100", 112.0, 62.0, 900.0),
    "a100": Device("a100", 312.0, 624.0, 2039.0),
    "h100": Device("h100", 989.0, 1979.0, 3350.0),
    "h200": Device("h200", 989.0, 1979.0, 4800.0),
}


def parse_device(text: str) -> Device:
    """A device from a table name, ``NAME:TFLOPS:GBPS[:INT8_TOPS]``, or a JSON file path.

    The JSON file holds ``{"name":..., "fp16_tflops":..., "bandwidth_gbps":..., "int8_tops":...}``.
    """
    if text.lower() in DEVICES:
        return DEVICES[text.lower()]
    path = Path(text)
    if text.endswith(".json") and path.is_file():
        data = json.loads(path.read_text())
        fp16 = float(data["fp16_tflops"])
        return Device(
            data.get("name", path.stem),
            fp16,
            float(data.get("int8_tops", fp16)),
            float(data["bandwidth_gbps"]),
        )
    parts = text.split(":")
    if len(parts) not in (3, 4):
        raise ValueError(
            f"unknown device {text!r}: use one of {sorted(DEVICES)}, NAME:TFLOPS:GBPS[:INT8_TOPS] or a .json file"
        )
    fp16 = float(parts[1])
    int8 = float(parts[3]) if len(parts) == 4 else fp16
    return Device(parts[0], fp16, int8, float(parts[2]))


def spec_from_config(config: Any, name: str = "custom") -> TransformerSpec:
    """A spec from a transformers ``LlamaConfig``-like object, a dict, or a ``config.json`` path."""
    if isinstance(config, str | Path):
        path = Path(config)
        config = json.loads((path / "config.json" if path.is_dir() else path).read_text())
    get = config.get if isinstance(config, dict) else lambda key, default=None: getattr(config, key, default)
    if get("text_config") is not None:  # a LLaVA config wraps the LLM config
        return spec_from_config(get("text_config"), name)
    heads = int(get("num_attention_heads"))
    return TransformerSpec(
        name=name,
        layers=int(get("num_hidden_layers")),
        hidden=int(get("hidden_size")),
        intermediate=int(get("intermediate_size")),
        heads=heads,
        kv_heads=int(get("num_key_value_heads") or heads),
        vocab=int(get("vocab_size") or 0),
    )


def resolve_llm(text: str) -> TransformerSpec:
    """An LLM spec from a preset name or a config path."""
    if text.lower() in LLM_PRESETS:
        return LLM_PRESETS[text.lower()]
    if Path(text).exists():
        return spec_from_config(text, Path(text).stem if Path(text).is_file() else Path(text).name)
    raise ValueError(f"unknown LLM {text!r}: use one of {sorted(LLM_PRESETS)} or a config.json path")
