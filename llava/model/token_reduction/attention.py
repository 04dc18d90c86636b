"""Class attention of the tower's next layer, in the two forms PruMerge uses."""

from __future__ import annotations

import math

import torch


def class_attention(
    query_cls: torch.Tensor, keys: torch.Tensor, num_heads: int, variant: str
) -> torch.Tensor:
    """Attention of the CLS query over all tokens, CLS→CLS entry dropped, in float32.

    Args:
        query_cls: ``[B, D]`` ``q_proj`` output of the CLS token (bias included, unscaled).
        keys: ``[B, 1 + N, D]`` ``k_proj`` outputs, CLS first.
        num_heads: the layer's number of heads (used by the ``paper`` variant).
        variant: ``reference`` treats q and k as one head of width D (the authors' code);
            ``paper`` takes a softmax per head with ``1 / sqrt(D / num_heads)`` and averages the heads.

    Returns:
        ``[B, N]`` float32 attention of CLS to each patch (does not sum to one).
    """
    q, k = query_cls.float(), keys.float()
    batch, tokens, dim = k.shape
    if variant == "reference":
        logits = torch.einsum("bd,bnd->bn", q, k) / math.sqrt(dim)  # [B, 1 + N]
        return logits.softmax(dim=-1)[:, 1:]
    if variant == "paper":
        head_dim = dim // num_heads
        qh = q.view(batch, num_heads, head_dim)  # [B, H, d]
        kh = k.view(batch, tokens, num_heads, head_dim)  # [B, 1 + N, H, d]
        logits = torch.einsum("bhd,bnhd->bhn", qh, kh) / math.sqrt(head_dim)  # [B, H, 1 + N]
        return logits.softmax(dim=-1).mean(dim=1)[:, 1:]
    raise ValueError(f"Unknown reduction variant {variant!r}; choose 'reference' or 'paper'.")
