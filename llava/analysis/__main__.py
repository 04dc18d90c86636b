"""``python -m llava.analysis``: roofline estimate of LLaVA-1.5 prefill/decode with PruMerge, per-layer
schedules of in-LLM pruning (FastV, ATP-LLaVA) and Video-LLaVA's 8-frame input."""

from __future__ import annotations

import argparse
import json
import sys

from llava.analysis import CONVENTIONS, PRECISIONS, REDUCTION_TOKENS, estimate, parse_device, resolve_llm
from llava.analysis.roofline import CLIP_TOKENS, DEVICES, LLM_PRESETS
from llava.analysis.schedule import fastv_schedule, parse_fastv, parse_schedule, video_tokens

COLUMNS = (
    ("reduction", "{}"),
    ("visual_tokens", "{}"),
    ("mean_visual_tokens", "{:.1f}"),
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
        help="token-reduction presets (none=576, prumerge=32, prumerge_plus=144 visual tokens; with --frames: "
        "per frame, see --frames)",
    )
    p.add_argument(
        "--visual-tokens", type=int, nargs="+", help="explicit visual-token counts (override --reduction)"
    )
    _add_schedule_args(p)
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


def _add_schedule_args(p: argparse.ArgumentParser) -> None:
    """Per-layer schedules (ATP, FastV) and the video shape."""
    p.add_argument(
        "--schedule",
        nargs="+",
        default=[],
        metavar="[NAME=]SCHEDULE",
        help="in-LLM pruning (ATP, FastV): the visual tokens of each decoder layer, as COUNTxLAYERS runs, e.g. "
        "atp-144=576x4,106x10,81x10,19x8; one count per layer of --llm. Each layer is costed on its own tokens; "
        "rows are added to the presets",
    )
    p.add_argument(
        "--fastv",
        nargs="+",
        default=[],
        metavar="K:R",
        help="FastV as run here (--reduction-llm-layer K --reduction-ratio R): layers 0..K on every visual "
        "token, the later ones on the share R of them, e.g. 2:0.5; rows are added to the presets",
    )
    p.add_argument(
        "--frames",
        type=int,
        default=None,
        help="a video of this many frames (Video-LLaVA: 8): the presets become none = frames x "
        "--tokens-per-frame, prumerge / prumerge_plus = the fixed 1/8 forms per frame (CLS kept: 272 and "
        "<= 528 for 8 x 257), and the tower cost is for every frame",
    )
    p.add_argument(
        "--tokens-per-frame",
        type=int,
        default=257,
        help="tokens per frame with --frames, CLS included (default 257: 16 x 16 patches + CLS)",
    )


def _configs(args: argparse.Namespace, layers: int) -> list[tuple[str, int, list[int] | None]]:
    """(label, visual tokens, per-layer schedule or None) of every row to evaluate.

    Raises:
        ValueError: a schedule or ``--fastv`` value that does not fit the LLM, or a bad video shape.
    """
    presets = REDUCTION_TOKENS if args.frames is None else video_tokens(args.frames, args.tokens_per_frame)
    if args.visual_tokens:
        rows = [(f"tokens={n}", n, None) for n in args.visual_tokens]
    else:
        rows = [(name, presets[name], None) for name in args.reduction]
    for item in args.schedule:
        name, _, text = item.rpartition("=")
        counts = parse_schedule(text)
        if len(counts) != layers:
            raise ValueError(f"--schedule {item!r} has {len(counts)} layers; the LLM has {layers}")
        rows.append((name or "schedule", counts[0], counts))
    for item in args.fastv:
        k, ratio = parse_fastv(item)
        counts = fastv_schedule(presets["none"], layers, k, ratio)
        rows.append((f"fastv K={k} R={ratio:g}", counts[0], counts))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Entry point."""
    args = build_parser().parse_args(argv)
    try:
        llm = resolve_llm(args.llm)
        device = parse_device(args.device_spec or args.device)
        configs = _configs(args, llm.layers)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    tower = (1, CLIP_TOKENS) if args.frames is None else (args.frames, args.tokens_per_frame)
    rows = [
        estimate(
            llm,
            device,
            args.precision,
            n,
            args.text_tokens,
            args.batch,
            label,
            args.convention,
            schedule,
            *tower,
        )
        for label, n, schedule in configs
    ]
    if args.json:
        for row in rows:
            print(json.dumps(row.as_dict()))
        return 0
    print(
        f"# {llm.name} on {device.name}, {args.precision}, {args.text_tokens} text tokens, batch {args.batch}"
    )
    shape = "" if args.frames is None else f", {args.frames} frames x {args.tokens_per_frame} tokens"
    print(
        f"# CLIP ViT-L/14 tower{shape} (fp16, not included below): {rows[0].clip_flops_tera:.3f} TFLOPs, "
        f"{rows[0].clip_ms:.2f} ms"
    )
    print("\t".join(name for name, _ in COLUMNS))
    for row in rows:
        data = row.as_dict()
        print("\t".join(fmt.format(data[name]) for name, fmt in COLUMNS))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
