"""Builds the vision tower named by a config's upstream ``mm_*`` fields."""

from __future__ import annotations

from typing import Any

from llava.model.configuration_llava import LlavaConfig
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower, resolve_tower_path


def build_vision_tower(
    cfg: LlavaConfig | Any, load_weights: bool = True, base_dir: str | None = None
) -> CLIPVisionTower:
    """The CLIP vision tower (with its token reducer) described by ``cfg``.

    Args:
        cfg: a :class:`LlavaConfig`, whose ``mm_vision_tower`` (a Hub id or a local CLIP folder),
            ``mm_vision_select_layer``, ``mm_vision_select_feature``, ``mm_token_reduction`` and
            ``vision_config`` (a ``CLIPVisionConfig`` to build the tower from instead of reading one)
            it reads; or any object with some of those fields (see :meth:`LlavaConfig.from_object`).
        load_weights: load the pretrained CLIP weights (False leaves them randomly initialised, for
            model construction before a checkpoint is loaded, or for benchmarks).
        base_dir: a folder against which a relative ``mm_vision_tower`` is resolved.

    Returns:
        A :class:`CLIPVisionTower`; calling it on pixel values ``[B, 3, H, W]`` returns
        ``tokens [B, M, D]``, ``lengths [B]`` and ``indices [B, M]``.
    """
    config = LlavaConfig.from_object(cfg)
    name = config.mm_vision_tower
    if not name:
        raise ValueError("The config names no vision tower: set mm_vision_tower to a CLIP Hub id or folder.")
    name = resolve_tower_path(str(name), base_dir)
    tower = CLIPVisionTower(
        name,
        select_layer=config.mm_vision_select_layer,
        select_feature=config.mm_vision_select_feature,
        reduction=config.mm_token_reduction,
        vision_config=config.vision_config,
    )
    if load_weights:
        tower.load_model()
    return tower
