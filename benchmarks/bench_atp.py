"""Overhead of ATP-LLaVA's pruning modules, and prefill time against none / FastV / PruMerge at equal N̄.

The model is an in-memory ``LlavaLlamaForCausalLM`` with **random weights** (no files are read), its
Llama set by ``--preset``:

* ``small`` (default on a CPU): 32 layers of width 256, 4 heads of width 64 (as Vicuna's), MLP 688, vocab
  32000; LLaVA-1.5's layer count, so ATP's insertion layers 4, 14, 24 and the N̄ accounting over 32
  layers are those of the paper;
* ``7b`` (default on a GPU): Vicuna-7B (hidden 4096, 32 layers, 32 heads, intermediate 11008);
* ``tiny``: 32 layers of width 64, for tests.

The vision tower is the width-32 stand-in with CLIP ViT-L/14-336's geometry (576 patches on a 24x24 grid):
only the language model is timed here. Each prompt is ``<s> USER: <image>\\n{question} ASSISTANT:`` of
random ids (as in ``bench_e2e.py``) with ``--text-tokens`` text tokens, so the prefill has 576 visual
tokens plus 40 to 60 text tokens, batch 1.

Measured, per text length, under ``torch.inference_mode()``:

* **per-module overhead** (``modules``): the inputs of every ATP module (hidden states, rotary
  embeddings, which tokens are visual) are captured during a real prefill, then each step is timed on
  its own: the attention recomputed from the scored layer's own q/k (``layer_attention``), the redundancy
  score (text queries, self/cross scores, min-max normalisation), the spatial score, the threshold
  predictor (``predictor_input`` + a random ``ThresholdPredictor``; the training-free mode does not run
  it), the pruning (keep rule, packing, gathering the hidden states) and the slicing of one later layer's
  inputs (``slice_layer_inputs``, paid by every layer after a module). Next to them, the scored decoder
  layer's own forward at the same length;
* **prefill at equal N̄** (``rows``): one language-model forward (KV cache on, last-position logits) with
  no reduction, ATP keeping every token (θ = −1: the modules' cost with nothing dropped), and for each
  ``--targets`` N̄: ATP with θ_r found by bisection so that N̄ lands near the target (θ_s fixed), then
  FastV and PruMerge set to the N̄ ATP reached: FastV's N̄ = ((K+1)·576 + (L−K−1)·kept) / L, PruMerge's
  N̄ = its token count. Each row records the per-layer schedule (``model.visual_token_schedule()``), N̄,
  the KV cache it left, and the median prefill time.

Usage::

    python benchmarks/bench_atp.py                                  # CPU, small preset
    python benchmarks/bench_atp.py --device cuda                    # GPU, Vicuna-7B shapes, bfloat16
    python benchmarks/bench_atp.py --preset tiny --text-tokens 40 --repeats 1 --out /tmp/atp.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from transformers import Cache

from llava.model import LlavaLlamaForCausalLM
from llava.model.llava_arch import MultimodalInputs
from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.atp import (
    ThresholdPredictor,
    grid_side,
    hard_keep,
    layer_attention,
    minmax_normalise,
    predictor_input,
    redundancy_scores,
    spatial_scores,
    text_queries,
)
from llava.model.token_reduction.in_llm import PrunedLayout, find_cache, pack, slice_layer_inputs

# run as a script (python benchmarks/bench_atp.py), this folder is sys.path[0]; imported as
# benchmarks.bench_atp (the tests), the siblings are in the benchmarks package
if __package__:
    from .bench_e2e import (
        SHAPES,
        build_model,
        device_slug,
        make_llava_config,
        make_prompts,
        padded_batch,
        rnd,
        sync,
        timed,
    )
    from .bench_tower import DTYPES, describe, machine_info
else:
    from bench_e2e import (
        SHAPES,
        build_model,
        device_slug,
        make_llava_config,
        make_prompts,
        padded_batch,
        rnd,
        sync,
        timed,
    )
    from bench_tower import DTYPES, describe, machine_info

#: Language-model shapes of each ``--preset`` (every preset has LLaVA-1.5's 32 decoder layers).
PRESETS: dict[str, dict[str, int]] = {
    "tiny": {
        "hidden_size": 64,
        "num_hidden_layers": 32,
        "num_attention_heads": 4,
        "intermediate_size": 128,
        "vocab_size": 1000,
    },
    "small": {
        "hidden_size": 256,
        "num_hidden_layers": 32,
        "num_attention_heads": 4,
        "intermediate_size": 688,
        "vocab_size": 32000,
    },
    "7b": SHAPES["7b"]["llm"],
}
STEPS = (
    "layer_attention",
    "redundancy_score",
    "spatial_score",
    "threshold_predictor",
    "prune",
    "slice_layer_inputs",
)
KEEP_ALL = -1.0  # θ below every score: ATP keeps every token


# ----------------------------------------------------------------------------------------------
# Prefill and its accounting
# ----------------------------------------------------------------------------------------------


def spliced_prompt(model: LlavaLlamaForCausalLM, prompt: list[int], pixels: torch.Tensor) -> MultimodalInputs:
    """The prompt spliced with the image's tokens under the model's current reduction (batch 1)."""
    ids, mask = padded_batch([prompt], pixels.device)
    return model.prepare_multimodal_inputs(ids, mask, pixels, padding_side="left")


def prefill(model: LlavaLlamaForCausalLM, spliced: MultimodalInputs) -> Any:
    """One language-model forward on the spliced prompt, as ``generate``'s first step does."""
    return model(
        inputs_embeds=spliced.inputs_embeds,
        attention_mask=spliced.attention_mask,
        position_ids=spliced.position_ids,
        visual_mask=spliced.visual_mask,
        query_index=spliced.inputs_embeds.shape[1] - 1,
        use_cache=True,
        logits_to_keep=1,
    )


