"""The one prompt builder, left padding and generate() arguments every front end and training share."""

from __future__ import annotations

import argparse

import pytest
import torch

from llava.conversation import get_conv_template
from llava.mm_utils import tokenizer_image_token
from llava.prompting import (
    batch_prompt_ids,
    build_prompt,
    check_generation_args,
    conversation_ids,
    generation_kwargs,
    left_pad,
    prompt_ids,
)
from llava.train.data import render

SYSTEM = get_conv_template("vicuna_v1").system


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def test_build_prompt_with_and_without_image():
    assert build_prompt("vicuna_v1", "What is this?", image=True) == (
        f"{SYSTEM} USER: <image>\nWhat is this? ASSISTANT:"
    )
    assert build_prompt("vicuna_v1", "What is this?") == f"{SYSTEM} USER: What is this? ASSISTANT:"
    # an <image> already in the text is moved to the front by the template, as upstream
    assert build_prompt("vicuna_v1", "What is this?\n<image>") == build_prompt(
        "vicuna_v1", "What is this?", image=True
    )
    assert build_prompt(get_conv_template("llava_v1"), "Hi").startswith("A chat between a curious human")


def test_prompt_ids_are_the_prompt_tokenised_with_one_image_index(tokenizer):
    ids = prompt_ids(tokenizer, "What is this?", image=True)
    expected = tokenizer_image_token(build_prompt("vicuna_v1", "What is this?", image=True), tokenizer)
    assert ids.dtype == torch.long and ids.tolist() == expected
    assert (ids == -200).sum() == 1 and ids[0] == tokenizer.bos_token_id


def test_training_renders_the_inference_prompt(tokenizer):
    """A one-turn training sample is the generation prompt followed by its answer, token for token."""
    turns = [{"from": "human", "value": "What is this?\n<image>"}, {"from": "gpt", "value": "A cat."}]
    text, spans = render(turns, get_conv_template("vicuna_v1"))
    prompt = build_prompt("vicuna_v1", "What is this?", image=True)
    assert text == prompt + " A cat.</s>" and [text[a:b] for a, b in spans] == [" A cat.</s>"]
    inference = prompt_ids(tokenizer, "What is this?", image=True).tolist()
    assert tokenizer_image_token(text, tokenizer)[: len(inference)] == inference


def test_conversation_ids_follow_the_conversation(tokenizer):
    conv = get_conv_template("vicuna_v1")
    conv.append_message("USER", "<image>\nQ")
    conv.append_message("ASSISTANT", None)
    assert conversation_ids(conv, tokenizer).tolist() == prompt_ids(tokenizer, "Q", image=True).tolist()


def test_left_pad_keeps_each_sequence_at_the_right_edge():
    ids, mask = left_pad([torch.tensor([5, 6, 7]), [8]], pad_id=9)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]]
    assert mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert ids.dtype == mask.dtype == torch.long


def test_batch_prompt_ids_pads_with_the_tokenizers_pad_id(tokenizer):
    prompts = [build_prompt("vicuna_v1", q, image=True) for q in ("What is this?", "Describe it in detail.")]
    ids, mask = batch_prompt_ids(tokenizer, prompts)
    singles = [prompt_ids(tokenizer, q, image=True) for q in ("What is this?", "Describe it in detail.")]
    for row, single in enumerate(singles):
        assert ids[row, mask[row].bool()].tolist() == single.tolist()
        assert set(ids[row, ~mask[row].bool()].tolist()) <= {tokenizer.pad_token_id}


def test_generation_kwargs_greedy_and_sampling(tokenizer):
    greedy = generation_kwargs(tokenizer, 7, temperature=0.0, top_p=0.9, num_beams=2)
    assert greedy == {
        "max_new_tokens": 7,
        "do_sample": False,
        "num_beams": 2,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "use_cache": True,
    }
    sampled = generation_kwargs(tokenizer, 7, temperature=0.7, top_p=0.9)
    assert (sampled["do_sample"], sampled["temperature"], sampled["top_p"]) == (True, 0.7, 0.9)
    assert "top_p" not in generation_kwargs(tokenizer, 7, temperature=0.7)


def _args(**changes):
    values = {
        "temperature": 0.2,
        "max_new_tokens": 8,
        "reduction_budget": None,
        "token_reduction": None,
        "device": "cpu",
        "dtype": "auto",
    }
    return argparse.Namespace(**{**values, **changes})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"temperature": -1.0}, "--temperature"),
        ({"max_new_tokens": 0}, "--max-new-tokens"),
        ({"reduction_budget": -1}, "--reduction-budget"),
        ({"token_reduction": "no-such-reducer"}, "no-such-reducer"),
        ({"device": "nonsense"}, "--device"),
    ],
)
def test_check_generation_args_names_the_bad_option(changes, message):
    assert check_generation_args(_args()) == "cpu"
    with pytest.raises(ValueError, match=message):
        check_generation_args(_args(**changes))
