"""Command-line options that select a token reduction, shared by the CLI, the runners and training scripts."""

from __future__ import annotations

import argparse

from llava.model.token_reduction.config import PLUS_FORMS, VARIANTS, ReductionConfig


def add_reduction_args(parser: argparse.ArgumentParser) -> None:
    """Adds ``--token-reduction``, ``--reduction-variant``, ``--reduction-form`` and ``--reduction-budget``."""
    group = parser.add_argument_group("token reduction (overrides the checkpoint's mm_token_reduction)")
    group.add_argument("--token-reduction", default=None, metavar="METHOD", help="e.g. none, prumerge")
    group.add_argument("--reduction-variant", default=None, choices=VARIANTS)
    group.add_argument("--reduction-form", default=None, choices=PLUS_FORMS, help="PruMerge+ only")
    group.add_argument(
        "--reduction-budget",
        type=int,
        default=None,
        metavar="N",
        help="fixed number of visual tokens per image; 0 = none (each method's adaptive count)",
    )


def reduction_from_args(recorded: ReductionConfig, args: argparse.Namespace) -> ReductionConfig | None:
    """The checkpoint's reduction updated by the ``--token-reduction`` / ``--reduction-*`` flags.

    Returns None when no such flag was given. Switching method drops the recorded ``grid`` (a
    ``spatial`` option); switching to ``none`` also drops the recorded budget (see
    :meth:`ReductionConfig.replace`); ``--reduction-budget 0`` clears it.
    """
    flags = {
        "method": args.token_reduction,
        "variant": args.reduction_variant,
        "form": args.reduction_form,
        "budget": args.reduction_budget,
    }
    if all(value is None for value in flags.values()):
        return None
    if args.reduction_budget == 0:  # clear the recorded budget, then apply the other flags
        recorded = ReductionConfig.from_value({**recorded.to_dict(), "budget": None, "ratio": None})
        flags["budget"] = None
    return recorded.replace(**flags)  # all flags at once, so e.g. a new method gets its budget
