"""The CLIP vision tower of LLaVA-1.5, with a visual-token reducer on its output.

The tower runs the CLIP encoder up to the selected layer (``hidden_states[-2]`` for LLaVA-1.5) and
drops CLS. A reducer that needs class attention gets it from the *next* encoder layer, computing
only that layer's ``layer_norm1``, ``q_proj`` (for CLS) and ``k_proj``: the rest of that layer never
runs, and with no reduction the next layer does not run at all.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.model.token_reduction import (
    ReducerInputs,
    ReductionConfig,
    class_attention,
    get_reducer,
)


@dataclass
class VisionTowerOutput:
    """What the tower returns for a batch of B images.

    Attributes:
        tokens: ``[B, M, D]`` visual tokens before the projector, zero-padded per image.
        lengths: ``[B]`` int64 number of tokens of each image.
        indices: ``[B, M]`` int64 patch index of each token; −1 for padding and the extra token.
        class_attention: ``[B, N]`` float32 class attention when the reducer used it, else None.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    indices: torch.Tensor
    class_attention: torch.Tensor | None = None


def resolve_tower_path(name: str, base_dir: str | Path | None = None) -> str:
    """``name`` as given, or resolved against ``base_dir`` when that names an existing folder.

    Checkpoints written by this project may store the tower as a path relative to the checkpoint.
    """
    if base_dir is not None and not Path(name).is_absolute():
        candidate = Path(base_dir) / name
        if candidate.is_dir():
            return str(candidate)
    return name


