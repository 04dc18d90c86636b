"""The inputs of generation, built once for every front end: prompt ids, left-padded batches, ``generate`` arguments.

- :func:`build_prompt` / :func:`prompt_ids`: the one-turn generation prompt for a question (with or
  without an image) under a conversation template, e.g.
  ``{system} USER: <image>\\n{question} ASSISTANT:``, and its ids (``<image>`` becomes one
  ``IMAGE_TOKEN_INDEX``; see :func:`llava.mm_utils.tokenizer_image_token`). :func:`conversation_ids`
  tokenises a whole conversation (the CLI's multi-turn chat). The template text comes from
  :meth:`llava.conversation.Conversation.render`, which training (:func:`llava.train.data.render`) renders
  its samples with, so a training sample's prompt ids are those of inference.
- :func:`left_pad` / :func:`batch_prompt_ids`: batches for batched generation, padded on the left.
- :func:`generation_kwargs`: the arguments of ``generate`` (greedy at temperature 0, as upstream).
- :func:`check_generation_args` / :func:`check_device`: the option checks the command lines share.

The evaluation runners, the CLI, the web demo, the Cog predictor, the lmms-eval plugin, the quickstart
and the tests all build their prompts here.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import Conversation, get_conv_template
from llava.dtypes import resolve_dtype
from llava.mm_utils import tokenizer_image_token
from llava.model.token_reduction.args import check_reduction_args

#: The template LLaVA-1.5 was trained with, and the one every eval script passes.
DEFAULT_CONV_MODE = "vicuna_v1"


# ---------------------------------------------------------------------------------------------
# Prompts
# ---------------------------------------------------------------------------------------------


def with_image(text: str, image: bool = True) -> str:
    """``text`` with ``<image>\\n`` in front when ``image`` (the user's turn of a question about an image)."""
    return f"{DEFAULT_IMAGE_TOKEN}\n{text}" if image else text


def new_conversation(template: str | Conversation = DEFAULT_CONV_MODE) -> Conversation:
    """An empty conversation under ``template`` (a name of ``conv_templates`` or a template)."""
    if isinstance(template, Conversation):
        conv = template.copy()
        conv.messages = []
        return conv
    return get_conv_template(template)


def build_prompt(template: str | Conversation, text: str, image: bool = False) -> str:
    """The one-turn generation prompt, e.g. ``{system} USER: <image>\\n{text} ASSISTANT:``.

    Args:
        template: the conversation template (a name such as ``vicuna_v1``, or a template).
        text: the user's turn; an ``<image>`` in it is moved to the front by the template.
        image: put ``<image>\\n`` in front of ``text`` (for a text that holds none).
    """
    conv = new_conversation(template)
    conv.append_message(conv.roles[0], with_image(text, image))
    conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def conversation_ids(conv: Conversation, tokenizer: Any) -> torch.Tensor:
    """``[T]`` ids of ``conv``'s prompt (one ``IMAGE_TOKEN_INDEX`` per ``<image>``, one BOS)."""
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")


def prompt_ids(
    tokenizer: Any, text: str, template: str | Conversation = DEFAULT_CONV_MODE, image: bool = False
) -> torch.Tensor:
    """``[T]`` ids of the one-turn generation prompt for ``text`` (see :func:`build_prompt`)."""
    return tokenizer_image_token(build_prompt(template, text, image), tokenizer, return_tensors="pt")


#: The template Video-LLaVA was trained and evaluated with ("A chat between a curious human ...").
VIDEO_CONV_MODE = "llava_v1"


def video_prompt(question: str, num_frames: int = 8, template: str | Conversation = VIDEO_CONV_MODE) -> str:
    """Video-LLaVA's generation prompt: ``{system} USER: <image>`` × ``num_frames`` ``\\n{question} ASSISTANT:``.

    One ``<image>`` marker per frame, as upstream's video QA builds it; each becomes one placeholder
    that :class:`~llava.model.language_model.llava_video.LlavaVideoForCausalLM` replaces by its frame's tokens.
    """
    slot = "\x00question\x00"  # the template moves <image> markers, so they are put in afterwards
    return build_prompt(template, slot).replace(slot, DEFAULT_IMAGE_TOKEN * num_frames + "\n" + question)


def video_prompt_ids(
    tokenizer: Any, question: str, num_frames: int = 8, template: str | Conversation = VIDEO_CONV_MODE
) -> torch.Tensor:
    """``[L]`` ids of :func:`video_prompt`, with ``num_frames`` ``IMAGE_TOKEN_INDEX`` placeholders."""
    return tokenizer_image_token(video_prompt(question, num_frames, template), tokenizer, return_tensors="pt")


# ---------------------------------------------------------------------------------------------
# Batches
# ---------------------------------------------------------------------------------------------


def pad_token_id(tokenizer: Any) -> int:
    """The id that pads a batch: the tokenizer's pad id, else 0 (masked out, so its value is not used)."""
    return tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0


def left_pad(
    sequences: Sequence[torch.Tensor | Sequence[int]], pad_id: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Stacks 1-D id sequences (tensors or lists) padded on the left: ids ``[B, T]`` and mask ``[B, T]``.

    Left padding keeps every prompt's last token in the last column, where generation continues.
    """
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, seq in enumerate(sequences):
        ids[row, width - len(seq) :] = torch.as_tensor(seq, dtype=torch.long)
        mask[row, width - len(seq) :] = 1
    return ids, mask


def batch_prompt_ids(tokenizer: Any, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompt strings tokenised (:func:`~llava.mm_utils.tokenizer_image_token`) and left padded: ids, mask."""
    ids = [tokenizer_image_token(p, tokenizer, return_tensors="pt") for p in prompts]
    return left_pad(ids, pad_token_id(tokenizer))


# ---------------------------------------------------------------------------------------------
# generate() arguments and the options behind them
# ---------------------------------------------------------------------------------------------


def generation_kwargs(
    tokenizer: Any,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_p: float | None = None,
    num_beams: int = 1,
) -> dict[str, Any]:
    """Arguments for ``generate``, as upstream: sampling only when ``temperature > 0``; stops at EOS.

    ``temperature`` and ``top_p`` are passed only when sampling (``top_p`` only when given).
    """
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    kwargs: dict[str, Any] = {
        "max_new_tokens": max_new_tokens,
        "do_sample": temperature > 0,
        "num_beams": num_beams,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": pad,
        "use_cache": True,
    }
    if temperature > 0:
        kwargs["temperature"] = temperature
        if top_p is not None:
            kwargs["top_p"] = top_p
    return kwargs


def check_device(name: str | None) -> str:
    """The device to use: ``name`` once checked, or CUDA when available, else the CPU."""
    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"--device {name!r} is not a device name (use cpu, cuda or cuda:N).") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name} was asked for but CUDA is not available; use --device cpu.")
    return name


def check_generation_args(args: argparse.Namespace) -> str:
    """Fails on option values that are wrong whatever the checkpoint; returns the device to use.

    Checks ``--temperature``, ``--max-new-tokens``, the reduction flags, ``--device`` and ``--dtype``
    (against that device: bfloat16 on a GPU without it fails here). Runs before the model is loaded, so
    these mistakes cost no loading time.
    """
    if args.temperature < 0:
        raise ValueError(f"--temperature must be >= 0 (0 = greedy), got {args.temperature}.")
    if args.max_new_tokens < 1:
        raise ValueError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}.")
    check_reduction_args(args)
    device = check_device(args.device)
    resolve_dtype(args.dtype, device)
    return device
