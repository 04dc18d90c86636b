"""Every tower reducer at equal budgets: the reduce step alone, at ViT-L/14-336 shapes.

    python benchmarks/bench_reducers.py [--budgets 64 128 192] [--batch-sizes 1 8] [--device cpu|cuda]

The tower (random weights, q/k scaled as in ``bench_tower.py``) encodes a batch once; then each
registered tower reducer (PruMerge, PruMerge+, AITS, ToMe, EViT, ATS, VisionZip, DivPrune, sequential,
spatial) is timed on those same inputs at each budget. FastV acts inside the language model and is not
timed here. Writes ``benchmarks/results/reducers_<device>.json``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch

from llava.model.token_reduction import ReductionConfig, available_reducers, get_reducer, reduce

# run as a script (python benchmarks/bench_reducers.py), this folder is sys.path[0]; imported as
# benchmarks.bench_reducers (the tests), the siblings are in the benchmarks package
if __package__:
    from .bench_tower import DTYPES, Bench, build_tower, machine_info, reducer_inputs, token_stats
else:
    from bench_tower import DTYPES, Bench, build_tower, machine_info, reducer_inputs, token_stats


def methods(budget: int) -> list[ReductionConfig]:
    """Every tower reducer (not ``none``, not in-LLM) with ``budget`` tokens per image."""
    return [
        ReductionConfig(method=name, budget=budget)
        for name in available_reducers()
        if name != "none" and not get_reducer(name).in_llm
    ]


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    bench = Bench(device, warmup=1, repeats=args.repeats)
    machine = machine_info(device, args.dtype)
    tower = build_tower(args.seed, args.qk_scale, device, DTYPES[args.dtype])
    rows = []
    for batch in args.batch_sizes:
        pixels = torch.randn(batch, 3, 336, 336, generator=torch.Generator().manual_seed(batch)).to(device)
        with torch.no_grad():
            hidden = tower.encode(pixels)  # [B, 1 + N, D], once per batch size
        inputs = reducer_inputs(tower, hidden, "reference")
        for budget in args.budgets:
            for config in methods(budget):
                timing, out = bench.time(lambda c=config, i=inputs: reduce(i, c))
                rows.append(
                    {
                        "batch_size": batch,
                        "method": config.method,
                        "budget": budget,
                        **timing.to_dict(),
                        "tokens": token_stats(out.lengths),
                    }
                )
                bench.log(f"batch {batch} budget {budget} {config.method}: {timing.median_ms:.2f} ms")
    return {"machine": machine, "config": vars(args), "reduce_step": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budgets", type=int, nargs="+", default=[64, 128, 192])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="float32")
    parser.add_argument("--qk-scale", type=float, default=8.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    results = run(args)
    out = args.out or Path(__file__).resolve().parent / "results" / f"reducers_{args.device}.json"
    out.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"\n{'batch':>5} {'method':<14} " + " ".join(f"{b:>14}" for b in args.budgets))
    for batch in args.batch_sizes:
        for name in sorted({r["method"] for r in results["reduce_step"]}):
            cells = [
                next(
                    r
                    for r in results["reduce_step"]
                    if (r["batch_size"], r["method"], r["budget"]) == (batch, name, b)
                )
                for b in args.budgets
            ]
            print(
                f"{batch:>5} {name:<14} "
                + " ".join(f"{c['ms_median']:7.2f} ms/{c['tokens']['mean']:>4.0f}" for c in cells)
            )
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
