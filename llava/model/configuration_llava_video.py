"""``LlavaVideoConfig``: ``LlavaConfig`` plus Video-LLaVA's video tower, each field declared once with its default.

Written to ``config.json`` with ``model_type`` ``llava_video_llama``. ``mm_token_reduction`` records the
reduction as chosen (e.g. ``{"method": "prumerge", ...}``); the video tower runs it per frame after
:func:`~llava.model.multimodal_encoder.languagebind_video.resolve_video_reduction` applies
``video_reduction_form`` and ``video_iqr_scope`` (docs/Video.md).
"""

from typing import Any

from huggingface_hub.dataclasses import strict

from llava.model.configuration_llava import LlavaConfig
from llava.model.multimodal_encoder.languagebind_video import LanguageBindVideoConfig


@strict
class LlavaVideoConfig(LlavaConfig):
    """A :class:`LlavaConfig` with a video tower. ``mm_vision_tower`` (optional) is the image tower."""

    model_type = "llava_video_llama"

    #: The video tower's folder (``LanguageBind_Video_merge``, or CLIP vision weights for ``clip``); a
    #: relative path resolves against the checkpoint. None: no video tower.
    mm_video_tower: str | None = None
    #: ``languagebind`` (temporal attention, the published network) or ``clip`` (frames through plain
    #: CLIP, transformers' ``VideoLlavaForConditionalGeneration``).
    mm_video_tower_impl: str = "languagebind"
    #: Frames per video (T).
    video_num_frames: int = 8
    #: Each frame's CLS goes to the LLM in front of its tokens (Video-LLaVA); False drops it.
    video_keep_cls: bool = True
    #: PruMerge / PruMerge+ count on video: ``fixed`` (1/8 of each frame's patches) or ``adaptive`` (IQR).
    video_reduction_form: str = "fixed"
    #: The IQR fence of the adaptive form: per ``frame`` or pooled over each ``video``.
    video_iqr_scope: str = "frame"
    #: The video tower's own config, to build it without reading ``mm_video_tower``. Not written when None.
    video_tower_config: LanguageBindVideoConfig | dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.video_tower_config, dict):
            self.video_tower_config = LanguageBindVideoConfig.from_dict(
                {k: v for k, v in self.video_tower_config.items() if k != "model_type"}
            )
        super().__post_init__(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """``LlavaConfig.to_dict``, without ``video_tower_config`` when it is None."""
        output = super().to_dict()
        if output.get("video_tower_config") is None:
            output.pop("video_tower_config", None)
        return output


__all__ = ["LlavaVideoConfig"]
