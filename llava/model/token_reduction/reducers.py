"""Visual-token reducers: PruMerge, PruMerge+ and the paper's baselines, vectorised over the batch.

Every reducer works in two steps on a batch of B images with N patch tokens each:

1. *selection*: a boolean ``is_centre`` mask ``[B, N]`` and an integer sort key ``[B, N]`` that
   puts the centres in output order;
2. *combination*: the centres are gathered (``aits``, ``sequential``, ``spatial``) or merged with
   their nearest neighbours by key similarity (``prumerge``, ``prumerge_plus``).

Counts differ per image; outputs are zero-padded to the largest count in the batch and come with
per-image ``lengths``. The only host synchronisation is reading that largest count, once per
batch. Attention, quartiles and merge weights are float32 whatever the tower's dtype, and every
image gets exactly the tokens it gets alone (up to float rounding in the batched matmuls).

See ``docs/TokenReduction.md`` for the behaviour of each method and its edge cases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from llava.model.token_reduction.base import (
    ReducedTokens,
    ReducerInputs,
    descending_rank,
    finish,
    gather_tokens,
    order_centres,
    outlier_count,
    patch_index,
    require_attention,
    spread,
)
from llava.model.token_reduction.config import ReductionConfig
from llava.model.token_reduction.registry import register_reducer

# ----------------------------------------------------------------------------------------------
# Selection
# ----------------------------------------------------------------------------------------------


def _num_attentive(attention: torch.Tensor, config: ReductionConfig, reserve: int) -> torch.Tensor:
    """Per-image number of tokens kept by attention: the IQR outlier count, or the budget.

    ``reserve`` tokens of the budget are left for tokens that are not kept by attention (the
    reference variant's extra token).
    """
    batch, n = attention.shape
    if config.budget is not None:
        kept = min(max(config.budget - reserve, 0), n)
        return torch.full((batch,), kept, dtype=torch.long, device=attention.device)
    count = outlier_count(attention, config.iqr_scale, config.iqr_group)
    if config.variant == "paper":
        count = count.clamp(min=1)  # the paper variant has no extra token: never return nothing
    return count


def _lattice(points: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A per-image 2-D lattice of about ``points[b]`` patches spread over rows and columns.

    Args:
        points: ``[B]`` int64 wanted number of lattice points (at least one is placed).
        grid: ``(rows, cols)`` of the patch grid.

    Returns:
        ``[B, rows * cols]`` boolean mask of lattice patches.
    """
    rows, cols = grid
    wanted = points.clamp(min=1).double()
    n_rows = (wanted * rows / cols).sqrt().round().clamp(1, rows)  # [B]
    n_cols = (wanted / n_rows).round().clamp(1, cols)  # [B]

    def axis_mask(n_lines: torch.Tensor, size: int) -> torch.Tensor:
        i = torch.arange(size, device=points.device, dtype=torch.float64)  # [S]
        pos = ((i[None] + 0.5) * size / n_lines[:, None]).floor().long()  # [B, S]
        pos = torch.where(i[None] < n_lines[:, None], pos, size)  # unused lines go to a spare slot
        mask = torch.zeros(len(points), size + 1, dtype=torch.bool, device=points.device)
        return mask.scatter_(1, pos, True)[:, :size]  # [B, S]

    row_mask, col_mask = axis_mask(n_rows, rows), axis_mask(n_cols, cols)
    return (row_mask[:, :, None] & col_mask[:, None, :]).flatten(1)  # [B, N]


def _spread_over_rest(kept: torch.Tensor, n_kept: int, count: int) -> torch.Tensor:
    """Marks ``count`` patches spread evenly over the non-kept patches of each image (raster order).

    Every image has the same number ``n_kept`` of kept patches (true under a budget).
    """
    rest = ~kept
    n_rest = kept.shape[1] - n_kept
    count = min(count, n_rest)
    if count <= 0:
        return torch.zeros_like(kept)
    chosen = torch.zeros(n_rest, dtype=torch.bool, device=kept.device)
    chosen[spread(count, n_rest, kept.device)] = True
    rest_rank = rest.long().cumsum(dim=-1) - 1  # [B, N] position within the non-kept list
    return rest & chosen[rest_rank.clamp(min=0)]


def _budget_centres(config: ReductionConfig) -> int:
    """Centres under a budget: the reference variant's extra token takes one of the budget's tokens."""
    return max(config.budget - (1 if config.variant == "reference" else 0), 1)


def _plus_fixed_count(config: ReductionConfig, n: int) -> int | None:
    """PruMerge+'s kept-by-attention count when it does not depend on the image, else None."""
    if config.budget is not None:
        centres = _budget_centres(config)
        share = 0.25 if config.variant == "reference" else 0.5
        return min(max(round(centres * share), 1), centres, n)
    if config.form == "fixed":
        return max(n // 8, 1)
    return None


def _plus_samples(inputs: ReducerInputs, config: ReductionConfig, kept: torch.Tensor, n_kept: torch.Tensor):
    """PruMerge+'s spatial samples ``[B, N]`` (may overlap the kept tokens; the caller de-duplicates)."""
    n = kept.shape[1]
    index = patch_index(inputs)
    fixed = _plus_fixed_count(config, n)
    if config.budget is not None:
        return _spread_over_rest(kept, fixed, _budget_centres(config) - fixed)
    if config.variant == "paper":
        return _lattice(n_kept, inputs.grid)
    if config.form == "fixed":
        stride = n // fixed  # the authors' 4, 12, 20, ... for N = 576
        return (index % stride == stride // 2) & (index < n - 1)
    # The authors' adaptive stride; max(m, 1) and max(step, 1) avoid their division by zero / crash.
    step = ((n // n_kept.clamp(min=1)) // 3).clamp(min=1)[:, None]  # [B, 1]
    return (index % step == 0) & (index < n - 1)


# ----------------------------------------------------------------------------------------------
# Combination
# ----------------------------------------------------------------------------------------------


def _neighbour_weights(attention, keys, order, num_neighbors: int, cosine: bool) -> torch.Tensor:
    """``w[b, c, j] = a_j`` for the ``num_neighbors`` patches ``j != centre`` most similar to the centre.

    Args:
        attention: ``[B, N]``; keys: ``[B, N, Dk]``; order: ``[B, C]`` centre indices.

    Returns:
        ``[B, C, N]`` float32 weights (zero outside the neighbours).
    """
    batch, n, dim = keys.shape
    feats = F.normalize(keys, dim=-1) if cosine else keys
    centre_keys = feats.gather(1, order[..., None].expand(-1, -1, dim))  # [B, C, Dk]
    sim = centre_keys @ feats.transpose(1, 2)  # [B, C, N]
    sim.scatter_(2, order[..., None], float("-inf"))  # a patch is not its own neighbour
    k = min(num_neighbors, n - 1)
    neighbours = sim.topk(k, dim=-1).indices  # [B, C, k]
    weights = attention[:, None, :].expand(-1, order.shape[1], -1)  # [B, C, N]
    return torch.zeros_like(sim).scatter_(2, neighbours, weights.gather(2, neighbours))


def _merge_reference(inputs: ReducerInputs, config: ReductionConfig, is_centre, order, valid, counts):
    """``y'_p = y_p + sum_j a_j y_j`` over cosine neighbours, plus one extra token from the rest."""
    attention, keys = inputs.attention, inputs.keys
    feats = inputs.features.float()  # [B, N, D]
    weights = _neighbour_weights(attention, keys, order, config.num_neighbors, cosine=True)
    weights.scatter_(2, order[..., None], 1.0)  # the centre keeps weight 1
    merged = (weights @ feats) * valid[..., None]  # [B, C, D]
    rest = attention * (~is_centre)  # [B, N]
    extra = torch.einsum("bn,bnd->bd", rest, feats)  # [B, D]
    # An image whose every patch is a centre has no rest: no extra token (it would be all zero, and the
    # output would hold more tokens than the tower produced).
    has_rest = (~is_centre).any(dim=1)  # [B]
    batch, width, dim = merged.shape
    tokens = torch.cat([merged, merged.new_zeros(batch, 1, dim)], dim=1)  # [B, C + 1, D]
    tokens.scatter_(1, counts[:, None, None].expand(-1, 1, dim), (extra * has_rest[:, None])[:, None])
    indices = torch.cat([order.masked_fill(~valid, -1), order.new_full((batch, 1), -1)], dim=1)
    return ReducedTokens(tokens.to(inputs.features.dtype), counts + has_rest.long(), indices)


def _merge_paper(inputs: ReducerInputs, config: ReductionConfig, order, valid, counts):
    """Attention-weighted average of each centre and its dot-product neighbours; no extra token."""
    attention = inputs.attention
    weights = _neighbour_weights(attention, inputs.keys, order, config.num_neighbors, cosine=False)
    weights.scatter_(2, order[..., None], attention.gather(1, order)[..., None])
    merged = (weights @ inputs.features.float()) / weights.sum(-1, keepdim=True).clamp(min=1e-30)
    return finish((merged * valid[..., None]).to(inputs.features.dtype), order, valid, counts)


def _combine(inputs: ReducerInputs, config: ReductionConfig, is_centre, ref_key, merge: bool):
    """Orders the centres (reference: by ``ref_key``; paper: raster order) and merges or gathers them."""
    key = ref_key if config.variant == "reference" else patch_index(inputs)
    order, valid, counts = order_centres(is_centre, key)
    if not merge:
        return finish(gather_tokens(inputs.features, order, valid), order, valid, counts)
    if config.variant == "reference":
        return _merge_reference(inputs, config, is_centre, order, valid, counts)
    return _merge_paper(inputs, config, order, valid, counts)


# ----------------------------------------------------------------------------------------------
# Registered reducers
# ----------------------------------------------------------------------------------------------

PRUMERGE_OPTIONS = ("budget", "ratio", "num_neighbors", "iqr_scale", "iqr_group")


def _check_none(config: ReductionConfig) -> None:
    if config.budget is not None or config.ratio is not None:
        raise ValueError(
            "The 'none' reducer keeps every token; use 'sequential' or another method for a budget."
        )


@register_reducer(
    "none", needs_attention=False, description="all N patch tokens (LLaVA-1.5)", check=_check_none
)
def reduce_none(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    batch, n, _ = inputs.features.shape
    lengths = torch.full((batch,), n, dtype=torch.long, device=inputs.features.device)
    return ReducedTokens(inputs.features, lengths, patch_index(inputs).clone())


@register_reducer(
    "prumerge",
    needs_attention=True,
    description="IQR-outlier tokens merged with their neighbours",
    options=PRUMERGE_OPTIONS,
)
def reduce_prumerge(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    attention, _ = require_attention(inputs, "prumerge")
    rank = descending_rank(attention)
    reserve = 1 if config.variant == "reference" else 0  # the extra token counts toward a budget
    is_centre = rank < _num_attentive(attention, config, reserve)[:, None]
    return _combine(inputs, config, is_centre, rank, merge=True)


@register_reducer(
    "prumerge_plus",
    needs_attention=True,
    description="PruMerge plus spatially uniform samples",
    options=(*PRUMERGE_OPTIONS, "form"),
)
def reduce_prumerge_plus(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    attention, _ = require_attention(inputs, "prumerge_plus")
    batch, n = attention.shape
    rank = descending_rank(attention)
    fixed = _plus_fixed_count(config, n)
    if fixed is None:
        n_kept = _num_attentive(attention, config, reserve=0)
    else:
        n_kept = torch.full((batch,), fixed, dtype=torch.long, device=attention.device)
    kept = rank < n_kept[:, None]
    sampled = _plus_samples(inputs, config, kept, n_kept)
    # De-duplicated union; reference order: kept by attention, then the other samples ascending.
    key = torch.where(kept, rank, n + patch_index(inputs))
    return _combine(inputs, config, kept | sampled, key, merge=True)


@register_reducer(
    "aits",
    needs_attention=True,
    description="PruMerge's kept tokens, no merge, no extra token",
    options=("budget", "ratio", "iqr_scale", "iqr_group"),
)
def reduce_aits(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    attention, _ = require_attention(inputs, "aits")
    rank = descending_rank(attention)
    is_centre = rank < _num_attentive(attention, config, reserve=0)[:, None]
    return _combine(inputs, config, is_centre, rank, merge=False)


@register_reducer(
    "sequential",
    needs_attention=False,
    description="the first n tokens in raster order",
    options=("budget", "ratio"),
    check=lambda config: config.require_budget_or_ratio("budget=40"),
)
def reduce_sequential(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    index = patch_index(inputs)
    order, valid, counts = order_centres(index < config.budget, index)
    return finish(gather_tokens(inputs.features, order, valid), order, valid, counts)


def spatial_grid(config: ReductionConfig, grid: tuple[int, int]) -> tuple[int, int]:
    """The ``(rows, cols)`` of the ``spatial`` reducer: ``config.grid``, or the budget as near-square."""
    rows, cols = grid
    if config.grid is not None:
        r, c = config.grid
    else:
        r = max(round(math.sqrt(config.budget)), 1)
        while config.budget % r:
            r -= 1
        c = config.budget // r
    if r > rows or c > cols:
        raise ValueError(
            f"A {r} x {c} spatial grid does not fit the {rows} x {cols} patch grid; pass grid=(r, c)."
        )
    return r, c


def _check_spatial(config: ReductionConfig) -> None:
    if config.budget is None and config.ratio is None and config.grid is None:
        raise ValueError("The 'spatial' reducer needs a grid (e.g. grid=(5, 8)) or a token budget.")


@register_reducer(
    "spatial",
    needs_attention=False,
    description="an evenly spread r x c grid of tokens",
    options=("grid", "budget", "ratio"),
    check=_check_spatial,
)
def reduce_spatial(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    rows, cols = inputs.grid
    r, c = spatial_grid(config, inputs.grid)
    device = inputs.features.device
    row_idx, col_idx = spread(r, rows, device), spread(c, cols, device)
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=device)
    mask[row_idx[:, None], col_idx[None, :]] = True
    index = patch_index(inputs)
    order, valid, counts = order_centres(mask.flatten().expand_as(index), index)
    return finish(gather_tokens(inputs.features, order, valid), order, valid, counts)
