"""Video-LLaVA's video tower: LanguageBind's CLIP ViT with temporal attention, plus per-frame token reduction.

``LanguageBind_Video_merge`` is a CLIP ViT-L/14 at 224 px in which every encoder layer first mixes the
frames of a video: for each token position (CLS included) the T frame vectors get the layer's temporal
embedding and one residual multi-head attention over time, then the usual CLIP layer runs on each
frame's 257 tokens. With ``add_time_attn=False`` (``impl="clip"``, transformers'
``VideoLlavaForConditionalGeneration``) the frames go through plain CLIP independently.

Module and weight names follow the checkpoint (``vision_model.`` removed): ``embeddings``,
``pre_layrnorm``, ``encoder.layers.{l}.{self_attn,layer_norm1,mlp,layer_norm2}`` as in
``CLIPVisionModel``, plus ``encoder.layers.{l}.{temporal_embedding,temporal_layer_norm1,temporal_attn}``.

:class:`VideoTower` reduces every frame as one image through the registry of
:mod:`llava.model.token_reduction` (N = 256 patches per frame at 224/14) and keeps each frame's CLS in
front of its tokens, as Video-LLaVA feeds the LLM all 257 tokens of ``hidden_states[-2]``. See docs/Video.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from huggingface_hub.dataclasses import strict
from torch import nn
from transformers import CLIPVisionConfig
from transformers.models.clip.modeling_clip import CLIPAttention, CLIPEncoderLayer, CLIPVisionEmbeddings

from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower, VisionTowerOutput
from llava.model.token_reduction import ReducerInputs, ReductionConfig, class_attention, get_reducer

#: ``impl`` values: the published tower with temporal attention, or frames through plain CLIP (the HF port).
VIDEO_TOWER_IMPLS = ("languagebind", "clip")
#: How PruMerge / PruMerge+ choose their per-frame count on video (see :func:`resolve_video_reduction`).
VIDEO_REDUCTION_FORMS = ("fixed", "adaptive")
#: Which rows share one IQR fence in the adaptive form: each frame, or all frames of a video.
IQR_SCOPES = ("frame", "video")
TEMPORAL_KEYS = ("temporal_embedding", "temporal_layer_norm1.", "temporal_attn.")


@strict
class LanguageBindVideoConfig(CLIPVisionConfig):
    """``CLIPVisionConfig`` plus LanguageBind's temporal attention switch and its frame count."""

    model_type = "languagebind_video_vision"

    #: A temporal attention block before every encoder layer (False: plain CLIP per frame).
    add_time_attn: bool = True
    #: T, the frames a video has (the temporal embedding's length).
    num_frames: int = 8


class LanguageBindEncoderLayer(CLIPEncoderLayer):
    """A CLIP encoder layer preceded, when ``add_time_attn``, by LanguageBind's temporal block."""

    def __init__(self, config: LanguageBindVideoConfig) -> None:
        super().__init__(config)
        self.add_time_attn = config.add_time_attn
        if self.add_time_attn:
            width = config.hidden_size
            self.temporal_embedding = nn.Parameter(torch.randn(1, config.num_frames, width) * 0.02)
            self.temporal_layer_norm1 = nn.LayerNorm(width, eps=config.layer_norm_eps)
            self.temporal_attn = CLIPAttention(config)

    def temporal(self, hidden: torch.Tensor, num_frames: int) -> torch.Tensor:
        """The temporal block on ``hidden`` ``[V·T, S, D]`` (frames video-major): identity when off."""
        if not self.add_time_attn:
            return hidden
        frames = self.temporal_embedding.shape[1]
        if num_frames not in (1, frames):
            raise ValueError(
                f"This video tower was trained on {frames} frames per video (its temporal embedding); got {num_frames}."
            )
        rows, seq, width = hidden.shape
        videos = rows // num_frames
        x = (
            hidden.view(videos, num_frames, seq, width)
            .transpose(1, 2)
            .reshape(videos * seq, num_frames, width)
        )
        if num_frames > 1:
            x = x + self.temporal_embedding.to(x.dtype)  # [V·S, T, D]
        x = x + self.temporal_attn(self.temporal_layer_norm1(x))[0]  # attention over time per position
        return x.view(videos, seq, num_frames, width).transpose(1, 2).reshape(rows, seq, width)

    def forward(
        self,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        num_frames: int = 1,
        **kwargs,
    ) -> torch.Tensor:
        """``[V·T, S, D]`` → ``[V·T, S, D]``: temporal block, then CLIP's spatial attention and MLP per frame."""
        return super().forward(self.temporal(hidden_states, num_frames), attention_mask, **kwargs)


