"""Unimodal (ViT-side) token reducers compared in the PruMerge paper's Table 7: ToMe, EViT and ATS.

Each method is applied once, to the vision tower's output tokens, at a fixed token budget
(``config.budget``; a ``ratio`` is resolved to a budget before the reducer is called), as in the
PruMerge paper's comparison at 25 % of the tokens. Their authors apply them inside the ViT, between
layers; see the reducer comparison (``docs/ComparisonReducers.md``) for where each one
deviates from its paper and code.

All three are vectorised over the batch: an image gets the same tokens in a batch as alone (up to
float rounding in batched matmuls), and at most one host synchronisation happens per batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from llava.model.token_reduction.base import (
    BUDGET_OPTIONS,
    ReducedTokens,
    ReducerInputs,
    check_budget_given,
    descending_rank,
    finish,
    full_sequence,
    gather_tokens,
    order_centres,
    patch_index,
    require_attention,
    require_budget,
)
from llava.model.token_reduction.config import ReductionConfig
from llava.model.token_reduction.registry import register_reducer

# ----------------------------------------------------------------------------------------------
# ToMe
# ----------------------------------------------------------------------------------------------


def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[b, index[b, i]]`` for ``x`` of shape ``[B, N]`` or ``[B, N, C]``."""
    if x.dim() == 2:
        return x.gather(1, index)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[-1]))


def _tome_round(state: dict[str, torch.Tensor], r: int) -> dict[str, torch.Tensor]:
    """One bipartite soft-matching round: the ``r`` A tokens most similar to B merge into their match.

    ``state`` holds, for the ``n`` current tokens of each image in ascending patch order: ``x`` ``[B, n, D]``
    and ``k`` ``[B, n, Dk]`` size-weighted sums of features and keys, ``size`` ``[B, n]`` and ``pos``
    ``[B, n]`` (the patch index a token stands for). A = even positions, B = odd positions.
    """
    split = {name: (value[:, ::2], value[:, 1::2]) for name, value in state.items()}
    k_a, k_b = (k / s[..., None] for k, s in zip(split["k"], split["size"]))  # mean keys [B, nA|nB, Dk]
    sim = F.normalize(k_a, dim=-1) @ F.normalize(k_b, dim=-1).transpose(1, 2)  # [B, nA, nB]
    best, match = sim.max(dim=-1)  # [B, nA] each
    edge = best.argsort(dim=-1, descending=True, stable=True)  # [B, nA] A tokens, most similar first
    src, keep = edge[:, :r], edge[:, r:]  # [B, r], [B, nA - r]
    dst = match.gather(1, src)  # [B, r] the B token each merged A token joins
    out = {}
    for name, (a, b) in split.items():
        if name == "pos":
            out[name] = torch.cat([a.gather(1, keep), b], dim=1)  # merged tokens keep B's position
            continue
        moved = _gather_rows(a, src)  # [B, r(, C)]
        index = dst if b.dim() == 2 else dst[..., None].expand_as(moved)
        b = b.scatter_add(1, index, moved)  # sums of features / keys / sizes
        out[name] = torch.cat([_gather_rows(a, keep), b], dim=1)  # [B, n - r(, C)]
    order = out["pos"].argsort(dim=-1)  # back to ascending patch order
    return {name: _gather_rows(value, order) for name, value in out.items()}


