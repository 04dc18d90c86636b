"""Video-LLaVA's video pre-processing (``LanguageBindVideoProcessor``), in plain torch, without torchvision.

The published transform, applied to the sampled uint8 frames ``[T, H, W, 3]`` in this order:

1. ``x / 255`` (float32), then OpenAI CLIP's normalisation per channel;
2. short side to 224 (``ShortSideScale``): if ``W < H``: ``(floor(H / W * 224), 224)``, else
   ``(224, floor(W / H * 224))``, with ``torch.nn.functional.interpolate(mode="bilinear",
   align_corners=False)`` and no anti-aliasing;
3. centre crop 224 (``CenterCropVideo``): top ``round((h - 224) / 2)``, left ``round((w - 224) / 2)``,
   with Python's ``round`` (halves to even, so an offset of 0.5 gives 0 and 1.5 gives 2);
4. a horizontal flip of the whole clip with probability 0.5 upstream, random even at evaluation; here
   ``flip_prob`` defaults to 0 (deterministic) and takes a ``torch.Generator`` to imitate it reproducibly.

Normalising before resizing differs from resizing first only by float rounding (bilinear weights sum
to one), but the order is kept. :func:`video_pixel_values` returns frames first, ``[T, 3, 224, 224]``;
:func:`languagebind_video_transform` returns the tower's layout, channels first, ``[3, T, 224, 224]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

#: OpenAI CLIP's normalisation, as in LanguageBind's video processor.
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
#: The side of the square the video tower takes.
VIDEO_SIZE = 224


def short_side_size(height: int, width: int, size: int = VIDEO_SIZE) -> tuple[int, int]:
    """``(new_h, new_w)`` with the short side ``size`` and the long side floored (pytorchvideo's ``ShortSideScale``)."""
    if width < height:
        return int(math.floor(height / width * size)), size
    return size, int(math.floor(width / height * size))


def center_crop_offsets(height: int, width: int, size: int = VIDEO_SIZE) -> tuple[int, int]:
    """``(top, left)`` of the centre ``size`` crop: ``round((h - size) / 2)`` with Python's ``round``."""
    if height < size or width < size:
        raise ValueError(f"Cannot crop {size}x{size} from {height}x{width} frames")
    return int(round((height - size) / 2.0)), int(round((width - size) / 2.0))


def video_pixel_values(
    frames: np.ndarray | torch.Tensor,
    size: int = VIDEO_SIZE,
    mean: tuple[float, float, float] = OPENAI_CLIP_MEAN,
    std: tuple[float, float, float] = OPENAI_CLIP_STD,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Video-LLaVA's pixel values of uint8 RGB ``frames [T, H, W, 3]``: float32 ``[T, 3, size, size]``.

    ``flip_prob`` > 0 flips all frames left-right together with that probability, drawing one number
    from ``generator`` (upstream draws with probability 0.5 at evaluation too; the default 0 never flips).
    """
    x = torch.as_tensor(np.asarray(frames)) if not isinstance(frames, torch.Tensor) else frames
    if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"Expected uint8 RGB frames [T, H, W, 3], got {x.dtype} {tuple(x.shape)}")
    if x.shape[0] == 0 or x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"Expected at least one non-empty frame, got shape {tuple(x.shape)}")
    if not 0.0 <= flip_prob <= 1.0:
        raise ValueError(f"flip_prob must be in [0, 1], got {flip_prob}")
    # [T, H, W, 3] -> [T, 3, H, W]: each (frame, channel) plane is resized on its own, as upstream's [3, T, H, W].
    x = x.permute(0, 3, 1, 2).to(torch.float32) / 255.0
    mean_t = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    x = (x - mean_t) / std_t
    height, width = x.shape[-2:]
    new_h, new_w = short_side_size(height, width, size)
    x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False, antialias=False)
    top, left = center_crop_offsets(new_h, new_w, size)
    x = x[..., top : top + size, left : left + size]
    if flip_prob > 0.0 and float(torch.rand((), generator=generator)) < flip_prob:
        x = x.flip(-1)
    return x.contiguous()


def languagebind_video_transform(
    frames: np.ndarray | torch.Tensor,
    size: int = VIDEO_SIZE,
    flip_prob: float = 0.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """:func:`video_pixel_values` in the video tower's layout, channels then time: ``[3, T, size, size]``."""
    pixels = video_pixel_values(frames, size=size, flip_prob=flip_prob, generator=generator)
    return pixels.permute(1, 0, 2, 3).contiguous()
