"""FastV inside the language model: KV cache = recomputation, batch = single, SDPA everywhere."""

from unittest import mock

import pytest
import torch
from tests_support import pad_left, prompt_ids, recompute_greedy

from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.in_llm import CACHE_ATTRIBUTE, find_cache

FASTV = {"method": "fastv", "ratio": 0.25, "llm_layer": 0}


@pytest.fixture
def fastv_model(tiny_llava):
    tokenizer, model = tiny_llava
    previous = model.config.mm_token_reduction
    model.set_token_reduction(FASTV)
    yield tokenizer, model
    model.set_token_reduction(previous)


@pytest.mark.parametrize(
    "questions", [["What is this?"], ["What is this?", "Describe the image in detail please.", "A B"]]
)
def test_cached_generation_equals_recomputation(fastv_model, questions):
    tokenizer, model = fastv_model
    ids, mask = pad_left([prompt_ids(tokenizer, q) for q in questions])
    pixels = torch.randn(len(questions), 3, 336, 336, generator=torch.Generator().manual_seed(4))
    cached = model.generate(
        ids,
        attention_mask=mask,
        images=pixels,
        max_new_tokens=6,
        do_sample=False,
        eos_token_id=None,
        pad_token_id=0,
    )
    assert cached.tolist() == recompute_greedy(model, ids, mask, pixels, 6).tolist()
    for i in range(len(questions)):  # each sample as in a batch of one
        alone = model.generate(
            ids[i : i + 1, mask[i].bool()],
            images=pixels[i : i + 1],
            max_new_tokens=6,
            do_sample=False,
            eos_token_id=None,
            pad_token_id=0,
        )
        assert alone[0].tolist() == cached[i].tolist()


def test_later_layers_cache_only_the_kept_tokens_and_sdpa_runs_everywhere(fastv_model):
    tokenizer, model = fastv_model
    ids = prompt_ids(tokenizer, "What is this?")[None]
    pixels = torch.randn(1, 3, 336, 336)
    spliced = model.prepare_multimodal_inputs(ids, None, pixels, padding_side="left")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    with mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as calls, torch.no_grad():
        out = model(
            inputs_embeds=spliced.inputs_embeds,
            attention_mask=spliced.attention_mask,
            visual_mask=spliced.visual_mask,
            use_cache=True,
        )
    assert model.config._attn_implementation == "sdpa"
    assert calls.call_count == model.config.num_hidden_layers  # every layer ran SDPA, none eager
    cache = find_cache(out)
    full, visual = spliced.inputs_embeds.shape[1], int(spliced.visual_mask.sum())
    assert cache.layers[0].keys.shape[-2] == full  # layers up to K keep every token
    assert cache.layers[1].keys.shape[-2] == full - visual + round(
        visual * 0.25
    )  # later layers: the kept ones
    (layout,) = getattr(cache, CACHE_ATTRIBUTE)
    assert layout.index.shape[1] == full - visual + round(visual * 0.25)


def test_fastv_needs_a_budget():
    with pytest.raises(ValueError, match="budget or ratio"):
        ReductionConfig("fastv")


