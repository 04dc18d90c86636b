"""``LlavaVideoForCausalLM``: Video-LLaVA, i.e. LLaVA-1.5's Llama and projector with a video tower.

Every video is T frames; the tower encodes them (with temporal attention on the ``languagebind`` path),
reduces each frame as one image through the token-reduction registry, and the projector maps the kept
tokens. The prompt holds ``IMAGE_TOKEN_INDEX`` placeholders, as Video-LLaVA's (its ``<image>`` markers):
either T per video (the published prompt, one per frame, each replaced by its frame's tokens) or one per
video (replaced by the concatenation of its frames' tokens). Either way each frame contributes its own
count, and the splice is :func:`llava.model.llava_arch.splice_visual_tokens`. Images, when the config
names an image tower (``mm_vision_tower``), go through :class:`LlavaLlamaForCausalLM`'s path unchanged.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from transformers.models.llama.modeling_llama import LlamaPreTrainedModel

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model.configuration_llava_video import LlavaVideoConfig
from llava.model.language_model.llava_llama import (
    VISION_TOWER_PREFIX,
    LlavaCausalLMOutput,
    LlavaLlamaForCausalLM,
    LlavaLlamaModel,
)
from llava.model.llava_arch import MultimodalInputs
from llava.model.multimodal_encoder.clip_encoder import resolve_tower_path
from llava.model.multimodal_encoder.languagebind_video import VideoTower, resolve_video_reduction
from llava.model.multimodal_projector.builder import build_vision_projector
from llava.model.token_reduction import ReductionConfig

VIDEO_TOWER_PREFIX = "model.video_tower."


def build_video_tower(
    config: LlavaVideoConfig, load_weights: bool = True, base_dir: str | None = None
) -> VideoTower:
    """The video tower of ``config`` with its per-frame reduction resolved (see ``resolve_video_reduction``)."""
    if not config.mm_video_tower:
        raise ValueError(
            "The config names no video tower: set mm_video_tower to a LanguageBind_Video_merge folder."
        )
    name = resolve_tower_path(str(config.mm_video_tower), base_dir)
    tower = VideoTower(
        name,
        impl=config.mm_video_tower_impl,
        select_layer=config.mm_vision_select_layer,
        keep_cls=config.video_keep_cls,
        tower_config=config.video_tower_config,
    )
    if tower.num_frames != config.video_num_frames and tower.config.add_time_attn:
        raise ValueError(
            f"video_num_frames={config.video_num_frames} but the video tower's temporal embedding has "
            f"{tower.num_frames} frames."
        )
    tower.set_reduction(video_reduction(config, tower.num_patches))
    if load_weights:
        tower.load_model()
    return tower


def video_reduction(config: LlavaVideoConfig, num_patches: int) -> ReductionConfig:
    """The per-frame reduction for ``config.mm_token_reduction`` and the config's video options."""
    return resolve_video_reduction(
        config.mm_token_reduction,
        num_patches,
        config.video_num_frames,
        form=config.video_reduction_form,
        iqr_scope=config.video_iqr_scope,
    )


