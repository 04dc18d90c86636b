"""ATP-LLaVA inside the language model (training-free, fixed thresholds): the scoring functions, the keep
rule, pruning at several layers with original positions, KV cache = recomputation, batch = single, SDPA."""

from unittest import mock

import pytest
import torch
from tests_support import pad_left, prompt_ids, recompute_greedy

from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.atp import (
    ATP,
    ThresholdPredictor,
    average_visual_tokens,
    hard_keep,
    layer_attention,
    layer_token_counts,
    minmax_normalise,
    predictor_input,
    redundancy_scores,
    soft_keep,
    spatial_levels,
    spatial_scores,
    text_queries,
)
from llava.model.token_reduction.in_llm import CACHE_ATTRIBUTE, find_cache

LAYERS = 4  # the tiny model's decoder layers in this module
ATP_ALL = {
    "method": "atp",
    "atp_layers": (1, 2, 3),
    "atp_redundancy_threshold": -1.0,
    "atp_spatial_threshold": -1.0,
}
ATP_MID = {**ATP_ALL, "atp_redundancy_threshold": 0.6, "atp_spatial_threshold": 0.5}
GEN = {"do_sample": False, "eos_token_id": None, "pad_token_id": 0}


@pytest.fixture(scope="module")
def atp_llava(tiny_llava_dir, tmp_path_factory):
    """``(tokenizer, model)``: a 4-layer tiny LLaVA (the session's tower and tokenizer), reduction none."""
    from llava.model.loader import load_pretrained_model
    from llava.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("tiny_llava_4_layers")
    build_tiny_llava(
        out, clip_dir=tiny_llava_dir / "vision_tower", tokenizer_dir=tiny_llava_dir, num_layers=LAYERS
    )
    tokenizer, model, _, _ = load_pretrained_model(str(out), device="cpu")
    return tokenizer, model


@pytest.fixture
def with_reduction(atp_llava):
    """Sets a reduction on the 4-layer model for one test, then back to none."""
    tokenizer, model = atp_llava

    def use(reduction):
        model.set_token_reduction(reduction)
        return tokenizer, model

    yield use
    model.set_token_reduction("none")


def pixels_for(n, seed):
    return torch.randn(n, 3, 336, 336, generator=torch.Generator().manual_seed(seed))


def spy_keep():
    """Patches ``ATP.keep`` to record each call's returned keep mask and the step's visual mask."""
    seen, original = [], ATP.keep

    def keep(self, layer_idx, hidden, step):
        visual, rank = step.visual.clone(), step.visual_rank.clone()
        kept = original(self, layer_idx, hidden, step)
        seen.append({"layer": layer_idx, "visual": visual, "rank": rank, "keep": kept, "step": step})
        return kept

    return seen, mock.patch.object(ATP, "keep", keep)


# --- the tensor functions -------------------------------------------------------------------------------


def test_spatial_branch_keeps_whole_nested_grids_sized_from_the_patch_grid():
    assert spatial_levels(24) == [(2, 144), (4, 36), (8, 9)]
    assert spatial_levels(16) == [(2, 64), (4, 16), (8, 4)]  # derived from the grid, not fixed counts
    for side, counts in ((24, (0, 9, 36, 144)), (16, (0, 4, 16, 64))):
        rank = torch.arange(side * side)[None]
        scores = spatial_scores(rank, torch.tensor([side]), lam=3.0)
        kept = [int((scores > theta).sum()) for theta in (0.99, 0.9, 0.5, 0.1)]
        assert tuple(kept) == counts
        on_six = (scores > 0.5)[0].view(side, side).nonzero()
        assert bool((on_six % 4 == 0).all())  # the 6x6 grid (side 24): rows and columns multiples of 4
    scores = spatial_scores(torch.arange(576)[None], torch.tensor([24]), lam=3.0)[0]
    assert sorted({round(v, 4) for v in scores.tolist()}) == [0.0, 0.25, 0.8125, 0.9531]
    assert spatial_scores(torch.tensor([[-1, 0]]), torch.tensor([24]), 3.0)[0, 0] == 0  # not visual


