"""``python -m llava.analysis``: roofline estimate of LLaVA-1.5 prefill/decode with PruMerge."""

from __future__ import annotations

import argparse
import json
import sys

from llava.analysis import CONVENTIONS, PRECISIONS, REDUCTION_TOKENS, estimate, parse_device, resolve_llm
from llava.analysis.roofline import DEVICES, LLM_PRESETS

COLUMNS = (
    ("reduction", "{}"),
    ("visual_tokens", "{}"),
    ("flops_tera", "{:.2f}"),
    ("prefill_ms", "{:.1f}"),
    ("memory_traffic_gb", "{:.2f}"),
    ("weight_memory_gb", "{:.2f}"),
    ("kv_cache_gb", "{:.3f}"),
    ("activation_memory_gb", "{:.2f}"),
    ("total_memory_gb", "{:.2f}"),
    ("decode_ms_per_token", "{:.2f}"),
)


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        prog="python -m llava.analysis",
        description="Roofline (LLM-Viewer style) estimate of LLaVA-1.5 prefill and decode cost with "
        "and without PruMerge visual-token reduction. LLM-only figures; the CLIP tower is reported apart.",
    )
    p.add_argument(
        "--llm",
        default="vicuna-7b",
        help=f"preset ({', '.join(sorted(LLM_PRESETS))}) or a config.json path/dir",
    )
    p.add_argument(
        "--device",
        default="v100",
        help=f"one of {', '.join(DEVICES)}, NAME:TFLOPS:GBPS[:INT8_TOPS], or a JSON file",
    )
    p.add_argument("--device-spec", help="custom device NAME:TFLOPS:GBPS[:INT8_TOPS] (overrides --device)")
    p.add_argument(
        "--precision", default="fp16", choices=sorted(PRECISIONS), help="weight/activation/KV precision"
    )
    p.add_argument(
        "--reduction",
        nargs="+",
        default=["none", "prumerge", "prumerge_plus"],
        choices=sorted(REDUCTION_TOKENS),
        help="token-reduction presets (none=576, prumerge=32, prumerge_plus=144 visual tokens)",
    )
    p.add_argument(
        "--visual-tokens", type=int, nargs="+", help="explicit visual-token counts (override --reduction)"
    )
    p.add_argument("--text-tokens", type=int, default=40, help="text tokens in the prompt (default 40)")
    p.add_argument("--batch", type=int, default=1, help="batch size")
    p.add_argument(
        "--convention",
        default="exact",
        choices=CONVENTIONS,
        help="operator counting: 'exact' charges the SwiGLU activation on the MLP width; 'llm-viewer' on the "
        "hidden width, as LLM-Viewer (and PruMerge's Table 2) does",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    return p


def _configs(args: argparse.Namespace) -> list[tuple[str, int]]:
    """(label, visual tokens) pairs to evaluate."""
    if args.visual_tokens:
        return [(f"tokens={n}", n) for n in args.visual_tokens]
    return [(name, REDUCTION_TOKENS[name]) for name in args.reduction]


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        llm = resolve_llm(args.llm)
        device = parse_device(args.device_spec or args.device)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    rows = [
        estimate(llm, device, args.precision, n, args.text_tokens, args.batch, label, args.convention)
        for label, n in _configs(args)
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row.as_dict()))
        return 0
    print(
        f"# {llm.name} on {device.name}, {args.precision}, {args.text_tokens} text tokens, batch {args.batch}"
    )
    print(
        f"# CLIP ViT-L/14-336 tower (fp16, not included below): {rows[0].clip_flops_tera:.3f} TFLOPs, {rows[0].clip_ms:.2f} ms"
    )
    print("\t".join(name for name, _ in COLUMNS))
    for row in rows:
        data = row.as_dict()
        print("\t".join(fmt.format(data[name]) for name, fmt in COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