def schedule_of(model: LlavaLlamaForCausalLM, spliced: MultimodalInputs) -> list[int]:
    """Visual tokens each decoder layer ran on in the last prefill (constant without an in-LLM method)."""
    schedule = model.visual_token_schedule()
    if schedule is None:
        return [int(spliced.num_visual_tokens[0])] * model.config.num_hidden_layers
    return schedule[0].tolist()


def mean_tokens(schedule: list[int]) -> float:
    """N̄: the visual tokens averaged over every decoder layer, the unpruned ones included."""
    return sum(schedule) / len(schedule)


def fastv_kept(target: float, llm_layer: int, num_layers: int, visual: int) -> int:
    """FastV's kept tokens whose N̄ = ((K+1)·visual + (L−K−1)·kept) / L is nearest ``target``."""
    later = num_layers - llm_layer - 1
    kept = round((num_layers * target - (llm_layer + 1) * visual) / later)
    return min(max(kept, 1), visual)


def kv_cache(out: Any) -> dict[str, Any]:
    """Tokens cached per decoder layer and the cache's size (keys and values) after a prefill."""
    cache = find_cache(out)
    tokens = [int(layer.keys.shape[-2]) for layer in cache.layers]
    size = sum(t.numel() * t.element_size() for layer in cache.layers for t in (layer.keys, layer.values))
    return {"kv_cache_tokens_per_layer": tokens, "kv_cache_mib": round(size / 2**20, 3)}


def prefill_facts(model: LlavaLlamaForCausalLM, spliced: MultimodalInputs) -> dict[str, Any]:
    """One untimed prefill with the model's current reduction: the schedule and KV cache it leaves."""
    out = prefill(model, spliced)
    schedule = schedule_of(model, spliced)
    return {
        "schedule": schedule,
        "mean_visual_tokens": round(mean_tokens(schedule), 3),
        "prefill_tokens": int(spliced.inputs_embeds.shape[1]),
        "prefill_visual_tokens": int(spliced.num_visual_tokens[0]),
        **kv_cache(out),
    }


