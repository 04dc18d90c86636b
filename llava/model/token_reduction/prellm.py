"""Pre-LLM visual-token reducers from later work: VisionZip and DivPrune, vectorised over the batch.

* ``visionzip``: Yang et al., "VisionZip: Longer is Better but Not Necessary in Vision Language
  Models", CVPR 2025 (arXiv 2412.04467). Dominant tokens by class attention, plus contextual
  tokens made by merging the remaining tokens into evenly strided targets by key similarity.
* ``divprune``: Alvar et al., "DivPrune: Diversity-based Visual Token Pruning for Large Multimodal
  Models", CVPR 2025 (arXiv 2503.02175). Greedy max-min diversity subset of the features.

Both need a fixed budget (``budget`` or ``ratio``), so every image gets exactly ``min(budget, N)``
tokens and the outputs need no padding; as in :mod:`llava.model.token_reduction.reducers` the only
host synchronisation is the one in ``order_centres``, once per batch. A budget of ``N`` or more
returns the full sequence in raster order. ``docs/ComparisonReducers.md`` lists where these
implementations deviate from the authors' code.
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

# VisionZip's 64-token setting is 54 dominant + 10 contextual tokens (field.md, §2).
VISIONZIP_CONTEXTUAL_SHARE = (10, 64)


# ----------------------------------------------------------------------------------------------
# VisionZip
# ----------------------------------------------------------------------------------------------


def visionzip_split(budget: int) -> tuple[int, int]:
    """``(dominant, contextual)`` token counts for a VisionZip budget.

    VisionZip (Yang et al., CVPR 2025) spends 64 tokens as 54 dominant + 10 contextual. Other
    budgets keep that share: ``contextual = floor(budget * 10 / 64 + 1/2)`` (round half up) and
    ``dominant = budget - contextual``, e.g. 64 -> (54, 10), 128 -> (108, 20), 192 -> (162, 30),
    32 -> (27, 5), 4 -> (3, 1), 1 -> (1, 0). The split is set only through the budget.
    """
    num, den = VISIONZIP_CONTEXTUAL_SHARE
    contextual = (budget * num + den // 2) // den
    return budget - contextual, contextual


def _visionzip_masks(attention: torch.Tensor, dominant: int, contextual: int):
    """Dominant and target masks ``[B, N]`` (bool) of VisionZip.

    Dominant: the ``dominant`` patches with the largest class attention. Targets: among the
    ``R = N - dominant`` other patches in raster order, the ones at positions ``i * step``,
    ``i < contextual``, with ``step = max(1, R // contextual)`` (VisionZip's even stride).
    """
    n = attention.shape[1]
    is_dominant = descending_rank(attention) < dominant  # [B, N]
    rest = ~is_dominant
    if contextual == 0:
        return is_dominant, torch.zeros_like(rest)
    step = max(1, (n - dominant) // contextual)
    rest_pos = rest.long().cumsum(dim=-1) - 1  # [B, N] position among the remaining patches
    is_target = rest & (rest_pos % step == 0) & (rest_pos < contextual * step)
    return is_dominant, is_target


def _visionzip_merge(inputs: ReducerInputs, keys, targets, is_target, is_dominant) -> torch.Tensor:
    """Contextual tokens ``[B, C, D]``: each target averaged with the remaining patches assigned to it.

    Every remaining non-target patch goes to the target with the largest cosine similarity of
    keys (first target on ties); a target with nothing assigned is kept as is.
    """
    unit = F.normalize(keys.float(), dim=-1)  # [B, N, Dk]
    target_keys = unit.gather(1, targets[..., None].expand(-1, -1, unit.shape[-1]))  # [B, C, Dk]
    assign = (unit @ target_keys.transpose(1, 2)).argmax(dim=-1)  # [B, N] target slot per patch
    to_merge = ~(is_dominant | is_target)  # [B, N]
    weights = F.one_hot(assign, targets.shape[1]).transpose(1, 2).float()  # [B, C, N]
    weights = weights * to_merge[:, None, :].float()
    weights.scatter_(2, targets[..., None], 1.0)  # each target counts itself once
    merged = (weights @ inputs.features.float()) / weights.sum(dim=-1, keepdim=True)  # [B, C, D]
    return merged.to(inputs.features.dtype)


@register_reducer(
    "visionzip",
    needs_attention=True,
    description="VisionZip: top class-attention tokens + contextual tokens merged by key similarity",
    options=BUDGET_OPTIONS,
    check=check_budget_given,
)
def reduce_visionzip(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """VisionZip (Yang et al., CVPR 2025) at an exact budget.

    Output: the dominant tokens in ascending patch order, then the contextual tokens in ascending
    order of their target's patch index (their ``indices`` are the targets' patch indices).
    """
    budget = require_budget(config.budget, "visionzip")
    attention, keys = require_attention(inputs, "visionzip")
    n = attention.shape[1]
    if budget >= n:
        return full_sequence(inputs)
    dominant, contextual = visionzip_split(budget)
    is_dominant, is_target = _visionzip_masks(attention, dominant, contextual)
    index = patch_index(inputs)
    key = torch.where(is_dominant, index, n + index)  # dominant first, then targets; raster within
    order, valid, counts = order_centres(is_dominant | is_target, key)  # [B, K + C]
    dominant_tokens = gather_tokens(inputs.features, order[:, :dominant], valid[:, :dominant])
    if contextual == 0:
        return finish(dominant_tokens, order, valid, counts)
    targets = order[:, dominant:]  # [B, C]
    contextual_tokens = _visionzip_merge(inputs, keys, targets, is_target, is_dominant)
    tokens = torch.cat([dominant_tokens, contextual_tokens], dim=1)  # [B, K + C, D]
    return finish(tokens, order, valid, counts)


# ----------------------------------------------------------------------------------------------
# DivPrune
# ----------------------------------------------------------------------------------------------


def divprune_select(features: torch.Tensor, budget: int) -> torch.Tensor:
    """DivPrune's greedy max-min diversity selection (Alvar et al., CVPR 2025).

    Distances are cosine distances ``1 - cos(x_i, x_j)`` of the L2-normalised float32 features.
    The first pick is the patch whose nearest other patch is farthest (the largest
    nearest-neighbour distance); each later pick is the unselected patch whose minimum distance
    to the selected set is largest. Ties go to the lowest patch index (``argmax``).

    Cost: one ``[B, N, N]`` distance matrix (``O(B N^2 D)``), then ``budget - 1`` sequential steps of
    ``O(B N)`` each, vectorised over the batch and the candidates; no host synchronisation.

    Args:
        features: ``[B, N, D]``; ``budget``: ``1 <= budget <= N``.

    Returns:
        ``[B, N]`` bool mask of the ``budget`` selected patches of each image.
    """
    batch, n, _ = features.shape
    unit = F.normalize(features.float(), dim=-1)  # [B, N, D]
    dist = 1.0 - unit @ unit.transpose(1, 2)  # [B, N, N]
    eye = torch.eye(n, dtype=torch.bool, device=features.device)
    nearest = dist.masked_fill(eye, float("inf")).amin(dim=-1)  # [B, N]
    pick = nearest.argmax(dim=-1)  # [B]
    selected = torch.zeros(batch, n, dtype=torch.bool, device=features.device)
    min_dist = torch.full((batch, n), float("inf"), device=features.device)
    for _ in range(budget - 1):
        selected.scatter_(1, pick[:, None], True)
        row = dist.gather(1, pick[:, None, None].expand(-1, 1, n)).squeeze(1)  # [B, N]
        min_dist = torch.minimum(min_dist, row)
        pick = min_dist.masked_fill(selected, float("-inf")).argmax(dim=-1)  # [B]
    return selected.scatter_(1, pick[:, None], True)


@register_reducer(
    "divprune",
    needs_attention=False,
    description="DivPrune: greedy max-min cosine-diversity subset of the features",
    options=BUDGET_OPTIONS,
    check=check_budget_given,
)
def reduce_divprune(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """DivPrune (Alvar et al., CVPR 2025) at an exact budget; no merging, ascending patch order."""
    budget = require_budget(config.budget, "divprune")
    n = inputs.features.shape[1]
    if budget >= n:
        return full_sequence(inputs)
    selected = divprune_select(inputs.features, budget)  # [B, N]
    order, valid, counts = order_centres(selected, patch_index(inputs))  # [B, budget]
    return finish(gather_tokens(inputs.features, order, valid), order, valid, counts)