def test_redundancy_scores_use_later_visual_queries_and_prompt_text():
    # positions: 0 text before the image, 1-3 visual, 4-5 prompt text after it
    probs = torch.zeros(1, 6, 6)
    probs[0, 1, 1] = 1.0
    probs[0, 2, 1:3] = torch.tensor([0.2, 0.8])
    probs[0, 3, 1:4] = torch.tensor([0.4, 0.1, 0.5])
    probs[0, 4, 1:4] = torch.tensor([0.3, 0.3, 0.0])
    probs[0, 5, 1:4] = torch.tensor([0.1, 0.5, 0.2])
    visual = torch.tensor([[0, 1, 1, 1, 0, 0]], dtype=torch.bool)
    queries = text_queries(visual, torch.ones(1, 6, dtype=torch.bool), torch.tensor([5]))
    assert queries.tolist() == [[False, False, False, False, True, True]]
    s_self, s_cross = redundancy_scores(probs, visual, queries)
    # token 1 is seen by visual rows 1, 2, 3; token 3 by row 3 only (causal), so each is a mean over its own
    torch.testing.assert_close(s_self[0], torch.tensor([0, 1.6 / 3, 0.9 / 2, 0.5, 0, 0]))
    torch.testing.assert_close(s_cross[0], torch.tensor([0, 0.2, 0.4, 0.1, 0, 0]))
    hat = minmax_normalise(s_cross, visual)[0]
    torch.testing.assert_close(hat[1:4], torch.tensor([1 / 3, 1.0, 0.0]), atol=1e-5, rtol=0)
    assert hat[1:4].max() < 1 and hat[0] == hat[4] == 0
    assert text_queries(visual, torch.ones(1, 6, dtype=torch.bool), torch.tensor([4]))[0, 5].item() is False
    empty = torch.zeros(1, 6, dtype=torch.bool)  # nothing left to normalise over: zeros, no NaN
    assert minmax_normalise(s_cross, empty).tolist() == [[0.0] * 6]


