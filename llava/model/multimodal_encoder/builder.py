"""Builds the vision tower named by a config's upstream ``mm_*`` fields."""

from __future__ import annotations

from typing import Any

from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower, resolve_tower_path


def build_vision_tower(cfg: Any, load_weights: bool = True, base_dir: str | None = None) -> CLIPVisionTower:
    """The CLIP vision tower (with its token reducer) described by ``cfg``.

    Args:
        cfg: any object with the upstream fields ``mm_vision_tower`` (or ``vision_tower``: a Hub id or a
            local CLIP folder), ``mm_vision_select_layer`` (default −2), ``mm_vision_select_feature``
            (default ``patch``) and ``mm_token_reduction`` (a dict with ``method``, ``variant`` and
            options, a method name, or None for no reduction). A ``vision_config`` attribute (a
            ``CLIPVisionConfig``) builds the tower from that config instead of reading one.
        load_weights: load the pretrained CLIP weights (False leaves them randomly initialised, for
            model construction before a checkpoint is loaded, or for benchmarks).
        base_dir: a folder against which a relative ``mm_vision_tower`` is resolved.

    Returns:
        A :class:`CLIPVisionTower`; calling it on pixel values ``[B, 3, H, W]`` returns
        ``tokens [B, M, D]``, ``lengths [B]`` and ``indices [B, M]``.
    """
    name = getattr(cfg, "mm_vision_tower", None) or getattr(cfg, "vision_tower", None)
    if not name:
        raise ValueError("The config names no vision tower: set mm_vision_tower to a CLIP Hub id or folder.")
    name = resolve_tower_path(str(name), base_dir)
    tower = CLIPVisionTower(
        name,
        select_layer=getattr(cfg, "mm_vision_select_layer", -2),
        select_feature=getattr(cfg, "mm_vision_select_feature", "patch"),
        reduction=getattr(cfg, "mm_token_reduction", None),
        vision_config=getattr(cfg, "vision_config", None),
    )
    if load_weights:
        tower.load_model()
    return tower
