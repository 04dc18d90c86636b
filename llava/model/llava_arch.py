"""Splicing each image's visual tokens into its prompt at the ``IMAGE_TOKEN_INDEX`` placeholder.

Every image brings its own number of tokens (the reducer decides), so the spliced sequences have
different lengths. The splice is one scatter for the whole batch: each text token and each visual
token gets its destination position from a cumulative sum of widths (1 per text token, the image's
length per placeholder, 0 per padding token); tokens past ``max_length`` are dropped.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from llava.constants import IGNORE_INDEX, IMAGE_TOKEN_INDEX


@dataclass
class MultimodalInputs:
    """Spliced inputs for the language model.

    Attributes:
        inputs_embeds: ``[B, L, H]``.
        attention_mask: ``[B, L]`` int64 (1 on real tokens).
        position_ids: ``[B, L]`` int64 (0, 1, ... on real tokens, 0 on padding).
        labels: ``[B, L]`` with ``IGNORE_INDEX`` on visual tokens and padding, or None.
        num_visual_tokens: ``[B]`` int64 visual tokens spliced into each sample (before truncation).
        truncated: ``[B]`` bool, samples cut at ``max_length``.
        visual_mask: ``[B, L]`` bool, True at the positions that hold visual tokens.
    """

    inputs_embeds: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    labels: torch.Tensor | None
    num_visual_tokens: torch.Tensor
    truncated: torch.Tensor
    visual_mask: torch.Tensor | None = None


def splice_visual_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    labels: torch.Tensor | None,
    image_tokens: torch.Tensor,
    image_lengths: torch.Tensor,
    embed: Callable[[torch.Tensor], torch.Tensor],
    max_length: int | None = None,
    padding_side: str = "right",
) -> MultimodalInputs:
    """Replaces every placeholder by its image's tokens, truncates, and re-pads the batch.

    Args:
        input_ids: ``[B, T]`` token ids with one ``IMAGE_TOKEN_INDEX`` per image.
        attention_mask: ``[B, T]`` (padding on either side), or None for no padding.
        labels: ``[B, T]`` or None.
        image_tokens: ``[I, M, H]`` projected visual tokens of the I images, in placeholder order
            (row-major over the batch), zero-padded after each image's length.
        image_lengths: ``[I]`` int64 tokens of each image.
        embed: the language model's token embedding.
        max_length: truncate the spliced sequences to this many tokens.
        padding_side: ``right`` (training) or ``left`` (batched generation).
    """
    layout = _plan(input_ids, attention_mask, image_lengths, image_tokens.shape[1], max_length, padding_side)
    batch, stride, length = input_ids.shape[0], layout.stride, layout.length
    text_embeds = embed(input_ids.masked_fill(~layout.text, 0)).flatten(0, 1)  # [B * T, H]
    hidden = text_embeds.shape[-1]
    dest = torch.cat([layout.text_dest, layout.img_dest])[:, None].expand(-1, hidden)
    source = torch.cat([text_embeds, image_tokens.to(text_embeds.dtype).flatten(0, 1)])
    embeds = text_embeds.new_zeros(batch * stride, hidden).scatter(0, dest, source)
    embeds = embeds.view(batch, stride, hidden)[:, :length]  # [B, L, H]

    new_labels = None
    if labels is not None:
        label_values = labels.masked_fill(~layout.text, IGNORE_INDEX).flatten()
        new_labels = labels.new_full((batch * stride,), IGNORE_INDEX).scatter(
            0, layout.text_dest, label_values
        )
        new_labels = new_labels.view(batch, stride)[:, :length]

    device = input_ids.device
    positions = torch.arange(length, device=device)[None] - layout.shift[:, None]  # [B, L]
    mask = (positions >= 0) & (positions < layout.kept[:, None])
    visual = torch.zeros(batch, dtype=torch.long, device=device).index_add_(
        0, layout.img_batch, image_lengths.to(device)
    )
    visual_mask = torch.zeros(batch * stride, dtype=torch.bool, device=device)
    visual_mask[layout.img_dest] = True
    return MultimodalInputs(
        inputs_embeds=embeds,
        attention_mask=mask.long(),
        position_ids=positions.clamp(min=0) * mask,
        labels=new_labels,
        num_visual_tokens=visual,
        truncated=layout.total > layout.kept,
        visual_mask=visual_mask.view(batch, stride)[:, :length],
    )


@dataclass
class _Layout:
    """Where each token of the batch goes in the spliced, re-padded ``[B, stride]`` grid (flattened)."""

    length: int  # L, the padded length of the spliced batch
    stride: int  # L + 1: one spare slot per row receives every token that is dropped
    total: torch.Tensor  # [B] spliced tokens per sample before truncation
    kept: torch.Tensor  # [B] after truncation
    shift: torch.Tensor  # [B] left-padding offset (0 for right padding)
    text: torch.Tensor  # [B, T] bool, real text tokens
    text_dest: torch.Tensor  # [B * T] flat destination of every input position
    img_batch: torch.Tensor  # [I] the sample of each image
    img_dest: torch.Tensor  # [I * M] flat destination of every visual token slot


def _plan(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    image_lengths: torch.Tensor,
    max_tokens: int,
    max_length: int | None,
    padding_side: str,
) -> _Layout:
    """The destinations of :func:`splice_visual_tokens`: widths (1 per text token, the image's length per
    placeholder, 0 per padding token), their cumulative sum, truncation and padding."""
    batch, _ = input_ids.shape
    device = input_ids.device
    real = (
        attention_mask.bool() if attention_mask is not None else torch.ones_like(input_ids, dtype=torch.bool)
    )
    is_image = (input_ids == IMAGE_TOKEN_INDEX) & real  # [B, T]
    n_placeholders = int(is_image.sum())
    if n_placeholders != image_lengths.shape[0]:
        raise ValueError(
            f"Image features and image tokens do not match: the prompts hold {n_placeholders} <image> "
            f"placeholder(s) but {image_lengths.shape[0]} image(s) were given."
        )
    image_lengths = image_lengths.to(device)
    image_of = (is_image.flatten().long().cumsum(0) - 1).view_as(input_ids).clamp(min=0)  # [B, T]
    widths = torch.where(is_image, image_lengths[image_of] if n_placeholders else 0, real.long())
    end = widths.cumsum(dim=1)  # [B, T]
    start = end - widths
    total = end[:, -1] if end.shape[1] else torch.zeros(batch, dtype=torch.long, device=device)
    kept = total.clamp(max=max_length) if max_length is not None else total  # [B]
    length = int(kept.max()) if batch else 0  # the one host sync: the padded length
    shift = (length - kept) if padding_side == "left" else torch.zeros_like(kept)  # [B]
    stride = length + 1
    rows = torch.arange(batch, device=device)

    text = real & ~is_image
    text_slot = torch.where(text & (start < kept[:, None]), start + shift[:, None], length)  # [B, T]
    img_batch, img_pos = is_image.nonzero(as_tuple=True)  # [I] each, in placeholder order
    offset = torch.arange(max_tokens, device=device)[None]  # [1, M]
    img_start = start[img_batch, img_pos][:, None] + offset  # [I, M]
    img_ok = (offset < image_lengths[:, None]) & (img_start < kept[img_batch][:, None])
    img_slot = torch.where(img_ok, img_start + shift[img_batch][:, None], length)  # [I, M]
    return _Layout(
        length=length,
        stride=stride,
        total=total,
        kept=kept,
        shift=shift,
        text=text,
        text_dest=(text_slot + rows[:, None] * stride).flatten(),
        img_batch=img_batch,
        img_dest=(img_slot + img_batch[:, None] * stride).flatten(),
    )
