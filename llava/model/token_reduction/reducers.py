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
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from llava.model.token_reduction.config import ReductionConfig
from llava.model.token_reduction.registry import register_reducer


@dataclass
class ReducerInputs:
    """What a reducer may read.

    Attributes:
        features: ``[B, N, D]`` the tower's patch features (``hidden_states[select_layer]``, CLS dropped).
        attention: ``[B, N]`` float32 class attention of the next layer (CLS→CLS dropped), or None.
        keys: ``[B, N, Dk]`` float32 keys of the patch tokens in that layer, or None.
        grid: the patch grid ``(rows, cols)``, ``rows * cols == N``.
        values: ``[B, N, Dk]`` float32 ``v_proj`` outputs of the patch tokens in that layer, for reducers
            registered with ``needs_values``; else None.
    """

    features: torch.Tensor
    attention: torch.Tensor | None
    keys: torch.Tensor | None
    grid: tuple[int, int]
    values: torch.Tensor | None = None


@dataclass
class ReducedTokens:
    """A reducer's output.

    Attributes:
        tokens: ``[B, M, D]`` kept (and merged) tokens, zero-padded after each image's length.
        lengths: ``[B]`` int64, the number of tokens of each image.
        indices: ``[B, M]`` int64, the patch index each output token stands for (its centre);
            −1 for padding and for PruMerge's extra token.
    """

    tokens: torch.Tensor
    lengths: torch.Tensor
    indices: torch.Tensor


# ----------------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------------


def outlier_count(attention: torch.Tensor, iqr_scale: float = 1.5) -> torch.Tensor:
    """Number of IQR outliers per image: values strictly above ``Q3 + iqr_scale * (Q3 - Q1)``.

    Quartiles use linear interpolation (numpy's default) and are computed per image.

    Args:
        attention: ``[B, N]`` class attention.

    Returns:
        ``[B]`` int64 counts.
    """
    values = attention.double()
    probs = torch.tensor([0.25, 0.75], dtype=values.dtype, device=values.device)
    q1, q3 = torch.quantile(values, probs, dim=-1)  # [B] each
    fence = q3 + iqr_scale * (q3 - q1)
    return (values > fence[:, None]).sum(dim=-1)


def descending_rank(attention: torch.Tensor) -> torch.Tensor:
    """Rank of every patch by descending attention (0 = largest), ties broken as ``torch.topk`` does.

    Args:
        attention: ``[B, N]``.

    Returns:
        ``[B, N]`` int64 ranks.
    """
    batch, n = attention.shape
    order = attention.topk(n, dim=-1).indices  # [B, N]
    ranks = torch.arange(n, device=attention.device).expand(batch, n)
    return torch.empty_like(order).scatter_(1, order, ranks)


def _patch_index(inputs: ReducerInputs) -> torch.Tensor:
    batch, n, _ = inputs.features.shape
    return torch.arange(n, device=inputs.features.device).expand(batch, n)  # [B, N]


