"""Visual-token pruning inside the language model, on the decoder layers' calls.

An in-LLM method (FastV; any method with :class:`InLLMMethod`'s three members) drops visual tokens after
some decoder layers. :class:`InLLMPruning` runs it through a forward pre-hook and a forward hook on every
decoder layer, so it touches transformers only through the layer's call: hidden states in, hidden states
out. Whatever the model-level forward and ``generate`` call their arguments, the layers receive the same
three things this module uses, and everything else passes through untouched:

* ``position_embeddings`` (cos, sin) and ``attention_mask`` (4-D bool or additive, 2-D for
  flash-attention, or None for plain causal attention): a layer after a pruning point receives them
  sliced to the kept tokens (:func:`slice_layer_inputs`); ``position_ids`` likewise, so kept tokens keep
  their original positions and decoding continues from the full prompt length.
* the KV cache (found by its type, whatever its argument name): after a pruning point, the layers cache
  only the kept tokens (each layer has its own length), and the pruned layout is stored on the cache so
  that the decoding steps slice their masks the same way.

Prefill: at a pruning layer the method scores the tokens from the layer's input (``before_layer``),
then chooses which to keep from its output (``keep``); the hook packs the kept tokens right-aligned
(left padding, as batched generation has) and returns the shorter sequence. Decoding: nothing is
dropped; the layers after a pruning point see the mask columns of the kept prefill tokens only.

Training (``soft``, for methods with ``soft_mask``, i.e. ATP): nothing is dropped and shapes never
change. Each pruning layer multiplies a cumulative soft keep mask D by the method's factor, and every
later layer receives an additive attention mask ``log(D_j + 1e-6)`` on visual keys
(:func:`soft_mask_bias`), through which the gradients reach the method's thresholds. The hooks stay
outside activation checkpointing (transformers 5 checkpoints the layers' ``forward``), so they run once.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import torch
from torch import nn
from transformers import Cache

CACHE_ATTRIBUTE = "llava_in_llm_layouts"


@dataclass
class PrunedLayout:
    """The kept prefill tokens from the layer after ``after_layer`` on.

    Attributes:
        after_layer: the pruning layer (its own cache still holds every token of the stage before).
        full_length: length of the prefill sequence before any pruning.
        index: ``[B, L']`` positions of the kept tokens in the full prefill sequence, right-aligned.
        valid: ``[B, L']`` True for kept tokens, False for the left padding of the packed layout.
    """

    after_layer: int
    full_length: int
    index: torch.Tensor
    valid: torch.Tensor


@dataclass
class PruneStep:
    """What one forward pass of the language model knows about its tokens, in the current layout.

    Attributes:
        visual: ``[B, L]`` visual tokens of the prefill (None: no images, nothing to prune).
        valid: ``[B, L]`` real (not padding) tokens.
        query_index: the query position of the prefill (the last prompt token) in the full sequence: one
            int for the batch (left padding), or ``[B]`` per sample (training: the end of the first question).
        mode: ``"prefill"``, ``"decode"``, ``"soft"`` (training: soft masks, no token dropped) or None
            (nothing to do), fixed at the first layer.
        layouts: the pruning stages so far (prefill) or of the prompt (decode).
        kept_visual: visual tokens per sample after each pruning stage (``[B]`` each).
        kept_rank: after each pruning stage, ``[B, L']`` the ``visual_rank`` of each token of the new layout
            (-1 for text and padding): the kept visual tokens' raster indices for one image per sample.
        visual_rank: ``[B, L]`` each visual token's index among its sample's prefill visual tokens (its
            raster index in the image for one image per sample), -1 elsewhere; set at the first layer.
        visual_count: ``[B]`` visual tokens per sample before any pruning; set at the first layer.
        scores: per-method scratch space between ``before_layer`` and ``keep``.
        soft: whether this forward pass trains (``soft_mask`` instead of ``keep``).
        soft_keep: ``[B, L]`` float32, training's cumulative soft keep mask D (1 on text); None otherwise.
        soft_counts: ``[B]`` per pruning layer reached, the soft count ``Σ_j D_j`` of visual tokens after it.
        soft_bias: the additive attention mask of the current soft stage, built once per stage.
        thresholds: per pruning layer, the thresholds the method used (floats or ``[B]``), for logging.
    """

    visual: torch.Tensor | None
    valid: torch.Tensor | None
    query_index: int | torch.Tensor | None
    mode: str | None = None
    layouts: list[PrunedLayout] = field(default_factory=list)
    kept_visual: list[torch.Tensor] = field(default_factory=list)
    kept_rank: list[torch.Tensor] = field(default_factory=list)
    visual_rank: torch.Tensor | None = None
    visual_count: torch.Tensor | None = None
    scores: dict[int, Any] = field(default_factory=dict)
    soft: bool = False
    soft_keep: torch.Tensor | None = None
    soft_counts: list[torch.Tensor] = field(default_factory=list)
    soft_bias: torch.Tensor | None = None
    thresholds: dict[int, tuple] = field(default_factory=dict)

    def layout_for(self, layer_idx: int) -> PrunedLayout | None:
        """The layout a layer's inputs are in: that of the last pruning stage before it."""
        before = [layout for layout in self.layouts if layout.after_layer < layer_idx]
        return before[-1] if before else None

    def query_position(self) -> torch.Tensor:
        """``[B]`` where the query token sits in the current layout."""
        batch = self.valid.shape[0]
        if isinstance(self.query_index, torch.Tensor):  # per sample, in the full sequence (training)
            return self.query_index.to(self.valid.device)
        query = self.valid.shape[1] - 1 if self.query_index is None else self.query_index
        if not self.layouts:
            return torch.full((batch,), query, dtype=torch.long, device=self.valid.device)
        return (self.layouts[-1].index == query).long().argmax(dim=1)


class InLLMMethod(Protocol):
    """An in-LLM pruning method: which layers prune, how tokens are scored and which are kept.

    A method may also have ``check_layers(num_layers)``, raising ``ValueError`` when its layers do not fit
    the language model (the model calls it whenever it builds the method), and, to be trainable,
    ``soft_mask(layer_idx, hidden, step)``: the ``[B, L]`` factor in [0, 1] by which a pruning layer
    multiplies the soft keep mask in training, where no token is dropped (see :class:`InLLMPruning`).
    """

    prune_layers: tuple[int, ...]

    def before_layer(
        self, layer_idx: int, layer: nn.Module, hidden: torch.Tensor, layer_kwargs: dict, step: PruneStep
    ) -> None: ...

    def keep(self, layer_idx: int, hidden: torch.Tensor, step: PruneStep) -> torch.Tensor:
        """``[B, L]`` bool over the current layout: the tokens that go on to the next layer."""
        ...


def find_cache(values: Any) -> Cache | None:
    """The KV cache among a call's keyword arguments or a model output, whatever its name."""
    items = values.values() if isinstance(values, dict) else values
    return next((v for v in items if isinstance(v, Cache)), None)


def pack(keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-aligned ``(index, valid)`` ``[B, L']`` of the True positions of ``keep`` ``[B, L]``."""
    positions = torch.arange(keep.shape[1], device=keep.device).expand_as(keep)
    key = torch.where(keep, positions, -1)
    width = int(keep.sum(dim=1).max())  # one host sync, to size the pruned sequence
    index = key.sort(dim=1).values[:, keep.shape[1] - width :]
    return index.clamp(min=0), index >= 0


def _gather_seq(tensor: torch.Tensor, index: torch.Tensor, dim: int) -> torch.Tensor:
    """``tensor`` (batch first, possibly broadcast over the batch) gathered along ``dim`` by ``index`` ``[B, L']``."""
    dim = dim % tensor.ndim
    tensor = tensor.expand(index.shape[0], *tensor.shape[1:])
    shape = [index.shape[0]] + [1] * (tensor.ndim - 1)
    shape[dim] = index.shape[1]
    expanded = index.view(shape).expand(
        *[index.shape[1] if d == dim else s for d, s in enumerate(tensor.shape)]
    )
    return tensor.gather(dim, expanded)


def _block(mask: torch.Tensor, blocked: torch.Tensor) -> torch.Tensor:
    """``mask`` with the ``blocked`` entries (broadcastable bool) made un-attendable, in its own convention."""
    if mask.dtype == torch.bool:
        return mask & ~blocked
    if mask.dtype.is_floating_point:
        return mask.masked_fill(blocked, torch.finfo(mask.dtype).min)
    return mask * (~blocked).to(mask.dtype)  # a 2-D 0/1 padding mask (flash-attention)


def _allow(mask: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
    if mask.dtype == torch.bool:
        return mask | allowed
    return mask.masked_fill(allowed, 0.0)


def _causal(keys: torch.Tensor, queries: int) -> torch.Tensor:
    """``[B, Q, K]``: the last ``Q`` of ``K`` positions attend causally to the valid keys ``[B, K]``."""
    length = keys.shape[1]
    key_pos = torch.arange(length, device=keys.device)
    query_pos = key_pos[length - queries :]
    return (key_pos[None, :] <= query_pos[:, None])[None] & keys[:, None, :]


def _new_mask(allowed: torch.Tensor, attn_implementation: str | None, dtype: torch.dtype) -> torch.Tensor:
    """A mask for ``allowed`` ``[B, Q, K]`` in the form the attention implementation takes."""
    if attn_implementation and attn_implementation.startswith("flash"):
        return allowed[:, -1].long()  # flash-attention: the 2-D key padding mask (it is causal itself)
    if attn_implementation == "eager":
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min
        )[:, None]
    return allowed[:, None]  # SDPA and the others take a boolean mask


def slice_layer_inputs(
    kwargs: dict, layout: PrunedLayout, mode: str, attn_implementation: str | None, dtype: torch.dtype
) -> dict:
    """A layer's keyword arguments with mask, position embeddings and position ids on the kept tokens."""
    kwargs = dict(kwargs)
    index, valid = layout.index, layout.valid  # [B, L']
    batch, kept = index.shape
    mask = kwargs.get("attention_mask")
    if mode == "prefill":
        if isinstance(kwargs.get("position_embeddings"), tuple):
            kwargs["position_embeddings"] = tuple(
                _gather_seq(t, index, 1) for t in kwargs["position_embeddings"]
            )
        if isinstance(kwargs.get("position_ids"), torch.Tensor) and kwargs["position_ids"].ndim == 2:
            kwargs["position_ids"] = _gather_seq(kwargs["position_ids"], index, 1)
        diagonal = torch.eye(kept, dtype=torch.bool, device=index.device)[None]  # [1, L', L']
        if mask is None:
            if bool(valid.all()):
                return kwargs  # no padding in the packed layout: plain causal attention is still right
            kwargs["attention_mask"] = _new_mask(_causal(valid, kept) | diagonal, attn_implementation, dtype)
        elif mask.ndim == 4:
            mask = _gather_seq(_gather_seq(mask, index, -1), index, -2)  # [B, h, L', L']
            # every query sees itself, so a padding row is never fully masked (no NaN in its values)
            kwargs["attention_mask"] = _allow(_block(mask, ~valid[:, None, None, :]), diagonal[:, None])
        elif mask.ndim == 2:
            kwargs["attention_mask"] = _block(_gather_seq(mask, index, 1), ~valid)
        else:
            raise ValueError(f"In-LLM pruning cannot slice an attention mask of shape {tuple(mask.shape)}.")
        return kwargs
    # decode: the keys are the kept prefill tokens, then every token generated since (this step's included)
    if mask is None:
        if bool(valid.all()):
            return kwargs
        generated = find_cache(kwargs).get_seq_length(0) - layout.full_length  # layer 0 has cached this step
        keys = torch.cat([valid, valid.new_ones(batch, generated)], dim=1)
        queries = kwargs["position_embeddings"][0].shape[1]
        kwargs["attention_mask"] = _new_mask(_causal(keys, queries), attn_implementation, dtype)
        return kwargs
    if mask.ndim not in (2, 4):
        raise ValueError(f"In-LLM pruning cannot slice an attention mask of shape {tuple(mask.shape)}.")
    prefix = _block(
        _gather_seq(mask[..., : layout.full_length], index, -1),
        ~valid.view(batch, *[1] * (mask.ndim - 2), kept),
    )
    rest = mask[..., layout.full_length :].expand(*prefix.shape[:-1], -1)
    kwargs["attention_mask"] = torch.cat([prefix, rest], dim=-1)
    return kwargs


def layer_schedule(step: PruneStep, prune_layers: tuple[int, ...], num_layers: int) -> torch.Tensor:
    """``[B, num_layers]`` int64: the visual tokens each decoder layer ran on in a prefill.

    Every layer up to and including a pruning layer sees the tokens of the stage before; the layers after
    pruning layer ``p`` see the ones kept there (``step.kept_visual``, one entry per pruning layer reached).
    """
    counts = step.visual_count[:, None].expand(-1, num_layers).clone()
    for layer, kept in zip(prune_layers, step.kept_visual, strict=False):
        counts[:, layer + 1 :] = kept[:, None]
    return counts


SOFT_MASK_FLOOR = 1e-6  # G_j + 1e-6 inside the log: a fully pruned key gets a bias of about -13.8


def soft_mask_bias(
    mask: torch.Tensor | None,
    keep: torch.Tensor,
    visual: torch.Tensor,
    valid: torch.Tensor,
    attn_implementation: str | None,
    dtype: torch.dtype,
) -> torch.Tensor:
    """The attention mask of a layer after an ATP module in training: ``log(D_j + 1e-6)`` on visual keys.

    Every query's attention to visual key j is weighted by its soft keep value ``D_j`` (its own key
    excepted: ``G_ii = 1``), i.e. ``softmax(P + log G)``; text keys are untouched and values are not
    rescaled. ``mask`` is the layer's mask (None: causal over ``valid``; a 4-D boolean or additive
    float mask otherwise). Returns an additive ``[B, 1, L, L]`` mask in ``dtype`` (the masked entries at
    its most negative finite value), which SDPA and eager attention take with gradients to ``keep``.
    """
    if attn_implementation and attn_implementation.startswith("flash"):
        raise ValueError(
            "ATP training adds its soft masks to the attention logits as a bias, which flash-attention "
            "cannot take: train with SDPA (the default) or eager attention."
        )
    batch, length = keep.shape
    positions = torch.arange(length, device=keep.device)
    diagonal = positions[None, :] == positions[:, None]  # [L, L]
    if mask is None:
        allowed = ((positions[None, :] <= positions[:, None])[None] & valid[:, None, :])[:, None]
    elif mask.ndim == 4 and mask.dtype == torch.bool:
        allowed = mask
    elif mask.ndim == 4:
        allowed = mask > torch.finfo(mask.dtype).min / 2
    else:
        raise ValueError(
            f"ATP training cannot add its soft masks to an attention mask of shape {tuple(mask.shape)}."
        )
    allowed = allowed | diagonal
    bias = soft_key_bias(keep, visual)[:, None, None, :].masked_fill(diagonal, 0.0)  # [B, 1, L, L]
    return torch.where(allowed, bias, torch.finfo(dtype).min).to(dtype)


def soft_key_bias(keep: torch.Tensor, visual: torch.Tensor) -> torch.Tensor:
    """``[B, L]`` ``log(D_j + 1e-6)`` on visual keys, 0 on text: the bias :func:`soft_mask_bias` adds."""
    return torch.where(visual, keep.float().clamp(min=0).add(SOFT_MASK_FLOOR).log(), 0.0)


class InLLMPruning:
    """Hooks on the decoder layers that run an in-LLM method; inactive outside :meth:`forward_step`."""

    def __init__(self, layers: nn.ModuleList, config: Any) -> None:
        self.config = config
        self.num_layers = len(layers)
        self.method: InLLMMethod | None = None
        self.step: PruneStep | None = None
        self.last_schedule: torch.Tensor | None = None
        self.last_kept_ranks: list[torch.Tensor] | None = None
        self.last_thresholds: dict[int, tuple] | None = None
        for idx, layer in enumerate(layers):
            layer.register_forward_pre_hook(partial(self._before, idx), with_kwargs=True)
            layer.register_forward_hook(partial(self._after, idx), with_kwargs=True)

    @contextmanager
    def forward_step(
        self,
        method: InLLMMethod,
        visual: torch.Tensor | None,
        valid: torch.Tensor | None,
        query_index: int | torch.Tensor | None,
        soft: bool = False,
    ) -> Iterator[PruneStep]:
        """Activates ``method`` for one forward pass of the language model.

        After a prefill, :attr:`last_schedule` holds its per-layer visual-token counts
        (:func:`layer_schedule`), :attr:`last_kept_ranks` its ``PruneStep.kept_rank`` (one tensor per
        pruning stage) and :attr:`last_thresholds` the thresholds the method used (``PruneStep.thresholds``);
        decoding steps leave them as they are.
        """
        self.method = method
        self.step = PruneStep(
            visual=None if visual is None else visual.bool(),
            valid=None if valid is None else valid.bool(),
            query_index=query_index,
            soft=soft,
        )
        try:
            yield self.step
            if self.step.mode == "prefill":
                self.last_schedule = layer_schedule(self.step, method.prune_layers, self.num_layers)
                self.last_kept_ranks = list(self.step.kept_rank)
                self.last_thresholds = dict(self.step.thresholds)
            elif self.step.mode is None:  # nothing to prune (no image): no schedule; decoding keeps it
                self.last_schedule, self.last_kept_ranks, self.last_thresholds = None, None, None
        finally:
            self.method, self.step = None, None

    def _begin(self, hidden: torch.Tensor, kwargs: dict) -> None:
        """At the first layer: decoding over a pruned cache, a prefill to prune, or nothing to do."""
        step = self.step
        cache = find_cache(kwargs)
        layouts = getattr(cache, CACHE_ATTRIBUTE, None) if cache is not None else None
        if layouts and cache.get_seq_length() > 0 and not step.soft:
            step.mode, step.layouts = "decode", list(layouts)
        elif step.visual is not None:
            step.mode = "soft" if step.soft else "prefill"
            length = hidden.shape[1]
            if step.valid is None:
                step.valid = torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
            step.valid = step.valid[:, -length:]
            if step.visual.shape != step.valid.shape:
                raise ValueError(
                    f"visual_mask has shape {tuple(step.visual.shape)}; the prompt is {tuple(step.valid.shape)}."
                )
            step.visual_count = step.visual.sum(dim=1)
            step.visual_rank = (step.visual.cumsum(dim=1) - 1).masked_fill(~step.visual, -1)
            if step.soft:
                step.soft_keep = torch.ones(step.visual.shape, dtype=torch.float32, device=hidden.device)

    def _before(self, idx: int, layer: nn.Module, args: tuple, kwargs: dict):
        step = self.step
        if step is None:
            return None
        hidden = args[0] if args else kwargs["hidden_states"]
        if idx == 0:
            self._begin(hidden, kwargs)
        if step.mode is None:
            return None
        if step.mode == "soft":
            return self._before_soft(idx, layer, hidden, args, kwargs)
        layout = step.layout_for(idx)
        if layout is not None:
            kwargs = slice_layer_inputs(
                kwargs, layout, step.mode, self.config._attn_implementation, hidden.dtype
            )
        if step.mode == "prefill" and idx in self.method.prune_layers:
            self.method.before_layer(idx, layer, hidden, kwargs, step)
        return args, kwargs

    def _before_soft(self, idx: int, layer: nn.Module, hidden: torch.Tensor, args: tuple, kwargs: dict):
        """Training: the layers after a pruning layer attend through the soft keep mask (an additive bias)."""
        step = self.step
        if step.soft_counts:
            if step.soft_bias is None:
                step.soft_bias = soft_mask_bias(
                    kwargs.get("attention_mask"),
                    step.soft_keep,
                    step.visual,
                    step.valid,
                    self.config._attn_implementation,
                    hidden.dtype,
                )
            kwargs = {**kwargs, "attention_mask": step.soft_bias}
        if idx in self.method.prune_layers:
            self.method.before_layer(idx, layer, hidden, kwargs, step)
        return args, kwargs

    def _after(self, idx: int, layer: nn.Module, args: tuple, kwargs: dict, output: Any):
        step = self.step
        if step is None or idx not in self.method.prune_layers:
            return None
        if step.mode == "soft":  # training: no token dropped; the mask takes this module's factor
            hidden = output[0] if isinstance(output, tuple) else output
            step.soft_keep = step.soft_keep * self.method.soft_mask(idx, hidden, step)
            step.soft_counts.append((step.soft_keep * step.visual).sum(dim=1))
            step.soft_bias = None
            return None
        if step.mode != "prefill":
            return None
        hidden = output[0] if isinstance(output, tuple) else output
        keep = self.method.keep(idx, hidden, step) & step.valid  # [B, L]
        local_index, local_valid = pack(keep)
        previous = step.layouts[-1] if step.layouts else None
        full_length = step.valid.shape[1] if previous is None else previous.full_length
        index = local_index if previous is None else previous.index.gather(1, local_index)
        valid = local_valid if previous is None else local_valid & previous.valid.gather(1, local_index)
        step.layouts.append(PrunedLayout(idx, full_length, index, valid))
        step.visual = step.visual.gather(1, local_index) & valid
        step.visual_rank = step.visual_rank.gather(1, local_index).masked_fill(~step.visual, -1)
        step.valid = valid
        step.kept_visual.append(step.visual.sum(dim=1))
        step.kept_rank.append(step.visual_rank)
        cache = find_cache(kwargs)
        if cache is not None:
            setattr(cache, CACHE_ATTRIBUTE, list(step.layouts))
        hidden = _gather_seq(hidden, local_index, 1)
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