class LanguageBindVideoEncoder(nn.Module):
    """LanguageBind's video vision model (``CLIPVisionModel``'s module names, plus the temporal blocks)."""

    def __init__(self, config: LanguageBindVideoConfig) -> None:
        super().__init__()
        if config._attn_implementation is None:  # standalone (no PreTrainedModel sets it): torch's SDPA
            config._attn_implementation = "sdpa"
        self.config = config
        width = config.hidden_size
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        layers = [LanguageBindEncoderLayer(config) for _ in range(config.num_hidden_layers)]
        self.encoder = nn.ModuleDict({"layers": nn.ModuleList(layers)})
        self.post_layernorm = nn.LayerNorm(width, eps=config.layer_norm_eps)  # unused; kept for the weights

    @torch.no_grad()
    def reset_buffers(self) -> None:
        """Restores the embeddings' non-persistent ``position_ids`` (``arange``), which no checkpoint holds:
        a model built on the meta device by ``from_pretrained`` leaves them uninitialised here."""
        ids = self.embeddings.position_ids
        ids.copy_(torch.arange(ids.shape[-1], device=ids.device).expand_as(ids))

    def forward(
        self, pixel_values: torch.Tensor, num_frames: int, num_layers: int | None = None
    ) -> list[torch.Tensor]:
        """The hidden states, as ``CLIPVisionModel``'s ``hidden_states``: the embeddings, then each layer's output.

        Args:
            pixel_values: ``[V·T, 3, H, W]`` frames, video-major.
            num_frames: T.
            num_layers: run only the first layers (default: all).

        Returns:
            ``num_layers + 1`` tensors ``[V·T, 1 + N, D]``.
        """
        hidden = self.pre_layrnorm(self.embeddings(pixel_values))  # [V·T, 1 + N, D]
        states = [hidden]
        for layer in self.encoder.layers[:num_layers]:
            hidden = layer(hidden, None, num_frames=num_frames)
            states.append(hidden)
        return states


def to_frames_first(
    videos: torch.Tensor, frames_first: bool | None = None, channels: int = 3
) -> torch.Tensor:
    """``videos`` as ``[V, T, C, H, W]``, from channels-then-time ``[V, C, T, H, W]`` or frames-first.

    The layout is read from where the ``channels`` axis is; when T == C, ``frames_first`` must say it.
    """
    if videos.dim() != 5:
        raise ValueError(
            f"Videos must be [V, 3, T, H, W] or [V, T, 3, H, W]; got shape {tuple(videos.shape)}."
        )
    if frames_first is None:
        first, second = videos.shape[1] == channels, videos.shape[2] == channels
        if first == second:
            raise ValueError(
                f"Cannot tell frames from channels in a video tensor of shape {tuple(videos.shape)}: "
                "pass frames_first=True ([V, T, 3, H, W]) or False ([V, 3, T, H, W])."
            )
        frames_first = second
    return videos if frames_first else videos.transpose(1, 2)