def concat_frames(
    tokens: torch.Tensor, lengths: torch.Tensor, num_frames: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Each video's frames' tokens one after the other.

    Args:
        tokens: ``[V·T, M, H]`` zero-padded after each frame's length; lengths: ``[V·T]``.

    Returns:
        ``[V, L, H]`` (frame-major, zero-padded) and ``[V]`` lengths (the sum of its frames').
    """
    frames, width, hidden = tokens.shape
    videos = frames // num_frames
    video_lengths = lengths.view(videos, num_frames).sum(dim=1)  # [V]
    valid = torch.arange(width, device=tokens.device)[None] < lengths[:, None]  # [V·T, M]
    offset = (video_lengths.cumsum(0) - video_lengths).repeat_interleave(num_frames)  # [V·T] video start
    position = valid.long().cumsum(dim=1) - 1 + (lengths.cumsum(0) - lengths - offset)[:, None]  # [V·T, M]
    longest = int(video_lengths.max()) if videos else 0  # the one host sync
    video_of = torch.arange(videos, device=tokens.device).repeat_interleave(num_frames)[:, None]  # [V·T, 1]
    slot = (video_of * longest + position)[valid]  # [Σ lengths] flat destinations
    out = tokens.new_zeros(videos * longest, hidden).index_copy_(0, slot, tokens[valid])
    return out.view(videos, longest, hidden), video_lengths


class LlavaVideoLlamaModel(LlavaLlamaModel):
    """The Llama decoder, the projector, the video tower, and the image tower when the config names one."""

    config_class = LlavaVideoConfig

    def __init__(self, config: LlavaVideoConfig) -> None:
        config = LlavaVideoConfig.from_object(config)
        super().__init__(config)
        if config.mm_video_tower:
            self.video_tower = build_video_tower(config, load_weights=False)
            if not hasattr(self, "mm_projector"):
                self.mm_projector = build_vision_projector(config)

    def get_video_tower(self) -> VideoTower | None:
        return getattr(self, "video_tower", None)


class LlavaVideoForCausalLM(LlavaLlamaForCausalLM):
    """Video-LLaVA: ``forward``, ``generate`` and ``prepare_multimodal_inputs`` take ``videos``.

    ``videos``: ``[V, 3, T, H, W]`` (``llava.video.languagebind_video_transform``'s layout, stacked) or
    ``[V, T, 3, H, W]``; the prompts hold, in order over the batch, T placeholders per video or one.
    A call takes ``images`` or ``videos``, not both.
    """

    config_class = LlavaVideoConfig
    _keys_to_ignore_on_load_missing = [r"model\.vision_tower\.", r"model\.video_tower\."]
    _keys_to_ignore_on_load_unexpected = [
        r"rotary_emb\.inv_freq",
        r"model\.vision_tower\.",
        r"model\.video_tower\.",
        r"model\.image_tower\.",
    ]

    def __init__(self, config: LlavaVideoConfig) -> None:
        config = LlavaVideoConfig.from_object(config)
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlavaVideoLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_video_tower(self) -> VideoTower | None:
        return self.model.get_video_tower()

    def _require_video_tower(self) -> VideoTower:
        tower = self.get_video_tower()
        if tower is None:
            raise ValueError("This model has no video tower (its config sets no mm_video_tower).")
        return tower

    @property
    def video_reduction(self) -> ReductionConfig:
        """The per-frame reduction the video tower runs (``mm_token_reduction`` resolved for video)."""
        return self._require_video_tower().reduction

    def set_token_reduction(
        self,
        reduction: ReductionConfig | dict[str, Any] | str | None,
        form: str | None = None,
        iqr_scope: str | None = None,
    ) -> ReductionConfig:
        """Switches the reduction (and optionally ``video_reduction_form`` / ``video_iqr_scope``).

        Records ``reduction`` in ``config.mm_token_reduction``; the video tower runs it resolved per frame
        (returned), the image tower (if any) as given.
        """
        reduction = ReductionConfig.from_value(reduction)
        tower = self._require_video_tower()
        resolved = resolve_video_reduction(
            reduction,
            tower.num_patches,
            self.config.video_num_frames,
            form=form or self.config.video_reduction_form,
            iqr_scope=iqr_scope or self.config.video_iqr_scope,
        )
        tower.set_reduction(resolved)
        if self.get_vision_tower() is not None:
            self.get_vision_tower().set_reduction(reduction)
        self.config.mm_token_reduction = reduction.to_dict()
        self.config.video_reduction_form = form or self.config.video_reduction_form
        self.config.video_iqr_scope = iqr_scope or self.config.video_iqr_scope
        return resolved

    def encode_videos(
        self, videos: torch.Tensor, frames_first: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Projected tokens ``[V·T, M, H]`` (zero after each length), lengths ``[V·T]`` and T."""
        out = self._require_video_tower()(videos, frames_first)
        projector = self.model.mm_projector
        dtype = next(projector.parameters(), out.tokens).dtype
        tokens = projector(out.tokens.to(dtype))  # [V·T, M, H]
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None] < out.lengths[:, None]
        return tokens * valid[..., None].to(tokens.dtype), out.lengths, out.num_frames

    def prepare_multimodal_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        images: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        padding_side: str | None = None,
        videos: torch.Tensor | None = None,
        frames_first: bool | None = None,
    ) -> MultimodalInputs:
        """Encodes ``videos`` (or ``images``, as LLaVA-1.5) and splices them into ``input_ids``.

        With videos, each prompt's placeholders are T per video (frame f replaces the video's f-th) or
        one per video (its frames' tokens concatenated); ``num_visual_tokens`` counts every spliced token.
        """
        if videos is None:
            return super().prepare_multimodal_inputs(input_ids, attention_mask, images, labels, padding_side)
        if images is not None and len(images) > 0:
            raise ValueError(
                "Pass images or videos in one call, not both (both use the <image> placeholder)."
            )
        tokens, lengths, num_frames = self.encode_videos(videos, frames_first)
        real = (
            attention_mask.bool()
            if attention_mask is not None
            else torch.ones_like(input_ids, dtype=torch.bool)
        )
        placeholders = int(((input_ids == IMAGE_TOKEN_INDEX) & real).sum())
        num_videos = len(lengths) // num_frames
        if placeholders == num_videos and num_frames > 1:
            tokens, lengths = concat_frames(tokens, lengths, num_frames)
        elif placeholders != len(lengths):
            raise ValueError(
                f"Video features and video tokens do not match: the prompts hold {placeholders} <image> "
                f"placeholder(s) for {num_videos} video(s) of {num_frames} frames; give {num_frames} per video "
                "(one per frame, Video-LLaVA's prompt) or one per video."
            )
        return self.splice(input_ids, attention_mask, labels, tokens, lengths, padding_side)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        images: torch.Tensor | None = None,
        videos: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> LlavaCausalLMOutput:
        """:meth:`LlavaLlamaForCausalLM.forward`, after splicing ``videos`` when given."""
        if videos is None or inputs_embeds is not None:
            return super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                labels=labels,
                images=images,
                **kwargs,
            )
        spliced = self.prepare_multimodal_inputs(input_ids, attention_mask, images, labels, videos=videos)
        out = super().forward(
            attention_mask=spliced.attention_mask,
            position_ids=spliced.position_ids,
            inputs_embeds=spliced.inputs_embeds,
            labels=spliced.labels,
            **kwargs,
        )
        out.truncated, out.num_visual_tokens = spliced.truncated, spliced.num_visual_tokens
        return out

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_sizes: Any = None,
        attention_mask: torch.Tensor | None = None,
        videos: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """:meth:`LlavaLlamaForCausalLM.generate`, with ``videos`` spliced once, left-padded. New tokens only."""
        if videos is None or inputs is None:
            return super().generate(
                inputs, images=images, image_sizes=image_sizes, attention_mask=attention_mask, **kwargs
            )
        spliced = self.prepare_multimodal_inputs(
            inputs, attention_mask, images, padding_side="left", videos=videos
        )
        return self.generate_spliced(spliced, **kwargs)

    def save_pretrained(self, save_directory: Any, state_dict: dict | None = None, **kwargs: Any) -> None:
        """Saves without the image and video towers (they load from ``mm_vision_tower`` / ``mm_video_tower``)."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        towers = (VISION_TOWER_PREFIX, VIDEO_TOWER_PREFIX)
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(towers)}
        super().save_pretrained(save_directory, state_dict=state_dict, **kwargs)


__all__ = [
    "LlavaVideoForCausalLM",
    "LlavaVideoLlamaModel",
    "build_video_tower",
    "concat_frames",
    "video_reduction",
]
