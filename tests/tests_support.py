"""Small helpers shared by test modules (prompts and padding)."""

import torch

from llava.conversation import get_conv_template
from llava.mm_utils import tokenizer_image_token


def prompt_ids(tokenizer, question: str, image: bool = True) -> torch.Tensor:
    """The vicuna_v1 generation prompt for ``question`` (with ``<image>`` first), tokenised."""
    conv = get_conv_template("vicuna_v1")
    conv.append_message(conv.roles[0], ("<image>\n" if image else "") + question)
    conv.append_message(conv.roles[1], None)
    return tokenizer_image_token(conv.get_prompt(), tokenizer, return_tensors="pt")


def pad_left(seqs: list[torch.Tensor], value: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids ``[B, T]`` and attention mask."""
    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), value, dtype=torch.long)
    mask = torch.zeros(len(seqs), width, dtype=torch.long)
    for i, s in enumerate(seqs):
        ids[i, width - len(s) :], mask[i, width - len(s) :] = s, 1
    return ids, mask