def test_layer_attention_equals_the_eager_attention_weights(tiny_llava):
    tokenizer, model = tiny_llava
    ids, mask = pad_left([prompt_ids(tokenizer, q) for q in ("What is this?", "A B")])
    with torch.no_grad():
        spliced = model.prepare_multimodal_inputs(ids, mask, pixels_for(2, 1), padding_side="left")
        embeds, valid = spliced.inputs_embeds, spliced.attention_mask.bool()
        positions = (valid.long().cumsum(1) - 1).clamp(min=0)
        model.set_attn_implementation("eager")
        try:
            eager = model.model(
                inputs_embeds=embeds,
                attention_mask=spliced.attention_mask,
                position_ids=positions,
                output_attentions=True,
            ).attentions[0]
        finally:
            model.set_attn_implementation("sdpa")
        ours = layer_attention(
            model.model.layers[0], embeds, model.model.rotary_emb(embeds, positions), valid
        )
    rows = valid[:, :, None] & valid[:, None, :]
    torch.testing.assert_close(ours * rows, eager.mean(dim=1) * rows, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(ours[valid].sum(-1), torch.ones(int(valid.sum())))


def test_soft_and_hard_masks_agree_at_one_half():
    gen = torch.Generator().manual_seed(0)
    s_r, s_s = torch.rand(3, 200, generator=gen), torch.rand(3, 200, generator=gen)
    theta_r, theta_s = torch.rand(3, generator=gen), torch.rand(3, generator=gen)
    soft = soft_keep(s_r, s_s, theta_r, theta_s, temperature=0.1)
    hard = hard_keep(s_r, s_s, theta_r, theta_s)
    assert torch.equal(soft > 0.5, hard) and 0 < int(hard.sum()) < hard.numel()
    # either branch alone keeps a token; a score equal to its threshold passes neither rule
    assert hard_keep(torch.tensor([[0.9, 0.1, 0.5]]), torch.tensor([[0.0, 0.8, 0.2]]), 0.5, 0.5).tolist() == [
        [True, True, False]
    ]
    assert soft_keep(torch.tensor([[0.5]]), torch.tensor([[0.0]]), 0.5, 0.5, 0.1).item() == 0.5
    assert soft_keep(torch.tensor([[0.6]]), torch.tensor([[0.0]]), 0.5, 0.5, 0.01) > soft_keep(
        torch.tensor([[0.6]]), torch.tensor([[0.0]]), 0.5, 0.5, 0.1
    )  # a lower temperature is sharper


def test_threshold_predictor_input_layout_and_start():
    rank = torch.tensor([[-1, 0, 2, -1], [3, 1, -1, -1]])
    self_hat = torch.tensor([[9.0, 0.1, 0.2, 9.0], [0.3, 0.4, 9.0, 9.0]])
    u = predictor_input(self_hat, self_hat + 1, rank, num_tokens=4)
    expected = torch.tensor([[0.1, 0, 0.2, 0, 1.1, 0, 1.2, 0], [0, 0.4, 0, 0.3, 0, 1.4, 0, 1.3]])
    torch.testing.assert_close(u, expected)
    torch.manual_seed(0)
    predictor = ThresholdPredictor(num_tokens=576)
    assert predictor.hidden_weight.shape == (256, 1152) and predictor.head_weight.shape == (2, 256)
    theta_r, theta_s = predictor(torch.rand(2, 1152))
    assert theta_r.shape == theta_s.shape == (2,) and theta_r.dtype == torch.float32
    start = torch.sigmoid(torch.tensor(-4.0))
    torch.testing.assert_close(theta_r, start.expand(2), atol=0.01, rtol=0)  # almost everything kept at first
    assert predictor(torch.rand(2, 1152, dtype=torch.bfloat16))[0].dtype == torch.float32


def test_average_visual_tokens_counts_every_layer():
    initial = torch.tensor([576, 576])
    assert average_visual_tokens(initial, [torch.tensor([144, 144])], (4,), 32).tolist() == [198.0, 198.0]
    kept = [torch.tensor([106, 143]), torch.tensor([81, 109]), torch.tensor([19, 21])]
    counts = layer_token_counts(initial, kept, (4, 14, 24), 32)
    assert counts[0, :4].tolist() == [576] * 4 and counts[0, 4:14].tolist() == [106] * 10
    assert counts[1, 24:].tolist() == [21] * 8
    expected = (4 * 576 + 10 * 106 + 10 * 81 + 8 * 19) / 32
    torch.testing.assert_close(
        average_visual_tokens(initial, kept, (4, 14, 24), 32)[0], torch.tensor(expected)
    )


# --- inside the model ----------------------------------------------------------------------------------


def test_keep_all_thresholds_give_the_unpruned_logits_and_answers(with_reduction):
    tokenizer, model = with_reduction("none")
    questions = ("What is this?", "Describe the image in detail please.")
    ids, mask = pad_left([prompt_ids(tokenizer, q) for q in questions])
    pixels = pixels_for(2, 2)
    spliced = model.prepare_multimodal_inputs(ids, mask, pixels, padding_side="left")
    inputs = {
        "inputs_embeds": spliced.inputs_embeds,
        "attention_mask": spliced.attention_mask,
        "position_ids": spliced.position_ids,
    }
    with torch.no_grad():
        plain = model(**inputs).logits
        plain_answers = model.generate(ids, attention_mask=mask, images=pixels, max_new_tokens=5, **GEN)
        with_reduction(ATP_ALL)
        seen, patch = spy_keep()
        with patch:
            pruned = model(**inputs, visual_mask=spliced.visual_mask).logits
        answers = model.generate(ids, attention_mask=mask, images=pixels, max_new_tokens=5, **GEN)
    assert [s["layer"] for s in seen] == [0, 1, 2]  # insertion layers 1, 2, 3 read layers 0, 1, 2
    assert all(s["keep"][s["visual"]].all() for s in seen)  # every visual token kept at every module
    valid = spliced.attention_mask.bool()
    torch.testing.assert_close(pruned[valid], plain[valid], atol=1e-6, rtol=1e-6)
    assert answers.tolist() == plain_answers.tolist()


@pytest.mark.parametrize("theta_s, count", [(0.99, 0), (0.9, 9), (0.5, 36), (0.1, 144)])
def test_spatial_branch_alone_keeps_exactly_the_grid_tokens(with_reduction, theta_s, count):
    tokenizer, model = with_reduction(
        {**ATP_ALL, "atp_layers": (1, 3), "atp_redundancy_threshold": 1.0, "atp_spatial_threshold": theta_s}
    )
    ids = prompt_ids(tokenizer, "What is this?")[None]
    seen, patch = spy_keep()
    with patch, torch.no_grad():
        out = model(input_ids=ids, images=pixels_for(1, 3), use_cache=True)
    first = seen[0]
    kept_ranks = first["rank"][first["keep"] & first["visual"]]
    stride = {0: None, 9: 8, 36: 4, 144: 2}[count]
    assert len(kept_ranks) == count == int(first["step"].kept_visual[0][0])
    if stride:
        assert bool(((kept_ranks // 24 % stride == 0) & (kept_ranks % 24 % stride == 0)).all())
    assert (
        int(first["step"].kept_visual[1][0]) == count
    )  # the second module keeps the same grid, revives none
    cache = find_cache(out)
    assert cache.layers[3].keys.shape[-2] == cache.layers[0].keys.shape[-2] - 576 + count


def test_kept_tokens_keep_their_original_positions_and_decoding_continues(with_reduction):
    tokenizer, model = with_reduction(ATP_MID)
    ids = prompt_ids(tokenizer, "What is this?")[None]
    seen_positions = []

    def record(layer, args, kwargs):
        seen_positions.append((kwargs["position_ids"].clone(), kwargs["position_embeddings"][0].clone()))

    handle = model.model.layers[LAYERS - 1].register_forward_pre_hook(record, with_kwargs=True)
    try:
        steps = 3
        spliced = model.prepare_multimodal_inputs(ids, None, pixels_for(1, 4), padding_side="left")
        model.generate_spliced(spliced, max_new_tokens=steps + 1, **GEN)
    finally:
        handle.remove()
    full = spliced.inputs_embeds.shape[1]
    prefill_ids, prefill_cos = seen_positions[0]
    assert prefill_ids.shape[1] < full - 100  # the last layer ran on a pruned prompt
    assert prefill_ids[0].tolist() == sorted(set(prefill_ids[0].tolist()))  # in order, distinct
    assert prefill_ids[0, -1] == full - 1 and prefill_ids[0, 0] == 0  # BOS and the last prompt token stay
    expected = model.model.rotary_emb(spliced.inputs_embeds, prefill_ids)[0]
    torch.testing.assert_close(prefill_cos, expected)  # RoPE phases of the original positions
    for t, (ids_t, cos_t) in enumerate(seen_positions[1:]):
        assert ids_t.tolist() == [[full + t]]  # decode step t: full prompt length + t
        torch.testing.assert_close(cos_t, model.model.rotary_emb(spliced.inputs_embeds, ids_t)[0])
    assert len(seen_positions) == 1 + steps


def test_cached_generation_equals_recomputation_and_batch_equals_single(with_reduction):
    tokenizer, model = with_reduction(ATP_MID)
    questions = ["What is this?", "Describe the image in detail please.", "A B"]
    ids, mask = pad_left([prompt_ids(tokenizer, q) for q in questions])
    pixels = pixels_for(3, 5)
    seen, patch = spy_keep()
    with patch:
        cached = model.generate(ids, attention_mask=mask, images=pixels, max_new_tokens=6, **GEN)
    kept = seen[0]["step"].kept_visual  # [B] per module, of the prefill
    assert int(kept[0].max()) < 576 and int(kept[-1].min()) > 0  # pruned, not emptied
    assert len(set(kept[0].tolist())) > 1  # the samples kept different numbers (instance-wise)
    assert all(bool((later <= earlier).all()) for earlier, later in zip(kept, kept[1:]))  # none revived
    assert cached.tolist() == recompute_greedy(model, ids, mask, pixels, 6).tolist()
    for i in range(len(questions)):
        alone = model.generate(
            ids[i : i + 1, mask[i].bool()], images=pixels[i : i + 1], max_new_tokens=6, **GEN
        )
        assert alone[0].tolist() == cached[i].tolist()


def test_sdpa_runs_in_every_layer_and_each_segment_caches_its_kept_tokens(with_reduction):
    tokenizer, model = with_reduction(ATP_MID)
    ids = prompt_ids(tokenizer, "What is this?")[None]
    spliced = model.prepare_multimodal_inputs(ids, None, pixels_for(1, 6), padding_side="left")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    eager = mock.patch("transformers.models.llama.modeling_llama.eager_attention_forward")
    with (
        mock.patch("torch.nn.functional.scaled_dot_product_attention", wraps=sdpa) as calls,
        eager as eager_calls,
    ):
        with torch.no_grad():
            out = model(
                inputs_embeds=spliced.inputs_embeds,
                attention_mask=spliced.attention_mask,
                visual_mask=spliced.visual_mask,
                use_cache=True,
            )
    assert model.config._attn_implementation == "sdpa"
    assert calls.call_count == LAYERS and eager_calls.call_count == 0
    cache = find_cache(out)
    layouts = getattr(cache, CACHE_ATTRIBUTE)
    assert [layout.after_layer for layout in layouts] == [0, 1, 2]
    lengths = [cache.layers[i].keys.shape[-2] for i in range(LAYERS)]
    assert lengths == [spliced.inputs_embeds.shape[1]] + [layout.index.shape[1] for layout in layouts]
    assert lengths[0] > lengths[1] >= lengths[2] >= lengths[3]


def test_average_visual_tokens_of_a_run(with_reduction):
    tokenizer, model = with_reduction(
        {**ATP_ALL, "atp_redundancy_threshold": 1.0, "atp_spatial_threshold": 0.5}
    )
    ids = prompt_ids(tokenizer, "What is this?")[None]
    seen, patch = spy_keep()
    with patch, torch.no_grad():
        model(input_ids=ids, images=pixels_for(1, 7))
    step = seen[-1]["step"]
    average = average_visual_tokens(step.visual_count, step.kept_visual, (1, 2, 3), LAYERS)
    assert average.tolist() == [(576 + 3 * 36) / 4]
    assert model.visual_token_schedule().tolist() == [[576, 36, 36, 36]]
    with torch.no_grad():  # a text-only prompt prunes nothing and leaves no schedule
        model(input_ids=prompt_ids(tokenizer, "Hello", image=False)[None])
    assert model.visual_token_schedule() is None


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "options, message",
    [
        ({"atp_redundancy_threshold": 0.5}, "Give both fixed ATP thresholds"),
        (
            {"atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.9, "atp_layers": (14, 4)},
            "increasing",
        ),
        ({"atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.9, "atp_layers": (4, 4)}, "increasing"),
        ({"atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.9, "atp_layers": (0, 4)}, ">= 1"),
        ({"atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.9, "atp_target_tokens": 0}, "positive"),
        (
            {"atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.9, "atp_temperature": 0.0},
            "atp_temperature",
        ),
        (
            {"atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.9, "llm_layer": 3},
            "option of 'fastv'.*One reduction method runs per model",
        ),
        (
            {"atp_redundancy_threshold": 0.5, "atp_spatial_threshold": 0.9, "budget": 144},
            "the 'atp' reducer has none",
        ),
    ],
)
def test_bad_options_raise(options, message):
    with pytest.raises(ValueError, match=message):
        ReductionConfig("atp", **options)


def test_atp_without_thresholds_needs_trained_modules(with_reduction):
    tokenizer, model = with_reduction("none")
    with pytest.raises(
        ValueError, match="predicts its thresholds with trained ATP modules, and this checkpoint"
    ):
        model.set_token_reduction({"method": "atp", "atp_layers": (1, 2, 3)})
    assert model.token_reduction.method == "none"  # nothing switched


def test_fastv_and_atp_cannot_both_be_chosen():
    with pytest.raises(ValueError, match="one method runs per model"):
        ReductionConfig("fastv+atp")
    with pytest.raises(ValueError, match="option of 'atp'; the 'fastv' reducer has none"):
        ReductionConfig("fastv", ratio=0.5, atp_layers=(2,))


def test_layers_and_target_are_checked_against_the_model(with_reduction):
    tokenizer, model = with_reduction("none")
    with pytest.raises(ValueError, match=r"insertion layer\(s\) \[4, 14\] are out of range.*1\.\.3"):
        model.set_token_reduction({**ATP_MID, "atp_layers": (2, 4, 14)})
    assert model.token_reduction.method == "none"  # nothing switched
    with pytest.raises(ValueError, match="atp_target_tokens=600 is more than the 576 visual tokens"):
        model.set_token_reduction({**ATP_MID, "atp_target_tokens": 600})
    assert model.set_token_reduction({**ATP_MID, "atp_target_tokens": 144}).atp_target_tokens == 144


def test_atp_options_round_trip_through_config_json_and_flags():
    import argparse

    import transformers

    from llava.model.token_reduction.args import (
        ReductionArguments,
        add_reduction_args,
        apply_changes,
        reduction_changes,
    )

    config = ReductionConfig(**{**ATP_MID, "atp_layers": (4, 14, 24)})
    assert config.to_dict()["atp_layers"] == [4, 14, 24]
    assert ReductionConfig.from_value(config.to_dict()) == config
    parser = argparse.ArgumentParser()
    add_reduction_args(parser)
    argv = ["--token-reduction", "atp", "--reduction-atp-layers", "2,6"]
    argv += ["--reduction-atp-redundancy-threshold", "0.5", "--reduction-atp-spatial-threshold", "0.9"]
    changed = apply_changes(ReductionConfig(), reduction_changes(parser.parse_args(argv)))
    assert changed.atp_layers == (2, 6) and changed.atp_spatial_threshold == 0.9
    (args,) = transformers.HfArgumentParser((ReductionArguments,)).parse_args_into_dataclasses(
        args=["--" + a[2:].replace("-", "_") if a.startswith("--") else a for a in argv]
    )
    assert args.reduction_atp_layers == "2,6" and args.to_config() == changed
    assert ReductionArguments().reduction_atp_layers == "4,14,24"
    (alias,) = transformers.HfArgumentParser((ReductionArguments,)).parse_args_into_dataclasses(
        args=["--token_reduction", "atp", "--atp_target_tokens", "144", "--atp_layers", "2,6"]
    )  # the training flags also answer to ATP's own option names
    assert alias.to_config().atp_target_tokens == 144 and alias.to_config().atp_layers == (2, 6)
    assert reduction_changes({"reduction_atp_layers": "3,5"}) == {"atp_layers": (3, 5)}


# --- training: soft masks ------------------------------------------------------------------------------


@pytest.fixture
def training(with_reduction):
    """The 4-layer model in training mode with fresh ATP modules (seeded) for one test; then back."""
    tokenizer, model = with_reduction("none")
    torch.manual_seed(0)
    model.add_atp_modules((1, 2, 3))

    def use(reduction):
        model.set_token_reduction(reduction)
        model.train()
        return tokenizer, model

    yield use
    model.eval()
    model.zero_grad(set_to_none=True)
    del model.model.atp_modules
    model.config.mm_atp_layers = None


def answered(tokenizer, question, answer_ids=(100, 101, 102)):
    """``(ids, labels)`` ``[1, T]``: the prompt followed by answer tokens, labels on the answer only."""
    ids = torch.cat([prompt_ids(tokenizer, question), torch.tensor(answer_ids)])[None]
    labels = torch.full_like(ids, -100)
    labels[0, -len(answer_ids) :] = ids[0, -len(answer_ids) :]
    return ids, labels


def test_soft_path_with_keep_all_masks_gives_the_unpruned_logits(training):
    tokenizer, model = training("none")
    ids, labels = answered(tokenizer, "What is this?")
    pixels = pixels_for(1, 11)
    with torch.no_grad():
        plain = model(input_ids=ids, images=pixels, labels=labels)
        tokenizer, model = training({**ATP_ALL, "atp_target_tokens": 144})
        soft = model(input_ids=ids, images=pixels, labels=labels)
    assert soft.atp_kept_tokens.min() > 575.9  # D ≈ 1: σ((S + 1) / 0.1) ≥ σ(10)
    torch.testing.assert_close(soft.logits, plain.logits, atol=2e-4, rtol=1e-4)
    torch.testing.assert_close(soft.loss, plain.loss, atol=1e-4, rtol=1e-4)


def test_soft_and_hard_keep_the_same_tokens_at_the_first_module(training):
    tokenizer, model = training({**ATP_MID, "atp_target_tokens": 144})
    ids = prompt_ids(tokenizer, "What is this?")[None]
    pixels = pixels_for(1, 12)
    masks = []
    original = ATP.soft_mask

    def spy(self, layer_idx, hidden, step):
        mask = original(self, layer_idx, hidden, step)
        masks.append((mask, step.visual.clone()))
        return mask

    with mock.patch.object(ATP, "soft_mask", spy), torch.no_grad():
        model(input_ids=ids, images=pixels)  # training mode: soft
    model.eval()
    seen, patch = spy_keep()
    with patch, torch.no_grad():
        model(input_ids=ids, images=pixels)
    soft_mask, visual = masks[0]
    hard = seen[0]["keep"]  # the first module sees the same attention in both modes
    assert 0 < int(hard[visual].sum()) < 576
    assert torch.equal(soft_mask[visual] > 0.5, hard[visual])


def test_budget_gradients_reach_the_threshold_heads_and_not_the_scores(training):
    tokenizer, model = training(
        {**ATP_ALL, "atp_redundancy_threshold": None, "atp_spatial_threshold": None, "atp_target_tokens": 144}
    )
    ids, labels = answered(tokenizer, "What is this?")
    out = model(input_ids=ids, images=pixels_for(1, 13), labels=labels)
    assert 0.9 * 576 < float(out.atp_mean_tokens) <= 576  # untrained modules keep almost everything
    (out.atp_budget_loss + out.atp_target_loss).backward()
    for name, param in model.model.atp_modules.named_parameters():
        assert param.grad is not None and param.grad.abs().sum() > 0, name
    # the scores are detached: the budget reaches the language model through nothing
    assert all(p.grad is None for p in model.model.layers.parameters())
    model.zero_grad(set_to_none=True)
    out = model(input_ids=ids, images=pixels_for(1, 13), labels=labels)
    out.loss.backward()  # the language-model loss reaches the thresholds through the attention bias
    assert model.model.atp_modules.predictor(2).head_bias.grad.abs().sum() > 0


def test_activation_checkpointing_gives_the_same_gradients(training):
    tokenizer, model = training({"method": "atp", "atp_layers": (1, 2, 3), "atp_target_tokens": 100})
    ids, labels = answered(tokenizer, "What is this?")
    pixels = pixels_for(1, 14)

    def gradients():
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids, images=pixels, labels=labels)
        (out.loss + out.atp_budget_loss + out.atp_target_loss).backward()
        return {n: p.grad.clone() for n, p in model.model.atp_modules.named_parameters()}

    plain = gradients()
    enable = getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
    disable = getattr(model, "activation_checkpointing_disable", None) or model.gradient_checkpointing_disable
    enable()
    try:
        checkpointed = gradients()
    finally:
        disable()
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, atol=1e-6, rtol=1e-4)


def test_training_queries_stop_before_the_answer():
    from llava.model.language_model.llava_llama import last_prompt_positions

    labels = torch.tensor([[-100, -100, -100, 5, 6, -100], [-100, -100, 7, -100, -100, -100], [-100] * 6])
    mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 0]])
    assert last_prompt_positions(labels, mask).tolist() == [2, 1, 4]


def test_budget_losses_follow_the_definitions():
    from llava.model.token_reduction.atp import budget_losses

    initial = torch.tensor([576, 576, 0])
    kept = [torch.tensor([288.0, 576.0, 0.0]), torch.tensor([144.0, 576.0, 0.0])]
    terms = budget_losses(initial, kept, (8, 16), 32, target=144.0)
    nbar = torch.tensor([(8 * 576 + 8 * 288 + 16 * 144) / 32, 576.0])
    torch.testing.assert_close(terms["mean_tokens"], nbar.mean())  # the image-less sample does not count
    expected_target = ((nbar - 144).abs() / 576).mean()
    torch.testing.assert_close(terms["target"], expected_target)
    l_atp = torch.tensor([(8 / 32 * 288 / 576 + 16 / 32 * 144 / 576) / 2, (8 / 32 + 16 / 32) / 2])
    torch.testing.assert_close(terms["budget"], l_atp.mean())
    torch.testing.assert_close(terms["kept"], torch.tensor([432.0, 360.0]))
    torch.testing.assert_close(nbar, average_visual_tokens(initial[:2], [k[:2] for k in kept], (8, 16), 32))


def test_a_prompt_cut_inside_the_image_keeps_the_towers_grid():
    from llava.model.token_reduction.atp import grid_side

    counts = torch.tensor([576, 479, 0])  # whole, cut at the context length, no image
    assert grid_side(counts, grid_tokens=576).tolist() == [24, 24, 0]
    with pytest.raises(ValueError, match="479 visual tokens"):
        grid_side(counts)  # without the tower's grid, a cut image is no square
    with pytest.raises(ValueError, match="1152 visual tokens.*one image per prompt"):
        grid_side(torch.tensor([1152]), grid_tokens=576)