def resolve_video_reduction(
    reduction: ReductionConfig | dict[str, Any] | str | None,
    num_patches: int,
    num_frames: int,
    form: str = "fixed",
    iqr_scope: str = "frame",
) -> ReductionConfig:
    """The per-frame reduction the video tower runs for ``reduction`` (the count rules of docs/Video.md).

    ``form="fixed"`` gives PruMerge and PruMerge+ the 1/8 form when no budget or ratio is set: PruMerge
    ``budget = N // 8 + 1`` (N // 8 centres + its extra token), PruMerge+ ``form="fixed"`` (N // 8 by
    attention + samples at stride 8 + extra). ``form="adaptive"`` leaves the reduction as given (the IQR
    count). ``iqr_scope="video"`` pools the IQR fence over a video's frames (``iqr_group = T``) for the
    methods that count outliers. Other methods run unchanged on each frame. Idempotent.
    """
    if form not in VIDEO_REDUCTION_FORMS:
        raise ValueError(f"video_reduction_form must be one of {VIDEO_REDUCTION_FORMS}, got {form!r}.")
    if iqr_scope not in IQR_SCOPES:
        raise ValueError(f"video_iqr_scope must be one of {IQR_SCOPES}, got {iqr_scope!r}.")
    reduction = ReductionConfig.from_value(reduction)
    counted = reduction.budget is not None or reduction.ratio is not None
    if form == "fixed" and not counted:
        if reduction.method == "prumerge":
            reduction = reduction.replace(budget=num_patches // 8 + 1)
        elif reduction.method == "prumerge_plus":
            reduction = reduction.replace(form="fixed")
    if iqr_scope == "video" and "iqr_group" in get_reducer(reduction.method).options:
        reduction = reduction.replace(iqr_group=num_frames)
    return reduction


@dataclass
class VideoTowerOutput(VisionTowerOutput):
    """:class:`VisionTowerOutput` for the V·T frames of V videos (rows video-major), plus ``num_frames``.

    With ``keep_cls`` each frame's tokens start with its CLS (index −1), so ``lengths`` = 1 + kept tokens.
    """

    num_frames: int = 1


class VideoTower(CLIPVisionTower):
    """The video tower plus a per-frame token reducer (the members the model uses, as :class:`CLIPVisionTower`).

    Args:
        video_tower: the tower's folder (a ``LanguageBind_Video_merge`` folder, or any folder whose
            weights are CLIP vision weights for ``impl="clip"``); recorded, read by :meth:`load_model`.
        impl: ``languagebind`` (temporal attention, as the config says) or ``clip`` (no temporal blocks).
        select_layer: the hidden state fed to the projector (−2).
        reduction: the per-frame reduction, already resolved (:func:`resolve_video_reduction`).
        keep_cls: put each frame's CLS in front of its tokens (Video-LLaVA); False drops it.
        tower_config: the tower's config; default: read from ``video_tower``.
    """

    def __init__(
        self,
        video_tower: str,
        impl: str = "languagebind",
        select_layer: int = -2,
        reduction: ReductionConfig | dict[str, Any] | str | None = None,
        keep_cls: bool = True,
        tower_config: LanguageBindVideoConfig | None = None,
    ) -> None:
        nn.Module.__init__(self)
        if impl not in VIDEO_TOWER_IMPLS:
            raise ValueError(f"mm_video_tower_impl must be one of {VIDEO_TOWER_IMPLS}, got {impl!r}.")
        config = tower_config if tower_config is not None else load_video_tower_config(video_tower)
        if impl == "clip" and config.add_time_attn:
            config = LanguageBindVideoConfig.from_dict({**config.to_dict(), "add_time_attn": False})
        self.vision_tower_name = video_tower
        self.impl = impl
        self.keep_cls = keep_cls
        self.select_layer = select_layer
        self.select_feature = "patch"  # the reducer sees the patches; CLS is put back in front
        self.reduction = ReductionConfig.from_value(reduction)
        self.reducer = get_reducer(self.reduction.method)
        self.vision_tower = LanguageBindVideoEncoder(config)
        self.vision_tower.requires_grad_(False)
        self._check_layers()
        self._check_budget()

    @property
    def num_frames(self) -> int:
        return self.config.num_frames

    def set_reduction(self, reduction: ReductionConfig | dict[str, Any] | str | None) -> None:
        """Switches the per-frame reducer (``reduction`` already resolved for video)."""
        reduction = ReductionConfig.from_value(reduction)
        if reduction.in_llm:
            raise ValueError(
                f"The in-LLM reduction {reduction.method!r} is not available for videos; choose a tower reducer."
            )
        super().set_reduction(reduction)

    def check_reduction(self) -> None:
        """The reducer once on a blank video of one ``iqr_group`` of frames (see :class:`CLIPVisionTower`)."""
        self._check_budget()
        rows, n = self.reduction.iqr_group, self.num_patches
        if rows > 1 and self.num_frames % rows:
            raise ValueError(f"iqr_group={rows} must divide the {self.num_frames} frames of a video.")
        blank = {"device": torch.device("cpu"), "dtype": torch.float32}
        keys = torch.randn(rows, n, 8, generator=torch.Generator().manual_seed(0), **blank)
        attention = torch.full((rows, n), 1.0 / n, **blank)
        self._reduce(ReducerInputs(torch.zeros(rows, n, 8, **blank), attention, keys, self.grid, keys))

    def load_model(self, path: str | None = None) -> None:
        """Loads the tower weights of ``path`` (default: the tower's own folder)."""
        self.load_weights(self.pretrained_state_dict(path))

    def load_weights(self, state: dict[str, torch.Tensor]) -> None:
        """Loads ``state`` (keyed like ``vision_tower``, strict) and checks the reduction."""
        self.vision_tower.load_state_dict(state, strict=True)
        self.vision_tower.reset_buffers()
        self.vision_tower.requires_grad_(False)
        self.check_reduction()

    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """``hidden_states[select_layer]`` ``[V·T, 1 + N, D]`` of frames ``[V, T, 3, H, W]``, running only those layers."""
        num_frames = frames.shape[1]
        pixels = frames.flatten(0, 1).to(device=self.device, dtype=self.dtype)  # [V·T, 3, H, W]
        return self.vision_tower(pixels, num_frames, self.num_layers_run)[-1]

    def attention_and_keys(
        self, hidden: torch.Tensor, with_values: bool = False, num_frames: int = 1
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Class attention ``[V·T, N]``, keys ``[V·T, N, D]`` (and values) of the next layer per frame, float32.

        The next layer's temporal block runs first (with ``add_time_attn``), as in the full forward pass.
        """
        layer = self.vision_tower.encoder.layers[self.num_layers_run]
        mixed = layer.temporal(hidden, num_frames)  # [V·T, 1 + N, D]
        normed = layer.layer_norm1(mixed)
        query_cls = layer.self_attn.q_proj(normed[:, 0])  # [V·T, D]
        keys = layer.self_attn.k_proj(normed).float()  # [V·T, 1 + N, D]
        attention = class_attention(query_cls, keys, layer.self_attn.num_heads, self.reduction.variant)
        values = layer.self_attn.v_proj(normed[:, 1:]).float() if with_values else None
        return attention, keys[:, 1:], values

    @torch.no_grad()
    def forward(self, videos: torch.Tensor, frames_first: bool | None = None) -> VideoTowerOutput:
        """Encodes videos and reduces each frame.

        Args:
            videos: ``[V, 3, T, H, W]`` (``languagebind_video_transform``'s layout) or ``[V, T, 3, H, W]``.
            frames_first: the layout, when T == 3 makes it ambiguous (None: read from the shape).

        Returns:
            :class:`VideoTowerOutput`: ``tokens [V·T, M, D]`` (frame f of video v at row ``v·T + f``),
            ``lengths [V·T]``, ``indices [V·T, M]`` (−1 for CLS, padding and extra tokens).
        """
        frames = to_frames_first(videos, frames_first)  # [V, T, 3, H, W]
        num_frames = frames.shape[1]
        hidden = self.encode_frames(frames)  # [V·T, 1 + N, D]
        attention = keys = values = None
        if self.reducer.needs_attention:
            attention, keys, values = self.attention_and_keys(hidden, self.reducer.needs_values, num_frames)
        inputs = ReducerInputs(hidden[:, 1:], attention, keys, self.grid, values)
        out = self._reduce(inputs)
        tokens, lengths, indices = out.tokens, out.lengths, out.indices
        if self.keep_cls:
            tokens = torch.cat([hidden[:, :1].to(tokens.dtype), tokens], dim=1)  # [V·T, 1 + M, D]
            indices = torch.cat([indices.new_full((len(indices), 1), -1), indices], dim=1)
            lengths = lengths + 1
        return VideoTowerOutput(tokens, lengths, indices, attention, num_frames=num_frames)

    def pretrained_state_dict(self, path: str | None = None) -> dict[str, torch.Tensor]:
        """The tower weights of ``path`` (default: the tower's own folder), keyed like ``vision_tower``.

        Reads ``vision_model.*`` (text-model and projection weights are ignored). With temporal attention
        on, the temporal weights must be there and their frame count must match the config.
        """
        folder = Path(path or self.vision_tower_name)
        if not folder.is_dir():
            raise FileNotFoundError(f"The video tower folder {folder} does not exist.")
        state = read_tower_weights(folder)
        wanted = self.vision_tower.state_dict()
        has_temporal = any(k.startswith("encoder.layers.") and _is_temporal(k) for k in state)
        if self.vision_tower.config.add_time_attn and not has_temporal:
            raise ValueError(
                f"{folder} has no temporal attention weights (encoder.layers.*.temporal_attn): it is not a "
                "LanguageBind video tower. Use mm_video_tower_impl='clip' to run its frames through plain CLIP."
            )
        missing = sorted(set(wanted) - set(state))
        if missing:
            raise ValueError(f"The video tower at {folder} lacks weights: {missing[:4]} ...")
        frames = wanted.get("encoder.layers.0.temporal_embedding")
        if frames is not None and state["encoder.layers.0.temporal_embedding"].shape != frames.shape:
            raise ValueError(
                f"{folder}'s temporal embedding has shape {tuple(state['encoder.layers.0.temporal_embedding'].shape)}, "
                f"the config expects {tuple(frames.shape)} (num_frames={self.num_frames})."
            )
        return {k: state[k].float() for k in wanted}


def _is_temporal(key: str) -> bool:
    return key.split(".", 3)[-1].startswith(TEMPORAL_KEYS)


def read_tower_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Every ``vision_model.*`` weight of a tower folder (safetensors or ``pytorch_model*.bin``), prefix removed.

    A folder of a bare vision model (keys without ``vision_model.``) is read as it is.
    """
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not files:
        raise FileNotFoundError(f"{folder} holds no weights (*.safetensors or pytorch_model*.bin).")
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            shard = load_file(file)
        else:
            shard = torch.load(file, map_location="cpu", weights_only=True)
        state.update(shard)
    if any(k.startswith("vision_model.") for k in state):
        return {k.removeprefix("vision_model."): v for k, v in state.items() if k.startswith("vision_model.")}
    return state


def load_video_tower_config(folder: str | Path) -> LanguageBindVideoConfig:
    """The tower config of a ``LanguageBind_Video_merge`` folder (its ``vision_config``) or a CLIP vision folder.

    ``hidden_act`` is the file's own (LanguageBind's video towers use ``gelu``); a file without one gets
    ``CLIPVisionConfig``'s default ``quick_gelu``. The frame count comes from the temporal embedding
    when the weights are there.
    """
    path = Path(folder) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} is missing: mm_video_tower must be a local LanguageBind_Video_merge (or CLIP vision) folder."
        )
    data = json.loads(path.read_text())
    data = data.get("vision_config", data)
    data = {k: v for k, v in data.items() if k != "model_type"}
    config = LanguageBindVideoConfig.from_dict(data)
    shape = _temporal_embedding_shape(Path(folder))
    if shape is not None:
        config.num_frames, config.add_time_attn = int(shape[1]), True
    elif not data.get("add_time_attn", False):
        config.add_time_attn = False
    return config


def _temporal_embedding_shape(folder: Path) -> list[int] | None:
    """The shape of layer 0's temporal embedding from the safetensors headers (None: not there, or ``.bin``
    weights, whose frame count :meth:`VideoTower.pretrained_state_dict` checks when they load)."""
    from safetensors import safe_open

    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, "pt") as handle:
            for key in (
                "vision_model.encoder.layers.0.temporal_embedding",
                "encoder.layers.0.temporal_embedding",
            ):
                if key in handle.keys():
                    return list(handle.get_slice(key).get_shape())
    return None


__all__ = [
    "IQR_SCOPES",
    "VIDEO_REDUCTION_FORMS",
    "VIDEO_TOWER_IMPLS",
    "LanguageBindEncoderLayer",
    "LanguageBindVideoConfig",
    "LanguageBindVideoEncoder",
    "VideoTower",
    "VideoTowerOutput",
    "to_frames_first",
    "load_video_tower_config",
    "read_tower_weights",
    "resolve_video_reduction",
]
