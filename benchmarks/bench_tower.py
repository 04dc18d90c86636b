"""Wall-clock benchmark of the CLIP ViT-L/14-336 vision tower with each visual-token reducer.

The tower has LLaVA-1.5's shapes (24 layers, width 1024, 336 px, 14 px patches, 576 patches) and
random weights, so no checkpoint is read. To make the class attention as peaky as a trained CLIP's,
the ``q_proj`` and ``k_proj`` weights of every layer are multiplied by ``--qk-scale`` (8 by default)
after a seeded initialisation; the number of tokens each adaptive reducer keeps is reported, since
it depends on those weights.

Measured, per batch size:

* ``plain``: the whole 24-layer ``CLIPVisionModel`` (what a naive LLaVA implementation runs: every
  layer, with ``output_hidden_states=True``, then ``hidden_states[-2]``);
* ``tower``: this project's tower (``select_layer=-2``: 23 layers, plus only ``layer_norm1``,
  ``q_proj`` and ``k_proj`` of layer 24 when the reducer needs class attention) with each reducer;
* ``reduce step``: ``llava.model.token_reduction.reduce`` alone, on features, attention and keys
  captured once from the tower;
* ``budget scaling``: the reduce step for PruMerge at a fixed batch size under budgets from 16 to
  575 tokens.

Each figure is the median of ``--repeats`` wall-clock timings after ``--warmup`` untimed runs, under
``torch.no_grad()``, with ``torch.cuda.synchronize()`` around every timing on a GPU.

Usage::

    python benchmarks/bench_tower.py                      # CPU, batch 1 and 8
    python benchmarks/bench_tower.py --device cuda --dtype bfloat16
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import transformers
from transformers import CLIPVisionConfig

from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.token_reduction import ReducerInputs, ReductionConfig, reduce

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

#: Every reducer setting timed in the full tower (name, ``mm_token_reduction`` dict).
ALL_METHODS: list[dict[str, Any]] = [
    {"method": "none"},
    {"method": "prumerge", "variant": "reference"},
    {"method": "prumerge", "variant": "paper"},
    {"method": "prumerge_plus", "variant": "reference", "form": "adaptive"},
    {"method": "prumerge_plus", "variant": "paper", "form": "adaptive"},
    {"method": "prumerge_plus", "variant": "reference", "form": "fixed"},
    {"method": "prumerge_plus", "variant": "paper", "form": "fixed"},
    {"method": "aits", "variant": "reference"},
    {"method": "aits", "variant": "paper"},
    {"method": "prumerge", "variant": "reference", "budget": 64},
    {"method": "prumerge", "variant": "paper", "budget": 64},
    {"method": "sequential", "budget": 64},
    {"method": "spatial", "grid": (8, 8)},
]

#: The shorter list timed at batch sizes above 1 on CPU (unless ``--all-methods``).
SHORT_METHODS: list[dict[str, Any]] = [
    {"method": "none"},
    {"method": "prumerge", "variant": "reference"},
    {"method": "prumerge_plus", "variant": "reference", "form": "adaptive"},
]

#: Reducer settings timed alone in the reduce-step measurement.
REDUCE_METHODS: list[dict[str, Any]] = [
    {"method": "prumerge", "variant": "reference"},
    {"method": "prumerge", "variant": "paper"},
    {"method": "prumerge_plus", "variant": "reference", "form": "adaptive"},
    {"method": "prumerge_plus", "variant": "paper", "form": "adaptive"},
]

SCALING_BUDGETS = (16, 64, 144, 288, 575)


@dataclass
class Timing:
    """Wall-clock times of one measurement, in milliseconds."""

    times_ms: list[float] = field(default_factory=list)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.times_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"ms_median": round(self.median_ms, 3), "ms_all": [round(t, 3) for t in self.times_ms]}


class Bench:
    """Times callables on one device and prints progress with the elapsed time."""

    def __init__(self, device: torch.device, warmup: int, repeats: int) -> None:
        self.device = device
        self.warmup = warmup
        self.repeats = repeats
        self.start = time.perf_counter()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def log(self, message: str) -> None:
        print(f"[{time.perf_counter() - self.start:7.1f}s] {message}", flush=True)

    @torch.no_grad()
    def time(self, fn: Callable[[], Any], repeats: int | None = None) -> tuple[Timing, Any]:
        """Runs ``fn`` ``warmup`` times untimed, then ``repeats`` times timed; returns the last output."""
        out = None
        for _ in range(self.warmup):
            out = fn()
        self.sync()
        timing = Timing()
        for _ in range(repeats or self.repeats):
            self.sync()
            t0 = time.perf_counter()
            out = fn()
            self.sync()
            timing.times_ms.append((time.perf_counter() - t0) * 1000.0)
        return timing, out


def vit_l_336_config() -> CLIPVisionConfig:
    """The CLIP ViT-L/14-336 vision config of LLaVA-1.5."""
    return CLIPVisionConfig(
        hidden_size=1024,
        intermediate_size=4096,
        num_hidden_layers=24,
        num_attention_heads=16,
        image_size=336,
        patch_size=14,
        hidden_act="quick_gelu",
    )


def build_tower(seed: int, qk_scale: float, device: torch.device, dtype: torch.dtype) -> CLIPVisionTower:
    """A randomly initialised ViT-L/14-336 tower with every layer's q/k projections scaled by ``qk_scale``."""
    torch.manual_seed(seed)
    cfg = SimpleNamespace(
        mm_vision_tower="random-clip-vit-large-patch14-336",
        mm_vision_select_layer=-2,
        mm_vision_select_feature="patch",
        mm_token_reduction={"method": "none"},
        vision_config=vit_l_336_config(),
    )
    tower = build_vision_tower(cfg, load_weights=False)
    with torch.no_grad():
        for layer in tower.vision_tower.encoder.layers:
            layer.self_attn.q_proj.weight.mul_(qk_scale)
            layer.self_attn.k_proj.weight.mul_(qk_scale)
    return tower.to(device=device, dtype=dtype).eval()


