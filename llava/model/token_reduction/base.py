"""What every reducer shares: its inputs and output, and the small tensor steps reducers compose.

A reducer is a pure function ``fn(inputs, config) -> ReducedTokens`` registered by name (see
:mod:`llava.model.token_reduction.registry`). The helpers here are public so that reducers in any module
compose them; each works on the whole batch at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


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


def outlier_count(attention: torch.Tensor, iqr_scale: float = 1.5, group: int = 1) -> torch.Tensor:
    """Number of IQR outliers per image: values strictly above ``Q3 + iqr_scale * (Q3 - Q1)``.

    Quartiles use linear interpolation (numpy's default) and are computed per image, or per group of
    ``group`` consecutive rows (a video's frames): then the fence and the count are over the group's
    pooled values, and each row of the group gets ``count // group``.

    Args:
        attention: ``[B, N]`` class attention; ``B`` a multiple of ``group``.

    Returns:
        ``[B]`` int64 counts.
    """
    if group > 1:
        batch, n = attention.shape
        if batch % group:
            raise ValueError(
                f"{batch} rows cannot be pooled in groups of iqr_group={group} for the IQR fence."
            )
        pooled = outlier_count(attention.reshape(batch // group, group * n), iqr_scale)  # [B / G]
        return (pooled // group).repeat_interleave(group)
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


def patch_index(inputs: ReducerInputs) -> torch.Tensor:
    batch, n, _ = inputs.features.shape
    return torch.arange(n, device=inputs.features.device).expand(batch, n)  # [B, N]


def require_attention(inputs: ReducerInputs, method: str) -> tuple[torch.Tensor, torch.Tensor]:
    if inputs.attention is None or inputs.keys is None:
        raise ValueError(f"The {method!r} reducer needs the class attention and keys of the tower.")
    return inputs.attention, inputs.keys


def spread(count: int, total: int, device: torch.device) -> torch.Tensor:
    """``count`` positions spread evenly over ``range(total)``: ``floor((i + 0.5) * total / count)``."""
    i = torch.arange(count, device=device, dtype=torch.float64)
    return ((i + 0.5) * total / count).floor().long()


def order_centres(is_centre: torch.Tensor, key: torch.Tensor):
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


def gather_tokens(features: torch.Tensor, order: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    dim = features.shape[-1]
    tokens = features.gather(1, order[..., None].expand(-1, -1, dim))  # [B, C, D]
    return tokens * valid[..., None].to(tokens.dtype)


def finish(tokens, order, valid, counts) -> ReducedTokens:
    return ReducedTokens(tokens=tokens, lengths=counts, indices=order.masked_fill(~valid, -1))


def full_sequence(inputs: ReducerInputs) -> ReducedTokens:
    """All N tokens in raster order (what a reducer returns for a budget of N or more)."""
    batch, n, _ = inputs.features.shape
    lengths = torch.full((batch,), n, dtype=torch.long, device=inputs.features.device)
    return ReducedTokens(inputs.features, lengths, patch_index(inputs).clone())


def require_budget(budget: int | None, method: str) -> int:
    """``budget``, or a ``ValueError`` saying that ``method`` works at a fixed number of tokens."""
    if budget is None:
        raise ValueError(
            f"The {method!r} reducer works at a fixed number of tokens and has no adaptive count: pass a "
            "token budget (e.g. budget=64) or a ratio (e.g. ratio=0.25)."
        )
    return budget


# The options of a reducer that works at a fixed number of tokens, and its registry check.
BUDGET_OPTIONS = ("budget", "ratio")


def check_budget_given(config) -> None:
    """Registry check of the methods with no adaptive count (``config``: a ``ReductionConfig``)."""
    config.require_budget_or_ratio("budget=64 or ratio=0.25")
