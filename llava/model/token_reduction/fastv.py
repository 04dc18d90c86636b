"""FastV: dropping visual tokens inside the language model (Chen et al., "An Image is Worth 1/2 Tokens
After Layer 2: Plug-and-Play Inference Acceleration for Large Vision-Language Models", ECCV 2024).

After layer K, only the visual tokens that received the most attention from the last prompt token in
layer K (averaged over heads) are kept; every later layer runs on the shorter sequence, and its KV
cache holds only the kept tokens. The one attention row is computed from layer K's own queries and
keys (:func:`query_attention`), so every layer keeps its configured attention kernel (SDPA,
flash-attention): nothing switches the model to eager attention.

:class:`FastV` is an in-LLM method for :class:`llava.model.token_reduction.in_llm.InLLMPruning`, the
hooks on the decoder layers' calls that prune the sequence, slice masks and position embeddings, and
keep the pruned layout on the KV cache.
"""

from __future__ import annotations

import math

import torch
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from llava.model.token_reduction.base import ReducedTokens, ReducerInputs, full_sequence
from llava.model.token_reduction.config import ReductionConfig
from llava.model.token_reduction.registry import register_reducer


def query_attention(
    layer, hidden: torch.Tensor, cos_sin, key_valid: torch.Tensor, query_index: int
) -> torch.Tensor:
    """Head-averaged attention of the token at ``query_index`` over all keys of ``layer``, float32.

    Args:
        layer: a Llama decoder layer (its ``input_layernorm`` and ``self_attn`` projections are used).
        hidden: ``[B, L, H]`` the layer's input hidden states.
        cos_sin: the rotary embeddings of the L positions.
        key_valid: ``[B, L]`` bool, keys that may be attended (real, not padding).
        query_index: the query position (the last prompt token).

    Returns:
        ``[B, L]`` attention weights (zero on invalid keys and on keys after the query).
    """
    attn = layer.self_attn
    normed = layer.input_layernorm(hidden)  # [B, L, H]
    batch, length, _ = normed.shape
    q = (
        attn.q_proj(normed[:, query_index : query_index + 1])
        .view(batch, 1, -1, attn.head_dim)
        .transpose(1, 2)
    )
    k = attn.k_proj(normed).view(batch, length, -1, attn.head_dim).transpose(1, 2)  # [B, KV, L, d]
    cos, sin = cos_sin
    q, _ = apply_rotary_pos_emb(
        q, q, cos[:, query_index : query_index + 1], sin[:, query_index : query_index + 1]
    )
    _, k = apply_rotary_pos_emb(k, k, cos, sin)
    k = k.repeat_interleave(q.shape[1] // k.shape[1], dim=1)  # grouped-query heads
    logits = (q.float() @ k.float().transpose(-1, -2)).squeeze(2) / math.sqrt(attn.head_dim)  # [B, heads, L]
    allowed = key_valid & (torch.arange(length, device=hidden.device) <= query_index)[None]
    logits = logits.masked_fill(~allowed[:, None], float("-inf"))
    return logits.softmax(dim=-1).mean(dim=1)  # [B, L]


def kept_tokens(
    scores: torch.Tensor, visual: torch.Tensor, real: torch.Tensor, budget: int | None, ratio: float | None
) -> torch.Tensor:
    """``[B, L]`` bool: every real non-visual token, and each sample's top visual tokens by score.

    ``budget`` visual tokens per sample, or ``ratio`` of that sample's visual tokens (at least one).
    """
    n_visual = visual.sum(dim=1)  # [B]
    keep = torch.full_like(n_visual, budget) if budget is not None else (n_visual * ratio).round().long()
    keep = torch.minimum(keep.clamp(min=1), n_visual)
    masked = scores.masked_fill(~visual, float("-inf"))
    rank = torch.empty_like(scores, dtype=torch.long)
    order = masked.argsort(dim=1, descending=True, stable=True)
    rank.scatter_(1, order, torch.arange(scores.shape[1], device=scores.device).expand_as(order))
    return real & (~visual | (rank < keep[:, None]))


class FastV:
    """FastV as an in-LLM method: after layer ``llm_layer``, the top visual tokens by the query's attention."""

    def __init__(self, config: ReductionConfig) -> None:
        self.config = config
        self.prune_layers = (config.llm_layer,)

    def before_layer(self, layer_idx, layer, hidden, layer_kwargs, step) -> None:
        """Scores every token by the last prompt token's attention in this layer (its own q/k, any kernel)."""
        query = int(step.query_position()[0])  # one column for the whole batch (left padding)
        step.scores[layer_idx] = query_attention(
            layer, hidden, layer_kwargs["position_embeddings"], step.valid, query
        )

    def keep(self, layer_idx, hidden, step) -> torch.Tensor:
        return kept_tokens(
            step.scores.pop(layer_idx), step.visual, step.valid, self.config.budget, self.config.ratio
        )


def reduce_fastv(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """The tower keeps every token; the language model drops visual tokens after layer ``llm_layer``."""
    return full_sequence(inputs)


def _check_fastv(config: ReductionConfig) -> None:
    config.require_budget_or_ratio("ratio=0.5")


register_reducer(
    "fastv",
    needs_attention=False,
    description="FastV: drop low-attention visual tokens after LLM layer K",
    options=("budget", "ratio", "llm_layer"),
    check=_check_fastv,
    in_llm_method=FastV,
)(reduce_fastv)