def test_full_budget_keeps_the_full_sequence(tiny_llava):
    tokenizer, model = tiny_llava
    ids = prompt_ids(tokenizer, "What is this?")[None]
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(5))
    kwargs = {"max_new_tokens": 5, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    previous = model.config.mm_token_reduction
    try:
        model.set_token_reduction("none")
        plain = model.generate(ids, images=pixels, **kwargs)
        model.set_token_reduction({**FASTV, "ratio": 1.0})
        full = model.generate(ids, images=pixels, **kwargs)
    finally:
        model.set_token_reduction(previous)
    assert full.tolist() == plain.tolist()


def test_evaluation_runner_generation_uses_fastv(fastv_model):
    from llava.eval.runner import Loaded, generate_batch

    tokenizer, model = fastv_model
    prompt = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat is this? ASSISTANT:"
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(6))
    kwargs = {"max_new_tokens": 5, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    loaded = Loaded(tokenizer=tokenizer, model=model, image_processor=None, model_name="tiny")
    from llava.model.token_reduction.fastv import FastV

    with mock.patch.object(FastV, "keep", autospec=True, side_effect=FastV.keep) as keep:
        texts, _, _ = generate_batch(loaded, [prompt], pixels, kwargs)
    assert keep.call_count == 1  # the runner's prefill pruned (once; decoding steps drop nothing)
    assert int(keep.call_args.args[3].kept_visual[0].sum()) == round(576 * FASTV["ratio"])
    ids = prompt_ids(tokenizer, "What is this?")[None]
    direct = model.generate(ids, images=pixels, **kwargs)  # passes FastV's visual mask
    assert texts == [tokenizer.decode(direct[0], skip_special_tokens=True).strip()]


@pytest.mark.parametrize("implementation", ["eager", "sdpa"])
def test_batched_fastv_matches_single_under_each_attention_kernel(fastv_model, implementation):
    """Left-padded batch of 3: the pruned layout has padding, so the sliced mask is what keeps rows apart."""
    tokenizer, model = fastv_model
    questions = ["What is this?", "Describe the image in detail please.", "A B"]
    ids, mask = pad_left([prompt_ids(tokenizer, q) for q in questions])
    pixels = torch.randn(3, 3, 336, 336, generator=torch.Generator().manual_seed(8))
    kwargs = {"max_new_tokens": 5, "do_sample": False, "eos_token_id": None, "pad_token_id": 0}
    model.set_attn_implementation(implementation)
    try:
        batched = model.generate(ids, attention_mask=mask, images=pixels, **kwargs)
        alone = [
            model.generate(ids[i : i + 1, mask[i].bool()], images=pixels[i : i + 1], **kwargs)[0]
            for i in range(3)
        ]
    finally:
        model.set_attn_implementation("sdpa")
    assert batched.tolist() == [a.tolist() for a in alone]


def test_generate_raises_no_deprecation_warning(fastv_model, caplog):
    """Our generate path uses no deprecated argument name: no FutureWarning, no deprecation log line."""
    import logging
    import warnings

    tokenizer, model = fastv_model
    ids = prompt_ids(tokenizer, "What is this?")[None]
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(9))
    logging.Logger.warning_once.cache_clear()  # transformers logs each deprecation once per process
    with warnings.catch_warnings(), caplog.at_level(logging.WARNING):
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for reduction in (FASTV, "none"):
            model.set_token_reduction(reduction)
            out = model(input_ids=ids, images=pixels, use_cache=True)
            assert find_cache(out) is not None
            model.generate(
                ids, images=pixels, max_new_tokens=3, do_sample=False, eos_token_id=None, pad_token_id=0
            )
    assert not [r.getMessage() for r in caplog.records if "deprecat" in r.getMessage().lower()]


def _explicit_mask(valid: torch.Tensor) -> torch.Tensor:
    """``[B, 1, L, L]`` causal boolean mask with padding keys masked (what SDPA receives with padding)."""
    length = valid.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    return (causal[None] & valid[:, None, :])[:, None]


def test_sliced_masks_agree_across_mask_forms():
    """Slicing a given mask (bool or additive) and building one when the layer got None give the same rows."""
    from llava.model.token_reduction.in_llm import PrunedLayout, pack, slice_layer_inputs

    keep = torch.tensor([[1, 0, 1, 1, 0, 1], [0, 1, 1, 0, 0, 1]], dtype=torch.bool)  # 4 and 3 kept
    index, valid = pack(keep)
    layout = PrunedLayout(after_layer=0, full_length=6, index=index, valid=valid)
    assert index.tolist() == [[0, 2, 3, 5], [0, 1, 2, 5]] and valid.tolist()[1] == [False, True, True, True]
    cos = torch.arange(6.0)[None, :, None].expand(2, 6, 4)
    full = {
        "attention_mask": _explicit_mask(torch.ones(2, 6, dtype=torch.bool)),
        "position_embeddings": (cos, cos),
    }
    sliced = slice_layer_inputs(full, layout, "prefill", "sdpa", torch.float32)
    built = slice_layer_inputs({**full, "attention_mask": None}, layout, "prefill", "sdpa", torch.float32)
    additive = torch.zeros(2, 1, 6, 6).masked_fill(~full["attention_mask"], torch.finfo(torch.float32).min)
    eager = slice_layer_inputs(
        {**full, "attention_mask": additive}, layout, "prefill", "eager", torch.float32
    )
    real = valid[:, None, :, None]  # rows of real queries
    assert torch.equal(sliced["attention_mask"] & real, built["attention_mask"] & real)
    assert torch.equal((eager["attention_mask"] == 0) & real, sliced["attention_mask"] & real)
    assert sliced["position_embeddings"][0][:, :, 0].tolist() == index.float().tolist()  # original positions
    assert not sliced["attention_mask"][1, 0, 1, 0]  # a real query never sees the packing's padding
    padding_row = sliced["attention_mask"][1, 0, 0].tolist()
    assert padding_row == [True, False, False, False]  # the packing's padding sees itself only
    decode = {
        "attention_mask": torch.ones(2, 1, 1, 8, dtype=torch.bool),
        "position_embeddings": (cos[:, :1],) * 2,
    }
    step = slice_layer_inputs(decode, layout, "decode", "sdpa", torch.float32)["attention_mask"]
    assert step.shape == (2, 1, 1, 6) and step[1, 0, 0].tolist() == [False, True, True, True, True, True]