@register_reducer(
    "tome",
    needs_attention=True,
    description="ToMe bipartite soft matching down to the budget",
    options=BUDGET_OPTIONS,
    check=check_budget_given,
)
def reduce_tome(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """ToMe (Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023) on the tower's output.

    Bipartite soft matching on the cosine similarity of the keys: the tokens at even positions (A)
    are matched to their most similar token at odd positions (B), and the ``r`` best-matched A tokens
    are merged into their match by size-weighted averaging (sizes are tracked). Rounds repeat, with
    ``r = min(remaining - budget, |A|)``, until exactly ``budget`` tokens remain; features and keys are
    merged the same way, so later rounds match on the merged keys.

    Deviations from the paper: it runs on the final tower output instead of inside every layer, and
    proportional attention is not used (no attention layer follows). The tokens are kept in
    ascending patch order between rounds (the paper's code concatenates unmerged A then B).

    Returns:
        ``budget`` tokens per image (all N if the budget is at least N), in ascending patch order;
        ``indices`` is the patch index of each surviving token.
    """
    budget = require_budget(config.budget, "tome")
    _, keys = require_attention(inputs, "tome")
    n = inputs.features.shape[1]
    if budget >= n:
        return full_sequence(inputs)
    batch = inputs.features.shape[0]
    state = {
        "x": inputs.features.float(),  # [B, n, D] size-weighted feature sums
        "k": keys.float(),  # [B, n, Dk] size-weighted key sums
        "size": keys.new_ones(batch, n, dtype=torch.float32),  # [B, n]
        "pos": patch_index(inputs).clone(),  # [B, n]
    }
    while n > budget:  # the number of rounds depends on N and the budget only
        r = min(n - budget, (n + 1) // 2)
        state = _tome_round(state, r)
        n -= r
    tokens = (state["x"] / state["size"][..., None]).to(inputs.features.dtype)  # [B, budget, D]
    lengths = torch.full((batch,), budget, dtype=torch.long, device=tokens.device)
    return ReducedTokens(tokens, lengths, state["pos"])


# ----------------------------------------------------------------------------------------------
# EViT
# ----------------------------------------------------------------------------------------------


@register_reducer(
    "evit",
    needs_attention=True,
    description="EViT top tokens by attention plus one fused token",
    options=BUDGET_OPTIONS,
    check=check_budget_given,
)
def reduce_evit(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """EViT (Liang et al., "Not All Patches are What You Need: Expediting Vision Transformers via
    Token Reorganizations", ICLR 2022) on the tower's output.

    Keeps the ``budget - 1`` attentive tokens (top class attention) and fuses the inattentive rest
    into one token, their class-attention-weighted average ``sum_j a_j x_j / sum_j a_j``.

    Returns:
        ``budget`` tokens per image: the kept tokens in ascending patch order, then the fused token
        (index −1). With a budget of at least N, all N tokens in raster order and no fused token.
    """
    budget = require_budget(config.budget, "evit")
    attention, _ = require_attention(inputs, "evit")
    features = inputs.features
    batch, n, dim = features.shape
    if budget >= n:
        return full_sequence(inputs)
    kept = descending_rank(attention) < budget - 1  # [B, N]
    order, valid, counts = order_centres(kept, patch_index(inputs))  # [B, budget - 1] each
    weights = attention.masked_fill(kept, 0.0)  # [B, N] the inattentive tokens' attention
    fused = torch.einsum("bn,bnd->bd", weights, features.float())  # [B, D]
    fused = fused / weights.sum(dim=-1, keepdim=True).clamp(min=1e-30)
    tokens = torch.cat([gather_tokens(features, order, valid), fused[:, None].to(features.dtype)], dim=1)
    indices = torch.cat([order.masked_fill(~valid, -1), order.new_full((batch, 1), -1)], dim=1)
    return ReducedTokens(tokens, counts + 1, indices)  # [B, budget, D], [B], [B, budget]


# ----------------------------------------------------------------------------------------------
# ATS
# ----------------------------------------------------------------------------------------------


def ats_scores(attention: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """ATS significance scores ``s_j = a_j ||v_j|| / sum_i a_i ||v_i||``.

    Args:
        attention: ``[B, N]`` class attention; values: ``[B, N, Dk]``.

    Returns:
        ``[B, N]`` float32 scores summing to one per image.
    """
    scores = attention.float() * values.float().norm(dim=-1)  # [B, N]
    return scores / scores.sum(dim=-1, keepdim=True).clamp(min=1e-30)


@register_reducer(
    "ats",
    needs_attention=True,
    needs_values=True,
    description="ATS inverse transform sampling of attention x value-norm scores",
    options=BUDGET_OPTIONS,
    check=check_budget_given,
)
def reduce_ats(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """ATS (Fayyaz et al., "Adaptive Token Sampling For Efficient Vision Transformers", ECCV 2022).

    Significance scores ``s_j = a_j ||v_j||`` (class attention times value norm, normalised to sum
    one) are sampled by inverse transform sampling: ``budget`` evenly spaced quantiles
    ``(i + 0.5) / budget`` are each mapped to the first token whose CDF reaches them, and duplicates
    are removed. An image therefore gets *at most* ``budget`` tokens, fewer when its scores are
    concentrated (ATS's adaptive behaviour); lengths vary per image and outputs are zero-padded.

    The paper samples inside the ViT with that layer's own attention; here the sampling runs once on
    the tower's output (with the next layer's class attention and values), as in the PruMerge paper's
    Table 7 comparison.

    Returns:
        The sampled tokens in ascending patch order (all N in raster order if the budget is at least N).
    """
    budget = require_budget(config.budget, "ats")
    attention, _ = require_attention(inputs, "ats")
    if inputs.values is None:
        raise ValueError("The 'ats' reducer needs the value vectors of the tower's next layer.")
    batch, n, _ = inputs.features.shape
    if budget >= n:
        return full_sequence(inputs)
    cdf = ats_scores(attention, inputs.values).cumsum(dim=-1)  # [B, N]
    steps = torch.arange(budget, device=cdf.device, dtype=cdf.dtype)
    quantiles = ((steps + 0.5) / budget).expand(batch, budget).contiguous()  # [B, budget]
    picked = torch.searchsorted(cdf.contiguous(), quantiles).clamp(max=n - 1)  # [B, budget]
    sampled = torch.zeros(batch, n, dtype=torch.bool, device=cdf.device).scatter_(1, picked, True)
    order, valid, counts = order_centres(sampled, patch_index(inputs))  # [B, M] each, M <= budget
    return finish(gather_tokens(inputs.features, order, valid), order, valid, counts)