def time_prefills(
    model: LlavaLlamaForCausalLM,
    settings: list[tuple[dict[str, Any], MultimodalInputs]],
    args: argparse.Namespace,
) -> list[list[float]]:
    """Milliseconds of ``--repeats`` prefills of every setting, interleaved: repeat r runs each setting once.

    Interleaving spreads a change in the machine's load over every setting alike (a shared CPU).
    """
    device = torch.device(args.device)
    times: list[list[float]] = [[] for _ in settings]
    for repeat in range(args.warmup + args.repeats):
        for i, (reduction, spliced) in enumerate(settings):
            model.set_token_reduction(reduction)
            sync(device)
            start = time.perf_counter()
            prefill(model, spliced)
            sync(device)
            if repeat >= args.warmup:
                times[i].append((time.perf_counter() - start) * 1000.0)
    return times


def atp_reduction(args: argparse.Namespace, theta_r: float, theta_s: float) -> dict[str, Any]:
    """ATP, training-free, at the benchmark's insertion layers with the thresholds θ_r and θ_s."""
    return {
        "method": "atp",
        "atp_layers": tuple(args.atp_layers),
        "atp_redundancy_threshold": theta_r,
        "atp_spatial_threshold": theta_s,
    }


def calibrate(
    model: LlavaLlamaForCausalLM, spliced: MultimodalInputs, target: float, args: argparse.Namespace
) -> tuple[float, list[dict[str, float]]]:
    """θ_r (θ_s fixed) whose N̄ on this prompt is nearest ``target``, by bisection on [0, 1].

    Returns θ_r and every tried ``(theta_r, mean_visual_tokens)``. N̄ falls as θ_r rises (min-max
    normalised scores are in [0, 1)); at θ_r = 1 only the spatial grids are kept.
    """
    tried: list[dict[str, float]] = []

    def n_bar(theta_r: float) -> float:
        model.set_token_reduction(atp_reduction(args, theta_r, args.atp_spatial_threshold))
        prefill(model, spliced)
        value = mean_tokens(schedule_of(model, spliced))
        tried.append({"theta_r": theta_r, "mean_visual_tokens": round(value, 3)})
        return value

    low, high = 0.0, 1.0
    if n_bar(high) >= target:  # below the spatial branch's floor: the closest is the floor itself
        return high, tried
    for _ in range(args.calibration_steps):
        middle = (low + high) / 2
        if n_bar(middle) > target:
            low = middle
        else:
            high = middle
    best = min(tried, key=lambda t: (abs(t["mean_visual_tokens"] - target), t["theta_r"]))
    return best["theta_r"], tried


# ----------------------------------------------------------------------------------------------
# One ATP module, step by step
# ----------------------------------------------------------------------------------------------


@dataclass
class ModuleInputs:
    """What the ATP module before insertion layer ``layer_idx + 1`` received during a prefill.

    Attributes:
        layer_idx: the scored decoder layer (l − 1).
        layer: that decoder layer.
        hidden: ``[B, L, D]`` its input hidden states, in the current (pruned) layout.
        layer_kwargs: its keyword arguments (rotary embeddings, mask, positions), KV cache removed.
        visual, valid: ``[B, L]`` bool, the surviving visual tokens and the real tokens.
        visual_rank: ``[B, L]`` each visual token's raster index in the image, -1 elsewhere.
        visual_count: ``[B]`` visual tokens before any pruning.
        query: ``[B]`` the query (last prompt) token's position in the current layout.
    """

    layer_idx: int
    layer: torch.nn.Module
    hidden: torch.Tensor
    layer_kwargs: dict[str, Any]
    visual: torch.Tensor
    valid: torch.Tensor
    visual_rank: torch.Tensor
    visual_count: torch.Tensor
    query: torch.Tensor