def _require_attention(inputs: ReducerInputs, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    if inputs.attention is None or inputs.keys is None:
        raise ValueError(f"The {method!r} reducer needs the class attention and keys of the tower.")
    return inputs.attention, inputs.keys


def _spread(count: int, total: int, device: torch.device) -> torch.Tensor:
    """``count`` positions spread evenly over ``range(total)``: ``floor((i + 0.5) * total / count)``."""
    i = torch.arange(count, device=device, dtype=torch.float64)
    return ((i + 0.5) * total / count).floor().long()


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
    count = outlier_count(attention, config.iqr_scale)
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
    chosen[_spread(count, n_rest, kept.device)] = True
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
    index = _patch_index(inputs)
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


def _order_centres(is_centre: torch.Tensor, key: torch.Tensor):
    """Centres of each image in output order, padded to the largest count.

    Returns:
        order ``[B, C]`` patch indices, valid ``[B, C]`` bool, counts ``[B]`` int64.
    """
    n = is_centre.shape[1]
    counts = is_centre.sum(dim=-1)
    width = int(counts.max()) if counts.numel() else 0  # the one host sync: the output size
    key = key.masked_fill(~is_centre, 4 * n)
    order = key.argsort(dim=-1, stable=True)[:, :width]  # [B, C]
    valid = torch.arange(width, device=order.device)[None] < counts[:, None]  # [B, C]
    return order, valid, counts


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


def _gather_tokens(features: torch.Tensor, order: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    dim = features.shape[-1]
    tokens = features.gather(1, order[..., None].expand(-1, -1, dim))  # [B, C, D]
    return tokens * valid[..., None].to(tokens.dtype)


def _finish(tokens, order, valid, counts) -> ReducedTokens:
    return ReducedTokens(tokens=tokens, lengths=counts, indices=order.masked_fill(~valid, -1))


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
    return _finish((merged * valid[..., None]).to(inputs.features.dtype), order, valid, counts)


def _combine(inputs: ReducerInputs, config: ReductionConfig, is_centre, ref_key, merge: bool):
    """Orders the centres (reference: by ``ref_key``; paper: raster order) and merges or gathers them."""
    key = ref_key if config.variant == "reference" else _patch_index(inputs)
    order, valid, counts = _order_centres(is_centre, key)
    if not merge:
        return _finish(_gather_tokens(inputs.features, order, valid), order, valid, counts)
    if config.variant == "reference":
        return _merge_reference(inputs, config, is_centre, order, valid, counts)
    return _merge_paper(inputs, config, order, valid, counts)


# ----------------------------------------------------------------------------------------------
# Registered reducers
# ----------------------------------------------------------------------------------------------


@register_reducer("none", needs_attention=False, description="all N patch tokens (LLaVA-1.5)")
def reduce_none(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    batch, n, _ = inputs.features.shape
    lengths = torch.full((batch,), n, dtype=torch.long, device=inputs.features.device)
    return ReducedTokens(inputs.features, lengths, _patch_index(inputs).clone())


@register_reducer(
    "prumerge", needs_attention=True, description="IQR-outlier tokens merged with their neighbours"
)
def reduce_prumerge(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    attention, _ = _require_attention(inputs, "prumerge")
    rank = descending_rank(attention)
    reserve = 1 if config.variant == "reference" else 0  # the extra token counts toward a budget
    is_centre = rank < _num_attentive(attention, config, reserve)[:, None]
    return _combine(inputs, config, is_centre, rank, merge=True)


@register_reducer(
    "prumerge_plus", needs_attention=True, description="PruMerge plus spatially uniform samples"
)
def reduce_prumerge_plus(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    attention, _ = _require_attention(inputs, "prumerge_plus")
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
    key = torch.where(kept, rank, n + _patch_index(inputs))
    return _combine(inputs, config, kept | sampled, key, merge=True)


@register_reducer(
    "aits", needs_attention=True, description="PruMerge's kept tokens, no merge, no extra token"
)
def reduce_aits(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    attention, _ = _require_attention(inputs, "aits")
    rank = descending_rank(attention)
    is_centre = rank < _num_attentive(attention, config, reserve=0)[:, None]
    return _combine(inputs, config, is_centre, rank, merge=False)


@register_reducer("sequential", needs_attention=False, description="the first n tokens in raster order")
def reduce_sequential(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    index = _patch_index(inputs)
    order, valid, counts = _order_centres(index < config.budget, index)
    return _finish(_gather_tokens(inputs.features, order, valid), order, valid, counts)


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


@register_reducer("spatial", needs_attention=False, description="an evenly spread r x c grid of tokens")
def reduce_spatial(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    rows, cols = inputs.grid
    r, c = spatial_grid(config, inputs.grid)
    device = inputs.features.device
    row_idx, col_idx = _spread(r, rows, device), _spread(c, cols, device)
    mask = torch.zeros(rows, cols, dtype=torch.bool, device=device)
    mask[row_idx[:, None], col_idx[None, :]] = True
    index = _patch_index(inputs)
    order, valid, counts = _order_centres(mask.flatten().expand_as(index), index)
    return _finish(_gather_tokens(inputs.features, order, valid), order, valid, counts)