class CLIPVisionTower(nn.Module):
    """A frozen CLIP vision encoder plus a registered token reducer.

    Args:
        vision_tower: a Hub id or a local folder of a ``CLIPVisionModel`` (or full CLIP) checkpoint.
        select_layer: index into the encoder's hidden states (``-2`` in LLaVA-1.5).
        select_feature: ``patch`` (drop CLS) or ``cls_patch``.
        reduction: the reducer and its options.
        vision_config: use this config instead of reading ``vision_tower``'s (random weights).
    """

    def __init__(
        self,
        vision_tower: str,
        select_layer: int = -2,
        select_feature: str = "patch",
        reduction: ReductionConfig | dict[str, Any] | str | None = None,
        vision_config: CLIPVisionConfig | None = None,
    ) -> None:
        super().__init__()
        if select_feature not in ("patch", "cls_patch"):
            raise ValueError(
                f"mm_vision_select_feature must be 'patch' or 'cls_patch', got {select_feature!r}."
            )
        self.vision_tower_name = vision_tower
        self.select_layer = select_layer
        self.select_feature = select_feature
        self.reduction = ReductionConfig.from_value(reduction)
        self.reducer = get_reducer(self.reduction.method)
        config = vision_config if vision_config is not None else load_vision_config(vision_tower)
        self.vision_tower = CLIPVisionModel(config)
        self.vision_tower.requires_grad_(False)
        self._check_layers()
        self._check_budget()  # the reducer's own checks run once the tower is outside any init context

    def _check_layers(self) -> None:
        layers = self.config.num_hidden_layers
        depth = self.num_layers_run
        if not 0 <= depth <= layers:
            raise ValueError(
                f"mm_vision_select_layer={self.select_layer} is out of range for {layers} layers."
            )
        if self.reducer.needs_attention:
            if depth == layers:
                raise ValueError(
                    f"The {self.reduction.method!r} reducer reads the class attention of the layer after "
                    f"mm_vision_select_layer={self.select_layer}, and there is none; use -2 or lower."
                )
            if self.select_feature != "patch":
                raise ValueError(
                    "Token reduction works on patch tokens: set mm_vision_select_feature='patch'."
                )

    def pretrained_state_dict(self, path: str | None = None) -> dict[str, torch.Tensor]:
        """The pretrained CLIP vision weights of ``path`` (default: the tower's own name), keyed like ``vision_tower``.

        Read from the checkpoint files directly (a ``CLIPVisionModel`` or full ``CLIPModel`` folder or Hub id),
        so nothing is built: this also works while DeepSpeed ZeRO-3 partitions every new module.
        """
        folder = Path(path or self.vision_tower_name)
        if not folder.is_dir():
            from huggingface_hub import snapshot_download

            folder = Path(snapshot_download(str(folder), allow_patterns=["*.json", "*.safetensors", "*.bin"]))
        wanted = set(self.vision_tower.state_dict())
        state = {}
        for file in sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin")):
            if file.suffix == ".safetensors":
                from safetensors.torch import load_file

                shard = load_file(file)
            else:
                shard = torch.load(file, map_location="cpu", weights_only=True)
            for key, value in shard.items():
                name = key.removeprefix("vision_model.")
                if name in wanted:
                    state[name] = value.float()
        missing = sorted(wanted - set(state))
        if missing:
            raise ValueError(f"The CLIP checkpoint at {folder} lacks vision weights: {missing[:4]} ...")
        return state

    def load_model(self, path: str | None = None) -> None:
        """Loads the pretrained CLIP weights from ``path`` (default: the tower's own name)."""
        self.vision_tower.load_state_dict(self.pretrained_state_dict(path), strict=True)
        self.vision_tower.requires_grad_(False)
        self.check_reduction()

    @property
    def config(self) -> CLIPVisionConfig:
        return self.vision_tower.config

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    @property
    def grid(self) -> tuple[int, int]:
        side = self.config.image_size // self.config.patch_size
        return side, side

    @property
    def num_patches(self) -> int:
        rows, cols = self.grid
        return rows * cols

    @property
    def num_layers_run(self) -> int:
        """Encoder layers that run to produce ``hidden_states[select_layer]``."""
        layers = self.config.num_hidden_layers
        return layers + 1 + self.select_layer if self.select_layer < 0 else self.select_layer

    @property
    def dtype(self) -> torch.dtype:
        return self.vision_tower.embeddings.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.vision_tower.embeddings.patch_embedding.weight.device

    def set_reduction(self, reduction: ReductionConfig | dict[str, Any] | str | None) -> None:
        """Switches the reducer (e.g. to evaluate one checkpoint with several methods)."""
        self.reduction = ReductionConfig.from_value(reduction)
        self.reducer = get_reducer(self.reduction.method)
        self._check_layers()
        self.check_reduction()

    @property
    def num_tokens(self) -> int:
        """Tokens the reducer receives per image: the patches (plus CLS with ``cls_patch``)."""
        return self.num_patches + (self.select_feature == "cls_patch")

    def _check_budget(self) -> None:
        n, budget = self.num_tokens, self.reduction.budget
        if budget is not None and budget > n:
            raise ValueError(
                f"A budget of {budget} visual tokens is more than the {n} tokens this vision tower produces "
                f"per image ({self.grid[0]}x{self.grid[1]} patches): choose at most {n}."
            )

    def check_reduction(self) -> None:
        """Option errors surface when a reducer is chosen or the tower loaded, not at the first image.

        A budget above the tower's token count is refused; then the reducer runs once on a blank
        one-image input of the real size, so its own checks (a spatial grid that does not fit, a method
        that needs a budget) raise here with their messages. (Not in ``__init__``: DeepSpeed's ZeRO-3
        init context and transformers' meta/half-precision defaults change how tensors are created there.)
        """
        self._check_budget()
        n = self.num_tokens
        # explicit device and dtype: the tower may be built under a meta-device or half-precision default
        blank = {"device": torch.device("cpu"), "dtype": torch.float32}
        keys = torch.randn(1, n, 8, generator=torch.Generator().manual_seed(0), **blank)
        inputs = ReducerInputs(
            features=torch.zeros(1, n, 8, **blank),
            keys=keys,
            grid=self.grid,
            values=keys,
            attention=torch.full((1, n), 1.0 / n, **blank),
        )
        self._reduce(inputs)

    def _reduce(self, inputs: ReducerInputs):
        """The reducer on ``inputs``; never more tokens than it was given."""
        n = inputs.features.shape[1]
        out = self.reducer.fn(inputs, self.reduction.for_tokens(n))
        if out.lengths.numel() and int(out.lengths.max()) > n:
            raise RuntimeError(
                f"The {self.reduction.describe()!r} reducer returned more than its {n} tokens."
            )
        return out

    def encode(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``hidden_states[select_layer]`` of the encoder, CLS first: ``[B, 1 + N, D]``."""
        clip = self.vision_tower
        hidden = clip.embeddings(pixel_values.to(device=self.device, dtype=self.dtype))  # [B, 1 + N, D]
        hidden = clip.pre_layrnorm(hidden)
        for layer in clip.encoder.layers[: self.num_layers_run]:
            hidden = layer(hidden, None)
        return hidden

    def attention_and_keys(
        self, hidden: torch.Tensor, with_values: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Class attention ``[B, N]``, patch keys ``[B, N, D]`` and (optionally) values of the next layer, float32."""
        layer = self.vision_tower.encoder.layers[self.num_layers_run]
        normed = layer.layer_norm1(hidden)  # [B, 1 + N, D]
        query_cls = layer.self_attn.q_proj(normed[:, 0])  # [B, D]
        keys = layer.self_attn.k_proj(normed).float()  # [B, 1 + N, D]
        heads = layer.self_attn.num_heads
        attention = class_attention(query_cls, keys, heads, self.reduction.variant)
        values = layer.self_attn.v_proj(normed[:, 1:]).float() if with_values else None  # [B, N, D]
        return attention, keys[:, 1:], values

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> VisionTowerOutput:
        """Encodes and reduces a batch of images.

        Args:
            pixel_values: ``[B, 3, H, W]`` pre-processed images.

        Returns:
            :class:`VisionTowerOutput` with ``tokens [B, M, D]``, ``lengths [B]``, ``indices [B, M]``.
        """
        hidden = self.encode(pixel_values)  # [B, 1 + N, D]
        features = hidden[:, 1:] if self.select_feature == "patch" else hidden
        attention = keys = values = None
        if self.reducer.needs_attention:
            attention, keys, values = self.attention_and_keys(hidden, self.reducer.needs_values)
        inputs = ReducerInputs(
            features=features, attention=attention, keys=keys, grid=self.grid, values=values
        )
        out = self._reduce(inputs)
        return VisionTowerOutput(out.tokens, out.lengths, out.indices, attention)


def load_vision_config(name: str) -> CLIPVisionConfig:
    """The ``CLIPVisionConfig`` of a vision-model or full CLIP checkpoint (local folder or Hub id)."""
    try:
        return CLIPVisionConfig.from_pretrained(name)
    except OSError as err:
        raise OSError(
            f"Could not read the CLIP vision tower config from {name!r}. Pass a local CLIP folder or a Hub id "
            "that is available offline (HF_HUB_OFFLINE=1 uses the local cache)."
        ) from err