def capture_module_inputs(model: LlavaLlamaForCausalLM, spliced: MultimodalInputs) -> list[ModuleInputs]:
    """The inputs of every ATP module of one prefill with the model's current (ATP) reduction.

    Pre-hooks on the scored layers, registered after the in-LLM hooks, see the layer's inputs as the
    module does (already in the pruned layout) and read the in-LLM step's token masks; they change nothing.
    """
    llm = model.get_model()
    captured: list[ModuleInputs] = []

    def hook(idx: int, layer: torch.nn.Module, args: tuple, kwargs: dict) -> None:
        step = llm.in_llm.step
        if step is None or step.mode != "prefill":
            return
        hidden = args[0] if args else kwargs["hidden_states"]
        layer_kwargs = {k: v for k, v in kwargs.items() if k != "hidden_states" and not isinstance(v, Cache)}
        layer_kwargs["use_cache"] = False
        captured.append(
            ModuleInputs(
                layer_idx=idx,
                layer=layer,
                hidden=hidden.clone(),
                layer_kwargs=layer_kwargs,
                visual=step.visual.clone(),
                valid=step.valid.clone(),
                visual_rank=step.visual_rank.clone(),
                visual_count=step.visual_count.clone(),
                query=step.query_position().clone(),
            )
        )

    method = llm.in_llm_method()
    handles = [
        llm.layers[idx].register_forward_pre_hook(partial(hook, idx), with_kwargs=True)
        for idx in method.prune_layers
    ]
    try:
        prefill(model, spliced)
    finally:
        for handle in handles:
            handle.remove()
    return captured


def module_steps(
    inputs: ModuleInputs, reduction: ReductionConfig, attn_implementation: str | None
) -> tuple[dict[str, Callable[[], Any]], torch.Tensor]:
    """One callable per step of the module (:data:`STEPS`), and the ``[B, L]`` keep mask it decides."""
    m = inputs
    cos_sin = m.layer_kwargs["position_embeddings"]
    probs = layer_attention(m.layer, m.hidden, cos_sin, m.valid)  # [B, L, L]
    queries = text_queries(m.visual, m.valid, m.query)
    s_self, s_cross = redundancy_scores(probs, m.visual, queries)
    self_hat, cross_hat = minmax_normalise(s_self, m.visual), minmax_normalise(s_cross, m.visual)
    s_r = (self_hat + cross_hat) / 2
    s_s = spatial_scores(m.visual_rank, grid_side(m.visual_count), reduction.atp_spatial_lambda)
    theta_r, theta_s = reduction.atp_redundancy_threshold, reduction.atp_spatial_threshold
    keep = m.valid & (~m.visual | hard_keep(s_r, s_s, theta_r, theta_s))  # [B, L]
    num_tokens = int(m.visual_count.max())
    predictor = ThresholdPredictor(num_tokens=num_tokens).to(m.hidden.device)

    def redundancy() -> torch.Tensor:
        q = text_queries(m.visual, m.valid, m.query)
        a, b = redundancy_scores(probs, m.visual, q)
        return (minmax_normalise(a, m.visual) + minmax_normalise(b, m.visual)) / 2

    def thresholds() -> Any:
        return predictor(predictor_input(self_hat, cross_hat, m.visual_rank, num_tokens))

    def prune() -> torch.Tensor:
        kept = m.valid & (~m.visual | hard_keep(s_r, s_s, theta_r, theta_s))
        index, _ = pack(kept)  # [B, L']
        return m.hidden.gather(1, index[..., None].expand(-1, -1, m.hidden.shape[-1]))  # [B, L', D]

    index, kept_valid = pack(keep)
    layout = PrunedLayout(m.layer_idx, m.valid.shape[1], index, kept_valid)
    steps = {
        "layer_attention": lambda: layer_attention(m.layer, m.hidden, cos_sin, m.valid),
        "redundancy_score": redundancy,
        "spatial_score": lambda: spatial_scores(
            m.visual_rank, grid_side(m.visual_count), reduction.atp_spatial_lambda
        ),
        "threshold_predictor": thresholds,
        "prune": prune,
        "slice_layer_inputs": lambda: slice_layer_inputs(
            m.layer_kwargs, layout, "prefill", attn_implementation, m.hidden.dtype
        ),
    }
    return steps, keep


