"""The command-line options of a Video-LLaVA model and its video input, defined once for every front end.

- :func:`add_video_model_args`: which layout to expect and how the video tower runs (``--source``,
  ``--video-tower``, ``--video-tower-impl``, ``--video-reduction-form``, ``--iqr-scope``, ``--drop-cls``);
  the token-reduction method and its options are :func:`llava.model.token_reduction.args.add_reduction_args`'.
- :func:`add_video_input_args`: how a video becomes pixels (``--num-frames``, ``--video-decoder``,
  ``--video-flip-prob``, ``--seed``).
- :func:`video_load_kwargs`: the :func:`~llava.model.video_loader.load_video_llava` arguments those flags
  give; None stands for "what the checkpoint records".

See docs/Video.md for what each option does.
"""

from __future__ import annotations

import argparse
from typing import Any

from llava.model.multimodal_encoder.languagebind_video import (
    IQR_SCOPES,
    VIDEO_REDUCTION_FORMS,
    VIDEO_TOWER_IMPLS,
)
from llava.model.video_loader import VIDEO_SOURCES
from llava.video import DECODERS


def add_video_model_args(parser: argparse.ArgumentParser) -> None:
    """The Video-LLaVA loading options (defaults: what the checkpoint's files say)."""
    group = parser.add_argument_group("Video-LLaVA model (defaults: what the checkpoint records)")
    group.add_argument(
        "--source", default=None, choices=VIDEO_SOURCES, help="expected checkpoint layout (default: read it)"
    )
    group.add_argument(
        "--video-tower",
        default=None,
        help="LanguageBind_Video_merge folder or Hub id for an 'original' checkpoint (default: its config's)",
    )
    group.add_argument("--video-tower-impl", default=None, choices=VIDEO_TOWER_IMPLS, help="tower network")
    group.add_argument(
        "--video-reduction-form",
        default=None,
        choices=VIDEO_REDUCTION_FORMS,
        help="PruMerge/PruMerge+ count per frame: fixed (1/8 of the patches) or adaptive (IQR)",
    )
    group.add_argument(
        "--iqr-scope",
        default=None,
        choices=IQR_SCOPES,
        help="adaptive form: IQR fence per frame or per video",
    )
    group.add_argument(
        "--drop-cls", action="store_true", help="leave each frame's CLS token out of the prompt"
    )


def add_video_input_args(parser: argparse.ArgumentParser) -> None:
    """How each video is read and transformed."""
    group = parser.add_argument_group("video input")
    group.add_argument(
        "--num-frames",
        "--num_frames",
        dest="num_frames",
        type=int,
        default=None,
        help="frames per video (default: the checkpoint's video_num_frames, 8)",
    )
    group.add_argument("--video-decoder", default="auto", choices=DECODERS, help="decoder (default: auto)")
    group.add_argument(
        "--video-flip-prob",
        type=float,
        default=0.0,
        help="flip each video left-right with this probability (Video-LLaVA: 0.5 at evaluation too; "
        "default 0, deterministic)",
    )
    group.add_argument("--seed", type=int, default=0, help="seed of the flips (with --video-flip-prob)")


def check_video_args(args: argparse.Namespace) -> None:
    """Fails on video option values that are wrong whatever the checkpoint."""
    if args.num_frames is not None and args.num_frames < 1:
        raise ValueError(f"--num-frames must be at least 1, got {args.num_frames}.")
    if not 0.0 <= args.video_flip_prob <= 1.0:
        raise ValueError(f"--video-flip-prob must be in [0, 1], got {args.video_flip_prob}.")


def video_load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The :func:`~llava.model.video_loader.load_video_llava` keywords of :func:`add_video_model_args`' flags."""
    return {
        "source": args.source,
        "video_tower": args.video_tower,
        "impl": args.video_tower_impl,
        "reduction_form": args.video_reduction_form,
        "iqr_scope": args.iqr_scope,
        "keep_cls": False if args.drop_cls else None,
    }
