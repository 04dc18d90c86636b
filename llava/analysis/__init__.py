"""Roofline cost model of LLaVA-1.5 with and without PruMerge visual-token reduction.

``python -m llava.analysis --help`` describes the command line; :func:`estimate` is the library entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

from llava.analysis.cost import CONVENTIONS, run_layers, run_stack, tera
from llava.analysis.roofline import (
    CLIP_TOKENS,
    CLIP_VIT_L_336,
    DEVICES,
    GIGA,
    LLM_PRESETS,
    PRECISIONS,
    REDUCTION_TOKENS,
    Device,
    TransformerSpec,
    parse_device,
    resolve_llm,
    spec_from_config,
)
from llava.analysis.schedule import (
    fastv_schedule,
    format_schedule,
    mean_tokens,
    parse_fastv,
    parse_schedule,
    video_tokens,
)

__all__ = [
    "CONVENTIONS",
    "DEVICES",
    "LLM_PRESETS",
    "PRECISIONS",
    "REDUCTION_TOKENS",
    "Device",
    "Estimate",
    "TransformerSpec",
    "estimate",
    "fastv_schedule",
    "format_schedule",
    "mean_tokens",
    "parse_device",
    "parse_fastv",
    "parse_schedule",
    "video_tokens",
    "resolve_llm",
    "spec_from_config",
]


@dataclass
class Estimate:
    """Roofline figures of one configuration (LLM only unless a name says ``clip``).

    ``visual_tokens`` are those spliced into the prompt (the first layer's); ``mean_visual_tokens`` is N̄,
    their mean over the layers (equal to ``visual_tokens`` without a ``schedule``); ``schedule`` is the
    per-layer counts in compact form (``576x4,106x10,81x10,19x8``), or None when every layer runs on all.
    """

    llm: str
    device: str
    precision: str
    reduction: str
    visual_tokens: int
    mean_visual_tokens: float
    schedule: str | None
    text_tokens: int
    batch: int
    convention: str
    flops_tera: float
    flops_fp16_equiv_tera: float
    memory_traffic_gb: float
    prefill_ms: float
    prefill_compute_ms: float
    prefill_memory_ms: float
    weight_memory_gb: float
    kv_cache_gb: float
    activation_memory_gb: float
    total_memory_gb: float
    decode_ms_per_token: float
    decode_compute_ms: float
    decode_memory_ms: float
    clip_flops_tera: float
    clip_ms: float

    def as_dict(self) -> dict:
        """Plain dict (for JSON)."""
        return asdict(self)


def estimate(
    llm: TransformerSpec,
    device: Device,
    precision: str = "fp16",
    visual_tokens: int = 576,
    text_tokens: int = 40,
    batch: int = 1,
    reduction: str = "custom",
    convention: str = "exact",
    schedule: Sequence[int] | None = None,
    clip_images: int = 1,
    clip_tokens: int = CLIP_TOKENS,
) -> Estimate:
    """Prefill (all prompt tokens) and one decode step (at the prompt's context length).

    ``convention`` is ``exact`` or ``llm-viewer`` (see :data:`llava.analysis.cost.CONVENTIONS`).
    ``schedule``: the visual tokens of each decoder layer (in-LLM pruning); each layer is costed on its own
    prompt (its visual tokens + the text) and caches that many keys and values; ``visual_tokens`` is then
    ``schedule[0]``. ``clip_images`` x ``clip_tokens``: the tower's input per sample (a video's frames).

    Raises:
        ValueError: ``schedule`` does not have one count per layer of ``llm``.
    """
    bits = PRECISIONS[precision]
    counts = [visual_tokens] * llm.layers if schedule is None else list(schedule)
    pre = run_layers(
        llm, batch, [(n + text_tokens, n + text_tokens) for n in counts], bits, device, convention
    )
    dec = run_layers(llm, batch, [(1, n + text_tokens + 1) for n in counts], bits, device, convention)
    clip = run_stack(CLIP_VIT_L_336, batch * clip_images, clip_tokens, clip_tokens, (16, 16, 16), device)
    return Estimate(
        llm=llm.name,
        device=device.name,
        precision=precision,
        reduction=reduction,
        visual_tokens=counts[0],
        mean_visual_tokens=mean_tokens(counts),
        schedule=None if schedule is None else format_schedule(counts),
        text_tokens=text_tokens,
        batch=batch,
        convention=convention,
        flops_tera=tera(pre.ops),
        flops_fp16_equiv_tera=tera(pre.ops) * max(bits[0], bits[1]) / 16,
        memory_traffic_gb=pre.traffic / GIGA,
        prefill_ms=pre.seconds * 1e3,
        prefill_compute_ms=pre.compute_seconds * 1e3,
        prefill_memory_ms=pre.memory_seconds * 1e3,
        weight_memory_gb=pre.weight_bytes / GIGA,
        kv_cache_gb=pre.kv_out / GIGA,
        activation_memory_gb=pre.act_out / GIGA,
        total_memory_gb=(pre.weight_bytes + pre.kv_out + pre.act_out) / GIGA,
        decode_ms_per_token=dec.seconds * 1e3,
        decode_compute_ms=dec.compute_seconds * 1e3,
        decode_memory_ms=dec.memory_seconds * 1e3,
        clip_flops_tera=tera(clip.ops),
        clip_ms=clip.seconds * 1e3,
    )