def time_module(
    inputs: ModuleInputs, reduction: ReductionConfig, model: LlavaLlamaForCausalLM, args: argparse.Namespace
) -> dict[str, Any]:
    """Every step of one module timed on its captured inputs, beside the scored layer's own forward."""
    device = torch.device(args.device)
    steps, keep = module_steps(inputs, reduction, model.config._attn_implementation)
    times = {name: timed(fn, device, args.warmup, args.module_repeats) for name, fn in steps.items()}
    layer_times = timed(
        lambda: inputs.layer(inputs.hidden, **inputs.layer_kwargs), device, args.warmup, args.module_repeats
    )
    ms = {name: round(statistics.median(t), 4) for name, t in times.items()}
    fixed = sum(ms[name] for name in ("layer_attention", "redundancy_score", "spatial_score", "prune"))
    layer_ms = statistics.median(layer_times)
    return {
        "insertion_layer": inputs.layer_idx + 1,
        "scored_layer": inputs.layer_idx,
        "sequence_length": int(inputs.valid.sum()),
        "visual_tokens_in": int(inputs.visual.sum()),
        "visual_tokens_kept": int((keep & inputs.visual).sum()),
        "ms": ms,
        "ms_all": {name: rnd(t, 4) for name, t in times.items()},
        "module_ms_fixed_thresholds": round(fixed, 4),
        "module_ms_with_predictor": round(fixed + ms["threshold_predictor"], 4),
        "decoder_layer_ms": round(layer_ms, 4),
        "decoder_layer_ms_all": rnd(layer_times, 4),
        "pct_of_decoder_layer": round(100.0 * fixed / layer_ms, 2),
    }


# ----------------------------------------------------------------------------------------------
# Settings
# ----------------------------------------------------------------------------------------------


def setting_rows(
    model: LlavaLlamaForCausalLM,
    prompt: list[int],
    pixels: torch.Tensor,
    args: argparse.Namespace,
    log: Callable[[str], None],
) -> list[dict[str, Any]]:
    """The reductions to compare, each with its key, target and reduction: none, ATP keeping every token,
    then per target ATP (θ_r calibrated), FastV and PruMerge at the N̄ ATP reached."""
    num_layers = model.config.num_hidden_layers
    model.set_token_reduction("none")
    spliced = spliced_prompt(model, prompt, pixels)
    visual = int(spliced.num_visual_tokens[0])
    rows = [
        {"key": "none", "target": None, "reduction": {"method": "none"}},
        {"key": "atp_keep_all", "target": None, "reduction": atp_reduction(args, KEEP_ALL, KEEP_ALL)},
    ]
    for target in args.targets:
        theta_r, tried = calibrate(model, spliced, target, args)
        n_bar = next(t["mean_visual_tokens"] for t in tried if t["theta_r"] == theta_r)
        log(f"target {target:g}: θ_r = {theta_r:.6f} gives N̄ {n_bar:.1f} ({len(tried)} prefills)")
        kept = fastv_kept(n_bar, args.fastv_layer, num_layers, visual)
        budget = min(max(round(n_bar), 1), visual)
        atp = atp_reduction(args, theta_r, args.atp_spatial_threshold)
        calibration = {"theta_r": theta_r, "theta_s": args.atp_spatial_threshold, "calibration": tried}
        rows += [
            {"key": "atp", "target": target, "reduction": atp, **calibration},
            {
                "key": "fastv",
                "target": target,
                "reduction": {"method": "fastv", "llm_layer": args.fastv_layer, "budget": kept},
            },
            {
                "key": "prumerge",
                "target": target,
                "reduction": {"method": "prumerge", "variant": "reference", "budget": budget},
            },
        ]
    return rows


