"""Video input for Video-LLaVA: the sampled frames (:mod:`llava.video.io`) and their pixels
(:mod:`llava.video.transforms`). See docs/Video.md."""

from llava.video.io import (
    DECODERS,
    NUM_FRAMES,
    VIDEO_EXTENSIONS,
    available_decoders,
    find_video,
    load_video,
    sample_frame_indices,
)
from llava.video.transforms import (
    OPENAI_CLIP_MEAN,
    OPENAI_CLIP_STD,
    VIDEO_SIZE,
    languagebind_video_transform,
    video_pixel_values,
)

__all__ = [
    "DECODERS",
    "NUM_FRAMES",
    "OPENAI_CLIP_MEAN",
    "OPENAI_CLIP_STD",
    "VIDEO_EXTENSIONS",
    "VIDEO_SIZE",
    "available_decoders",
    "find_video",
    "languagebind_video_transform",
    "load_video",
    "sample_frame_indices",
    "video_pixel_values",
]