def token_stats(lengths: torch.Tensor) -> dict[str, float | int]:
    """Mean, min and max tokens per image."""
    values = lengths.detach().cpu().double()
    return {"mean": round(values.mean().item(), 2), "min": int(values.min()), "max": int(values.max())}


def describe(reduction: dict[str, Any] | ReductionConfig) -> str:
    """A short name such as ``prumerge_plus/reference/adaptive`` (no variant where it has no effect)."""
    config = ReductionConfig.from_value(reduction)
    name = config.describe()
    if config.method in ("sequential", "spatial"):
        name = name.replace(f"/{config.variant}", "", 1)
    return name


def machine_info(device: torch.device, dtype_name: str) -> dict[str, Any]:
    """Where the figures were measured."""
    cpu_model = ""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu_model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "processor": platform.processor(),
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "torch_num_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model or "cpu",
        "dtype": dtype_name,
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "load_average_1_5_15min": [round(x, 2) for x in os.getloadavg()]
        if hasattr(os, "getloadavg")
        else None,
    }
    if device.type == "cuda":
        info["cuda"] = torch.version.cuda
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=None, help="default: 1 8 (+32 on cuda)")
    parser.add_argument(
        "--repeats", type=int, default=None, help="timed runs per figure (3 on CPU, 20 on GPU)"
    )
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs before each figure")
    parser.add_argument(
        "--reduce-repeats", type=int, default=None, help="timed runs of the reduce step alone (default 20)"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--qk-scale", type=float, default=8.0, help="factor on every layer's q/k weights")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scaling-batch", type=int, default=8, help="batch size of the budget-scaling check")
    parser.add_argument(
        "--all-methods",
        action="store_true",
        help="time every reducer at every batch size (on CPU the default times 3 above batch 1)",
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="default: benchmarks/results/tower_<device>.json"
    )
    args = parser.parse_args(argv)
    on_gpu = args.device == "cuda"
    if args.batch_sizes is None:
        args.batch_sizes = [1, 8, 32] if on_gpu else [1, 8]
    if args.repeats is None:
        args.repeats = 20 if on_gpu else 3
    if args.reduce_repeats is None:
        args.reduce_repeats = max(20, args.repeats)
    if args.out is None:
        args.out = Path(__file__).resolve().parent / "results" / f"tower_{args.device}.json"
    if on_gpu and not torch.cuda.is_available():
        parser.error("--device cuda was asked for but torch sees no CUDA device.")
    return args


def methods_for(batch_size: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Reducer settings timed in the tower at ``batch_size``."""
    if args.all_methods or args.device == "cuda" or batch_size == 1:
        return ALL_METHODS
    return SHORT_METHODS


def reducer_inputs(tower: CLIPVisionTower, hidden: torch.Tensor, variant: str) -> ReducerInputs:
    """The reducer's inputs for captured ``hidden`` states, with the class attention of ``variant``."""
    tower.set_reduction({"method": "prumerge", "variant": variant})
    with torch.no_grad():
        attention, keys, values = tower.attention_and_keys(hidden, with_values=True)
    return ReducerInputs(
        features=hidden[:, 1:], attention=attention, keys=keys, grid=tower.grid, values=values
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Runs every measurement and returns the JSON-serialisable results."""
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    bench = Bench(device, args.warmup, args.repeats)
    machine = machine_info(device, args.dtype)  # before the run, so the load average is other processes'
    bench.log(f"building ViT-L/14-336 with random weights (seed {args.seed}, q/k x{args.qk_scale}) ...")
    tower = build_tower(args.seed, args.qk_scale, device, dtype)
    bench.log(f"built on {device} in {args.dtype}")
    side = tower.config.image_size

    generator = torch.Generator().manual_seed(args.seed + 1)
    batches = sorted(set(args.batch_sizes) | {args.scaling_batch})
    pixels = {
        bs: torch.randn(bs, 3, side, side, generator=generator).to(device=device, dtype=dtype)
        for bs in batches
    }
    captured: dict[int, torch.Tensor] = {}
    last_layer = tower.vision_tower.encoder.layers[tower.num_layers_run - 1]

    def capture_once(bs: int) -> None:
        """Keeps the selected layer's output of the next tower call at batch ``bs`` (the warmup run)."""

        def hook(_module: Any, _inputs: Any, output: Any) -> None:
            captured[bs] = (output[0] if isinstance(output, tuple) else output).detach()
            handle.remove()

        handle = last_layer.register_forward_hook(hook)

    tower_rows: list[dict[str, Any]] = []
    for bs in args.batch_sizes:
        px = pixels[bs]
        bench.log(f"batch {bs}: plain 24-layer CLIPVisionModel ...")
        timing, out = bench.time(lambda px=px: tower.vision_tower(pixel_values=px, output_hidden_states=True))
        plain_ms = timing.median_ms
        n_tokens = out.hidden_states[-2].shape[1] - 1
        tower_rows.append(
            {
                "batch_size": bs,
                "name": "plain (24 layers)",
                "reduction": None,
                **timing.to_dict(),
                "ms_per_image": round(plain_ms / bs, 3),
                "speedup_vs_plain": 1.0,
                "tokens": {"mean": float(n_tokens), "min": n_tokens, "max": n_tokens},
            }
        )
        bench.log(f"batch {bs}: plain 24-layer CLIPVisionModel {plain_ms:10.1f} ms  ({n_tokens} tokens)")
        for reduction in methods_for(bs, args):
            name = describe(reduction)
            tower.set_reduction(reduction)
            if bs not in captured:
                capture_once(bs)  # the reduce step's inputs, from this method's warmup run
            timing, out = bench.time(lambda px=px: tower(px))
            stats = token_stats(out.lengths)
            tower_rows.append(
                {
                    "batch_size": bs,
                    "name": name,
                    "reduction": ReductionConfig.from_value(reduction).to_dict(),
                    **timing.to_dict(),
                    "ms_per_image": round(timing.median_ms / bs, 3),
                    "speedup_vs_plain": round(plain_ms / timing.median_ms, 3),
                    "tokens": stats,
                }
            )
            bench.log(
                f"batch {bs}: tower {name:<42} {timing.median_ms:10.1f} ms  "
                f"tokens {stats['mean']} [{stats['min']}-{stats['max']}]"
            )

    for bs in batches:  # the scaling batch may not be among the timed batch sizes
        if bs not in captured:
            bench.log(f"batch {bs}: encoding once to capture the reduce step's inputs ...")
            with torch.no_grad():
                captured[bs] = tower.encode(pixels[bs])

    reduce_rows: list[dict[str, Any]] = []
    for bs in args.batch_sizes:
        inputs = {v: reducer_inputs(tower, captured[bs], v) for v in ("reference", "paper")}
        none_ms = next(r["ms_median"] for r in tower_rows if r["batch_size"] == bs and r["name"] == "none")
        for reduction in REDUCE_METHODS:
            config = ReductionConfig.from_value(reduction)
            name = config.describe()
            timing, out = bench.time(
                lambda i=inputs[config.variant], c=config: reduce(i, c), repeats=args.reduce_repeats
            )
            match = [r for r in tower_rows if r["batch_size"] == bs and r["name"] == name]
            tower_ms, tower_ref = (match[0]["ms_median"], name) if match else (none_ms, "none")
            reduce_rows.append(
                {
                    "batch_size": bs,
                    "name": name,
                    "reduction": config.to_dict(),
                    **timing.to_dict(),
                    "tower_ms": tower_ms,
                    "tower_reference": tower_ref,
                    "pct_of_tower": round(100.0 * timing.median_ms / tower_ms, 3),
                    "tokens": token_stats(out.lengths),
                }
            )
            bench.log(
                f"batch {bs}: reduce step {name:<36} {timing.median_ms:10.2f} ms "
                f"({100.0 * timing.median_ms / tower_ms:.2f}% of tower '{tower_ref}')"
            )

    scaling_rows: list[dict[str, Any]] = []
    bs = args.scaling_batch
    for variant in ("reference", "paper"):
        inputs = reducer_inputs(tower, captured[bs], variant)
        for budget in SCALING_BUDGETS:
            config = ReductionConfig(method="prumerge", variant=variant, budget=budget)
            timing, out = bench.time(lambda i=inputs, c=config: reduce(i, c), repeats=args.reduce_repeats)
            stats = token_stats(out.lengths)
            scaling_rows.append(
                {
                    "batch_size": bs,
                    "name": config.describe(),
                    "variant": variant,
                    "budget": budget,
                    **timing.to_dict(),
                    "tokens": stats,
                }
            )
            bench.log(f"batch {bs}: budget scaling {config.describe():<36} {timing.median_ms:10.2f} ms")

    notes = [
        "plain: tower.vision_tower(pixel_values, output_hidden_states=True), all 24 layers plus post_layernorm.",
        "tower: this project's CLIPVisionTower (23 layers; layer 24's layer_norm1/q_proj/k_proj only when the "
        "reducer needs class attention) with the reducer; tokens are per image after reduction.",
        "reduce_step / budget_scaling: reduce() alone on features, attention and keys captured once from the "
        "tower; pct_of_tower is relative to the tower row named in tower_reference (the same reducer at the "
        "same batch size, or 'none' where that reducer was not timed in the tower at that batch size).",
        "Weights are random (seeded) with q_proj/k_proj scaled by qk_scale, so kept-token counts of the "
        "adaptive reducers are illustrative, not those of the pretrained CLIP.",
    ]
    if any(methods_for(bs, args) is SHORT_METHODS for bs in args.batch_sizes):
        short = [describe(m) for m in SHORT_METHODS]
        notes.append(
            f"To keep the CPU run short, batch sizes above 1 time only {short} in the tower "
            "(use --all-methods for all)."
        )
    if hasattr(os, "getloadavg"):
        machine["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return {
        "machine": machine,
        "config": {
            "vision_config": {
                k: getattr(tower.config, k)
                for k in (
                    "hidden_size",
                    "intermediate_size",
                    "num_hidden_layers",
                    "num_attention_heads",
                    "image_size",
                    "patch_size",
                    "hidden_act",
                )
            },
            "attn_implementation": tower.config._attn_implementation,
            "mm_vision_select_layer": -2,
            "mm_vision_select_feature": "patch",
            "num_patches": tower.num_patches,
            "qk_scale": args.qk_scale,
            "seed": args.seed,
            "batch_sizes": args.batch_sizes,
            "methods_by_batch_size": {
                str(bs): [describe(m) for m in methods_for(bs, args)] for bs in args.batch_sizes
            },
            "warmup": args.warmup,
            "repeats": args.repeats,
            "reduce_repeats": args.reduce_repeats,
            "scaling_batch_size": args.scaling_batch,
            "scaling_budgets": list(SCALING_BUDGETS),
            "device": args.device,
            "dtype": args.dtype,
            "notes": notes,
        },
        "tower": tower_rows,
        "reduce_step": reduce_rows,
        "budget_scaling": scaling_rows,
        "total_runtime_s": round(time.perf_counter() - bench.start, 1),
    }


def format_tables(results: dict[str, Any]) -> str:
    """The results as plain-text tables."""
    m = results["machine"]
    lines = [
        f"Device: {m['device_name']} ({m['device']}, {m['dtype']}), {m['cpu_count']} CPUs, "
        f"torch {m['torch']}, transformers {m['transformers']}",
        "",
        "Vision tower (ViT-L/14-336, random weights), median wall-clock",
        f"{'batch':>5}  {'tower / reducer':<44} {'ms':>10} {'ms/img':>9} {'vs plain':>8}  {'tokens mean [min-max]':<22}",
    ]
    for r in results["tower"]:
        t = r["tokens"]
        lines.append(
            f"{r['batch_size']:>5}  {r['name']:<44} {r['ms_median']:>10.1f} {r['ms_per_image']:>9.1f} "
            f"{r['speedup_vs_plain']:>7.2f}x  {t['mean']} [{t['min']}-{t['max']}]"
        )
    lines += [
        "",
        "Reduce step alone (features/attention/keys precomputed)",
        f"{'batch':>5}  {'reducer':<44} {'ms':>10} {'% tower':>8}  {'of tower row':<30}",
    ]
    for r in results["reduce_step"]:
        lines.append(
            f"{r['batch_size']:>5}  {r['name']:<44} {r['ms_median']:>10.2f} {r['pct_of_tower']:>7.2f}%  "
            f"{r['tower_reference']}"
        )
    lines += [
        "",
        "Reduce step vs kept tokens (prumerge with a budget)",
        f"{'batch':>5}  {'reducer':<44} {'ms':>10}  {'tokens':>6}",
    ]
    for r in results["budget_scaling"]:
        lines.append(
            f"{r['batch_size']:>5}  {r['name']:<44} {r['ms_median']:>10.2f}  {r['tokens']['max']:>6}"
        )
    lines += ["", f"Total runtime: {results['total_runtime_s']:.1f} s"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Runs the benchmark, prints the tables and writes the JSON."""
    args = parse_args(argv)
    results = run(args)
    print()
    print(format_tables(results))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    print(f"\nWrote {args.out}")


if __name__ == "__main__":
    main()