def run_case(
    model: LlavaLlamaForCausalLM, text_tokens: int, args: argparse.Namespace, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every row at one text length: none, ATP keeping all, then ATP / FastV / PruMerge per target."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    prompt = make_prompts(1, text_tokens, model.config.vocab_size, args.seed + 2)[0]
    side = model.get_vision_tower().config.image_size
    pixels = torch.randn(1, 3, side, side, generator=torch.Generator().manual_seed(args.seed + 1))
    pixels = pixels.to(device, dtype)
    rows, inputs = [], []
    for row in setting_rows(model, prompt, pixels, args, log):
        config = model.set_token_reduction(row.pop("reduction"))
        spliced = spliced_prompt(model, prompt, pixels)
        rows.append(
            {
                "key": row.pop("key"),
                "setting": describe(config),
                "mm_token_reduction": config.to_dict(),
                **row,
            }
        )
        rows[-1].update(prefill_facts(model, spliced))
        inputs.append((config, spliced))
    log(f"text {text_tokens}: timing {len(rows)} settings, {args.repeats} interleaved prefills each ...")
    for row, times in zip(rows, time_prefills(model, inputs, args), strict=True):
        row.update(prefill_ms=round(statistics.median(times), 3), prefill_ms_all=rnd(times))
        row["speedup_vs_none"] = round(rows[0]["prefill_ms"] / row["prefill_ms"], 3)
        log(
            f"text {text_tokens}: {row['setting']} N̄ {row['mean_visual_tokens']:.1f}, prefill {row['prefill_ms']:.1f} ms"
        )
    for row, (config, spliced) in zip(rows, inputs, strict=True):
        if config.method == "atp":
            model.set_token_reduction(config)
            row["modules"] = [
                time_module(m, config, model, args) for m in capture_module_inputs(model, spliced)
            ]
    model.set_token_reduction("none")
    return {
        "text_tokens": text_tokens,
        "visual_tokens": rows[0]["prefill_visual_tokens"],
        "sequence_length": rows[0]["prefill_tokens"],
        "rows": rows,
    }


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument(
        "--dtype", choices=tuple(DTYPES), default=None, help="default: bfloat16 on cuda, float32 on cpu"
    )
    parser.add_argument(
        "--preset", choices=tuple(PRESETS), default=None, help="default: small on cpu, 7b on cuda"
    )
    parser.add_argument(
        "--text-tokens",
        type=int,
        nargs="+",
        default=[40, 60],
        help="text tokens of the prompt, one case each",
    )
    parser.add_argument("--targets", type=float, nargs="+", default=[198.0, 144.0], help="N̄ targets of ATP")
    parser.add_argument("--atp-layers", type=int, nargs="+", default=[4, 14, 24], help="ATP insertion layers")
    parser.add_argument(
        "--atp-spatial-threshold",
        type=float,
        default=0.5,
        help="θ_s of every module (0.5 keeps the 6x6 grid of a 24x24 image); θ_r is calibrated per target",
    )
    parser.add_argument("--fastv-layer", type=int, default=2, help="FastV's K (tokens drop after layer K)")
    parser.add_argument("--calibration-steps", type=int, default=12, help="bisection steps on θ_r per target")
    parser.add_argument("--repeats", type=int, default=None, help="timed prefills per row (5 cpu, 20 cuda)")
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed runs before each figure (1 cpu, 3 cuda)"
    )
    parser.add_argument(
        "--module-repeats", type=int, default=None, help="timed runs of each module step (10 cpu, 50 cuda)"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch.set_num_threads for the run (default: leave torch's own; 1 is steadier on a shared CPU)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="default: benchmarks/results/atp_<cpu|gpu name>[_<preset>].json",
    )
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch sees no CUDA device.")
    args.dtype = args.dtype or ("bfloat16" if on_gpu else "float32")
    default_preset = "7b" if on_gpu else "small"
    args.preset = args.preset or default_preset
    layers = PRESETS[args.preset]["num_hidden_layers"]
    if (
        sorted(set(args.atp_layers)) != args.atp_layers
        or not 1 <= args.atp_layers[0] <= args.atp_layers[-1] < layers
    ):
        parser.error(f"--atp-layers must be increasing layers in 1..{layers - 1}")
    if not 0 <= args.fastv_layer < layers - 1:
        parser.error(f"--fastv-layer must be in 0..{layers - 2}")
    args.repeats = args.repeats or (20 if on_gpu else 5)
    args.module_repeats = args.module_repeats or (50 if on_gpu else 10)
    if args.warmup is None:
        args.warmup = 3 if on_gpu else 1
    args.slug = device_slug(torch.device(args.device))
    if args.out is None:
        suffix = "" if args.preset == default_preset else f"_{args.preset}"
        args.out = Path(__file__).resolve().parent / "results" / f"atp_{args.slug}{suffix}.json"
    return args


NOTES = [
    "Random weights (seeded) and random prompt ids: ATP's scores, and so the thresholds that reach a target N̄, "
    "are those of this random model, not of LLaVA-1.5-7B; the schedules show the mechanics and the costs.",
    "Prefills are timed interleaved: each repeat runs every setting once, after --warmup such rounds, so a "
    "change in the machine's load falls on every setting alike.",
    "N̄ = the visual tokens each decoder layer runs on, averaged over all layers (model.visual_token_schedule() "
    "of the prefill; constant for none and PruMerge). FastV's kept count and PruMerge's budget are set from the "
    "N̄ ATP reached, so the three run at equal N̄ up to rounding.",
    "Prefill = one language-model forward (KV cache on, logits of the last position only), batch 1. ATP's and "
    "FastV's scoring runs inside it; PruMerge reduces in the vision tower before the LLM, so its reduce step "
    "(bench_tower.py, bench_e2e.py) is not in its prefill figure.",
    "The tower is a width-32 stand-in with ViT-L/14-336's geometry (576 patches); it is not timed.",
    "modules: each step timed alone on inputs captured from a real prefill. module_ms_fixed_thresholds = "
    "layer_attention + redundancy_score + spatial_score + prune (what the training-free mode runs); "
    "threshold_predictor (predictor_input + a random ThresholdPredictor) runs only with trained modules; "
    "slice_layer_inputs is paid by every decoder layer after a module (rotary embeddings and mask gathered).",
    "atp_keep_all (θ_r = θ_s = -1) runs every module and drops nothing: its prefill minus none's is the modules' "
    "cost inside the model.",
]


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Builds the model and measures every case; returns the JSON-serialisable results."""
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    start = time.perf_counter()

    def log(message: str) -> None:
        print(f"[{time.perf_counter() - start:7.1f}s] {message}", flush=True)

    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        machine = machine_info(device, args.dtype)  # before the run: the load average is other processes'
        config = make_llava_config(PRESETS[args.preset], "tiny")
        log(f"building the {args.preset} model with random weights on {device} in {args.dtype} ...")
        model = build_model(config, args.seed, 8.0, device, dtype)
        log(f"built: {sum(p.numel() for p in model.parameters()) / 1e6:.1f} M parameters")
        cases = []
        with torch.inference_mode():
            for text_tokens in args.text_tokens:
                cases.append(run_case(model, text_tokens, args, log))
        sync(device)
    finally:
        torch.set_num_threads(threads)
    if hasattr(os, "getloadavg"):
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    settings = {k: v for k, v in vars(args).items() if k not in ("out",)}
    return {
        "benchmark": "bench_atp.py",
        "machine": machine,
        "config": {
            **settings,
            "llm": PRESETS[args.preset],
            "attn_implementation": model.config._attn_implementation,
            "visual_tokens": 576,
            "batch_size": 1,
            "units": {
                "*_ms": "milliseconds (median of the timed runs; *_all: every run)",
                "kv_cache_mib": "MiB",
            },
            "notes": NOTES,
        },
        "cases": cases,
        "total_runtime_s": round(time.perf_counter() - start, 1),
    }


def schedule_text(schedule: list[int]) -> str:
    """Run-length form of a per-layer schedule: ``576x4 212x10 150x10 98x8``."""
    runs: list[list[int]] = []
    for count in schedule:
        if runs and runs[-1][0] == count:
            runs[-1][1] += 1
        else:
            runs.append([count, 1])
    return " ".join(f"{count}x{length}" for count, length in runs)


def format_table(results: dict[str, Any]) -> str:
    """The results as plain-text tables: prefill rows, then per-module steps."""
    cfg, m = results["config"], results["machine"]
    llm = cfg["llm"]
    lines = [
        f"Device: {m['device_name']} ({m['device']}, {cfg['dtype']}), torch {m['torch']}, preset {cfg['preset']} "
        f"(hidden {llm['hidden_size']}, {llm['num_hidden_layers']} layers, {llm['num_attention_heads']} heads), "
        f"ATP layers {cfg['atp_layers']}, θ_s {cfg['atp_spatial_threshold']}, FastV K={cfg['fastv_layer']}, "
        f"median of {cfg['repeats']} prefills / {cfg['module_repeats']} module runs"
    ]
    for case in results["cases"]:
        lines += ["", f"Text tokens {case['text_tokens']} (sequence {case['sequence_length']}): prefill"]
        header = f"{'setting':<48} {'target':>6} {'N̄':>7} {'prefill ms':>11} {'vs none':>8} {'KV MiB':>8}  schedule"
        lines += [header, "-" * len(header)]
        for r in case["rows"]:
            target = "-" if r["target"] is None else f"{r['target']:g}"
            lines.append(
                f"{r['setting']:<48} {target:>6} {r['mean_visual_tokens']:>7.1f} {r['prefill_ms']:>11.2f} "
                f"{r['speedup_vs_none']:>7.2f}x {r['kv_cache_mib']:>8.2f}  {schedule_text(r['schedule'])}"
            )
        lines += [
            "",
            f"Text tokens {case['text_tokens']}: ATP modules (ms per step; layer = the scored layer's forward)",
        ]
        header = (
            f"{'row':<14} {'ins.':>4} {'seq':>5} {'in->kept':>9} "
            + " ".join(f"{name[:10]:>10}" for name in STEPS)
            + f" {'module':>8} {'layer':>8} {'% layer':>7}"
        )
        lines += [header, "-" * len(header)]
        for r in case["rows"]:
            label = r["key"] if r["target"] is None else f"{r['key']}@{r['target']:g}"
            for mod in r.get("modules", []):
                lines.append(
                    f"{label:<14} {mod['insertion_layer']:>4} {mod['sequence_length']:>5} "
                    f"{mod['visual_tokens_in']:>4}->{mod['visual_tokens_kept']:<4} "
                    + " ".join(f"{mod['ms'][name]:>10.3f}" for name in STEPS)
                    + f" {mod['module_ms_fixed_thresholds']:>8.3f} {mod['decoder_layer_ms']:>8.3f}"
                    f" {mod['pct_of_decoder_layer']:>7.1f}"
                )
    lines.append(
        "(module = attention + redundancy + spatial + prune: the training-free mode; the predictor runs "
        "only with trained modules; slice_layer_inputs is paid by every later layer)"
    )
    lines.append(f"Total runtime: {results['total_runtime_s']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Runs the benchmark, prints the tables, writes the JSON and returns the results."""
    args = parse_args(argv)
    results = run(args)
    print()
    print(format_table(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nWrote {args.out}")
    return results


if __name__ == "__main__":
    main()
