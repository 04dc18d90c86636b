"""``python -m llava.quickstart``: train and evaluate a tiny LLaVA with PruMerge on synthetic shapes (CPU).

See :mod:`llava.quickstart.pipeline` for the stages; ``--preset reduced`` is the few-sample version the
tests run.
"""

from __future__ import annotations

import argparse
import sys

from llava.quickstart.pipeline import PRESETS, StageError, run_quickstart


def build_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m llava.quickstart",
        description="Generate a synthetic visual-instruction dataset, pretrain a small vision tower, pretrain the "
        "projector and LoRA-finetune a small LLaVA with PruMerge+ through the published training scripts, then "
        "evaluate none / prumerge / prumerge_plus / sequential / spatial with the benchmark runners and scorers. "
        "A second run with the same --output-dir reuses every finished stage.",
    )
    parser.add_argument(
        "--output-dir",
        default="checkpoints/quickstart",
        help="where everything goes (default: checkpoints/quickstart)",
    )
    parser.add_argument(
        "--preset",
        default="full",
        choices=sorted(PRESETS),
        help="full (about 8 minutes on 2 CPU cores) or reduced (a smoke run)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point; 0 on success, 1 when a stage fails (its log is named)."""
    args = build_parser().parse_args(argv)
    try:
        run_quickstart(args.output_dir, PRESETS[args.preset])
    except StageError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
