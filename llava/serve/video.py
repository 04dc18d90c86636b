"""What the front ends (CLI, web demo, visualiser) share for Video-LLaVA checkpoints.

- :func:`add_video_args`: the video options, defined once for every command line;
- :func:`video_layout`: whether a checkpoint is a Video-LLaVA one (read from its ``config.json`` by
  :func:`llava.model.video_loader.video_checkpoint_layout`), and :func:`check_media` for the clear
  error when a video meets an image checkpoint or an image a video checkpoint;
- :func:`load_video_model`: :func:`~llava.model.video_loader.load_video_llava` with the reduction flags
  applied to the checkpoint's recorded reduction, as the image loader applies them;
- :func:`read_video`: the 8 frames of a video file, a folder of frames or a ``.npy`` array;
  :func:`video_pixels`: their pixels at the video tower's size; :func:`frame_tokens`: the tokens each
  frame kept; :func:`video_views`: the frames as the tower sees them (for drawing);
- :func:`describe_video`: the one-line token report.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from llava.model.loader import LoadedModel, resolve_checkpoint
from llava.model.multimodal_encoder.languagebind_video import VideoTower
from llava.model.token_reduction.args import reduction_changes
from llava.model.token_reduction.config import ReductionConfig
from llava.model.video_args import add_video_model_args, video_load_kwargs
from llava.model.video_loader import load_video_llava, video_checkpoint_layout
from llava.video import (
    NUM_FRAMES,
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    languagebind_video_transform,
    load_video,
)

VIDEO_SOURCES_HELP = "a video file (.mp4, .avi, .mov, .mkv ...), a folder of frame images or a .npy array"


def add_video_args(parser: argparse.ArgumentParser) -> None:
    """The options of a Video-LLaVA checkpoint (default: what the checkpoint's config records); the same
    flags as the video QA runner's (:func:`llava.model.video_args.add_video_model_args`)."""
    add_video_model_args(parser)


def video_layout(model_path: str) -> str | None:
    """``original``, ``hf`` or ``ours`` for a Video-LLaVA checkpoint; None for any other folder.

    Raises:
        OSError: the checkpoint is neither a local folder nor on the Hub (cache).
    """
    folder = resolve_checkpoint(model_path)
    try:
        return video_checkpoint_layout(folder)
    except (ValueError, FileNotFoundError):  # not a video checkpoint: the image loader explains the rest
        return None


def check_media(model_path: str, video: bool) -> str | None:
    """The checkpoint's video layout (None: an image checkpoint), after checking that it takes the input.

    Raises:
        ValueError: a video for an image checkpoint, or an image for a Video-LLaVA checkpoint.
    """
    layout = video_layout(model_path)
    if video and layout is None:
        raise ValueError(
            f"{model_path} is not a Video-LLaVA checkpoint (its config.json names no video tower), so it "
            "cannot take a video: pass a Video-LLaVA checkpoint, or an image with --image-file."
        )
    if not video and layout is not None:
        raise ValueError(
            f"{model_path} is a Video-LLaVA checkpoint ({layout} layout): give it a video with --video-file "
            f"({VIDEO_SOURCES_HELP})."
        )
    return layout


def load_video_model(args: argparse.Namespace, device: str, dtype: torch.dtype) -> LoadedModel:
    """Loads a Video-LLaVA checkpoint with the :func:`add_video_args` options and the reduction flags.

    The ``--token-reduction`` / ``--reduction-*`` flags change the checkpoint's recorded reduction (as for
    images); the model then runs it per frame (``model.video_reduction``).
    """
    return load_video_llava(
        args.model_path,
        **video_load_kwargs(args),
        device=device,
        dtype=dtype,
        reduction_changes=reduction_changes(args),
    )


def read_video(path: str | Path, num_frames: int = NUM_FRAMES) -> np.ndarray:
    """The ``num_frames`` frames Video-LLaVA samples from ``path``, uint8 ``[T, H, W, 3]``.

    Raises:
        FileNotFoundError, ValueError, ImportError: see :func:`llava.video.load_video` (each names the file).
    """
    return load_video(path, num_frames=num_frames)


def video_pixels(frames: np.ndarray, tower: VideoTower) -> torch.Tensor:
    """Pixels ``[1, 3, T, S, S]`` of ``frames`` at the tower's input size ``S``, on its device and in its dtype.

    Raises:
        ValueError: the tower takes another number of frames (its temporal embedding's).
    """
    if len(frames) != tower.num_frames:
        raise ValueError(f"The video tower takes {tower.num_frames} frames per video, got {len(frames)}.")
    pixels = languagebind_video_transform(frames, size=tower.config.image_size)  # [3, T, S, S]
    return pixels[None].to(device=tower.device, dtype=tower.dtype)


def video_views(pixels: torch.Tensor) -> np.ndarray:
    """``[1, 3, T, S, S]`` normalised pixels back to uint8 ``[T, S, S, 3]``: the frames as the tower sees them."""
    mean = torch.tensor(OPENAI_CLIP_MEAN).view(3, 1, 1, 1)
    std = torch.tensor(OPENAI_CLIP_STD).view(3, 1, 1, 1)
    rgb = (pixels[0].float().cpu() * std + mean).clamp(0, 1) * 255  # [3, T, S, S]
    return rgb.round().to(torch.uint8).permute(1, 2, 3, 0).numpy()


@dataclass
class FrameTokens:
    """What the video tower kept of each frame of one video.

    Attributes:
        counts: tokens per frame handed to the language model (the frame's CLS included unless dropped).
        kept: per frame, the patch indices (row-major over the tower's grid) of the kept tokens, in
            output order; the CLS and the reducer's extra token have no patch.
    """

    counts: list[int]
    kept: list[list[int]]

    @property
    def total(self) -> int:
        return sum(self.counts)


@torch.no_grad()
def frame_tokens(tower: VideoTower, pixels: torch.Tensor) -> FrameTokens:
    """Runs the tower (with its per-frame reducer) on one video ``[1, 3, T, S, S]``."""
    out = tower(pixels.to(device=tower.device, dtype=tower.dtype))
    kept = [[int(i) for i in row if i >= 0] for row in out.indices.cpu().tolist()]
    return FrameTokens([int(n) for n in out.lengths.tolist()], kept)


def describe_video(pixels: torch.Tensor, tokens: FrameTokens, reduction: ReductionConfig) -> str:
    """The one-line report, e.g. ``[llava] video: 8 frames x 3 x 224 x 224 -> 272 visual tokens
    (prumerge/reference/budget=33); per frame: 34 34 34 34 34 34 34 34``."""
    channels, frames, height, width = pixels.shape[1:]
    per_frame = " ".join(str(n) for n in tokens.counts)
    return (
        f"[llava] video: {frames} frames x {channels} x {height} x {width} -> {tokens.total} visual tokens "
        f"({reduction.describe()}); per frame: {per_frame}"
    )


__all__ = [
    "FrameTokens",
    "add_video_args",
    "check_media",
    "describe_video",
    "frame_tokens",
    "load_video_model",
    "read_video",
    "video_pixels",
    "video_layout",
    "video_views",
]
