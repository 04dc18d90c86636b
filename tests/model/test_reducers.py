"""Reducers against small cases worked out by hand from the spec, plus their edge cases and properties."""

import itertools

import numpy as np
import pytest
import torch

from llava.model.token_reduction import (
    ReducerInputs,
    ReductionConfig,
    available_reducers,
    class_attention,
    descending_rank,
    outlier_count,
    reduce,
)


def make_inputs(attention, features=None, keys=None, grid=None) -> ReducerInputs:
    attention = torch.as_tensor(attention, dtype=torch.float32)
    if attention.dim() == 1:
        attention = attention[None]
    batch, n = attention.shape
    gen = torch.Generator().manual_seed(0)
    if features is None:
        features = torch.randn(batch, n, 6, generator=gen)
    if keys is None:
        keys = torch.randn(batch, n, 5, generator=gen)
    side = int(round(n**0.5))
    return ReducerInputs(features, attention, keys, grid or (side, n // side))


def random_inputs(batch=4, n=144, dim=8, seed=0) -> ReducerInputs:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, n, generator=gen) * torch.linspace(0.5, 3.0, batch)[:, None]
    attention = logits.softmax(-1) * 0.9
    return ReducerInputs(
        torch.randn(batch, n, dim, generator=gen),
        attention,
        torch.randn(batch, n, 6, generator=gen),
        (12, 12),
    )


def test_outlier_count_by_hand_and_against_numpy():
    # Q1 = 2.75, Q3 = 6.25 (linear interpolation), fence = 6.25 + 1.5 * 3.5 = 11.5: only 100 is above.
    values = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 100], [1.0, 1, 1, 1, 1, 1, 1, 1]])
    assert outlier_count(values).tolist() == [1, 0]
    gen = torch.Generator().manual_seed(1)
    batch = torch.rand(5, 576, generator=gen) ** 6
    for row, count in zip(batch, outlier_count(batch)):
        q1, q3 = np.percentile(row.numpy(), [25, 75])
        assert int(count) == int((row.numpy() > q3 + 1.5 * (q3 - q1)).sum())


def test_descending_rank():
    assert descending_rank(torch.tensor([[0.1, 0.5, 0.3, 0.2]])).tolist() == [[3, 0, 1, 2]]


def test_prumerge_reference_by_hand():
    # Patch 0 has the largest attention; with a budget of 2 tokens it is the one kept token (plus the
    # extra token). Its cosine-nearest other key is patch 2, so y'_0 = y_0 + a_2 * y_2, and the extra
    # token is the attention-weighted sum of every patch that is not a centre.
    attention = torch.tensor([0.5, 0.1, 0.2, 0.05])
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [3.0, -1.0]]])
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 0.1], [-1.0, 0.0]]])
    cfg = ReductionConfig("prumerge", budget=2, num_neighbors=1)
    out = reduce(make_inputs(attention, features, keys), cfg)
    assert out.lengths.tolist() == [2]
    assert out.indices.tolist() == [[0, -1]]
    expected_centre = torch.tensor([1.0 + 0.2 * 2, 0.2 * 2])
    expected_extra = 0.1 * features[0, 1] + 0.2 * features[0, 2] + 0.05 * features[0, 3]
    torch.testing.assert_close(out.tokens[0, 0], expected_centre)
    torch.testing.assert_close(out.tokens[0, 1], expected_extra)


def test_prumerge_paper_by_hand():
    # Paper variant: neighbours by raw key dot product, weighted average, raster order, no extra token.
    attention = torch.tensor([0.1, 0.5, 0.2, 0.05])
    features = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [3.0, -1.0]]])
    keys = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [3.0, 0.5], [-1.0, 0.0]]])
    cfg = ReductionConfig("prumerge", variant="paper", budget=2, num_neighbors=1)
    out = reduce(make_inputs(attention, features, keys), cfg)
    # Kept: patches 1 (0.5) and 2 (0.2), in raster order. Neighbour of 1: argmax k1 . kj = patch 2 (0.5);
    # neighbour of 2: argmax k2 . kj = patch 0 (3.0).
    assert out.indices.tolist() == [[1, 2]]
    y = features[0]
    torch.testing.assert_close(out.tokens[0, 0], (0.5 * y[1] + 0.2 * y[2]) / 0.7)
    torch.testing.assert_close(out.tokens[0, 1], (0.2 * y[2] + 0.1 * y[0]) / 0.3)


def test_prumerge_with_no_outlier_returns_the_extra_token_alone():
    n = 576
    attention = torch.full((1, n), 1.0 / (n + 1))
    out = reduce(make_inputs(attention), ReductionConfig("prumerge"))
    assert out.lengths.tolist() == [1]
    assert out.indices.tolist() == [[-1]]
    feats = make_inputs(attention).features
    torch.testing.assert_close(out.tokens[0, 0], (attention[0, :, None] * feats[0]).sum(0))


def test_prumerge_plus_with_no_outlier_samples_thirds():
    n = 576
    attention = torch.full((1, n), 1.0 / (n + 1))
    out = reduce(make_inputs(attention), ReductionConfig("prumerge_plus"))
    # max(m, 1) = 1 -> stride 576, step 192: samples 0, 192, 384, then the extra token.
    assert out.indices.tolist() == [[0, 192, 384, -1]]
    assert out.lengths.tolist() == [4]


def test_prumerge_plus_unit_step_keeps_every_patch_but_the_last():
    # m = 130 -> s = 4, step = 1 (the authors' flat-image case). m > N / 3, where their step would be 0,
    # cannot come from the IQR rule (at most a quarter of the values lie above Q3); it is guarded anyway.
    n = 576
    attention = torch.full((n,), 1e-4)
    high = torch.arange(0, 260, 2)
    attention[high] = 1e-2
    out = reduce(make_inputs(attention), ReductionConfig("prumerge_plus"))
    idx = out.indices[0, : out.lengths[0] - 1]
    assert out.lengths.tolist() == [576]  # 575 centres + the extra token
    assert sorted(idx.tolist()) == list(range(575))
    assert sorted(idx[:130].tolist()) == high.tolist()  # the kept tokens come first


def test_prumerge_plus_adaptive_order_and_dedup():
    n = 576
    attention = torch.full((n,), 1e-4)
    attention[[13, 100, 300]] = torch.tensor([3e-2, 2e-2, 1e-2])
    out = reduce(make_inputs(attention), ReductionConfig("prumerge_plus"))
    # m = 3 -> s = 192, step = 64: samples 0, 64, ..., 512 (9 of them); 13/100/300 are not among them.
    idx = out.indices[0].tolist()
    assert idx == [13, 100, 300, *range(0, 575, 64), -1]
    attention[64] = 5e-2  # now a kept token is also a sample: it appears once, first
    idx = reduce(make_inputs(attention), ReductionConfig("prumerge_plus")).indices[0].tolist()
    # m = 4 -> s = 144, step = 48
    samples = [i for i in range(0, 575, 48) if i not in (64, 13, 100, 300)]
    assert idx == [64, 13, 100, 300, *samples, -1]


def test_prumerge_plus_fixed_form_deduplicates():
    inputs = random_inputs(batch=1, n=576, dim=4)
    out = reduce(inputs, ReductionConfig("prumerge_plus", form="fixed"))
    idx = out.indices[0, : out.lengths[0] - 1]
    top = set(inputs.attention[0].topk(72).indices.tolist())
    samples = set(range(4, 575, 8))
    assert len(samples) == 72
    assert len(idx.unique()) == len(idx)
    assert set(idx.tolist()) == top | samples
    assert out.lengths.item() == len(top | samples) + 1


def test_prumerge_plus_paper_lattice_is_two_dimensional():
    n = 576
    attention = torch.full((n,), 1e-4)
    attention[torch.arange(16) * 7] = 1e-2  # 16 outliers -> a 4 x 4 lattice
    out = reduce(make_inputs(attention), ReductionConfig("prumerge_plus", variant="paper"))
    idx = out.indices[0].tolist()
    lattice = {r * 24 + c for r in (3, 9, 15, 21) for c in (3, 9, 15, 21)}
    assert set(idx) == lattice | set(range(0, 112, 7))
    assert idx == sorted(idx)  # raster order


def test_aits_keeps_outliers_without_merge():
    inputs = random_inputs(batch=2, n=144)
    out = reduce(inputs, ReductionConfig("aits"))
    for b in range(2):
        m = int(outlier_count(inputs.attention[b : b + 1]))
        idx = out.indices[b, :m]
        assert out.lengths[b] == m
        assert idx.tolist() == inputs.attention[b].topk(m).indices.tolist()
        torch.testing.assert_close(out.tokens[b, :m], inputs.features[b, idx])


def test_sequential_and_spatial():
    inputs = random_inputs(batch=1, n=576)
    inputs.grid = (24, 24)
    out = reduce(inputs, ReductionConfig("sequential", budget=40))
    assert out.indices[0].tolist() == list(range(40))
    out = reduce(inputs, ReductionConfig("spatial", grid=(5, 8)))
    rows, cols = [2, 7, 12, 16, 21], [1, 4, 7, 10, 13, 16, 19, 22]
    assert out.indices[0].tolist() == [r * 24 + c for r in rows for c in cols]
    torch.testing.assert_close(out.tokens[0], inputs.features[0, out.indices[0]])
    assert reduce(inputs, ReductionConfig("spatial", budget=35)).lengths.tolist() == [35]  # 5 x 7
    with pytest.raises(ValueError, match="does not fit"):
        reduce(inputs, ReductionConfig("spatial", budget=37))


def test_none_is_identity():
    inputs = random_inputs(batch=2, n=144)
    out = reduce(inputs, ReductionConfig("none"))
    assert torch.equal(out.tokens, inputs.features)
    assert out.lengths.tolist() == [144, 144]


ALL_CONFIGS = [
    ReductionConfig("prumerge"),
    ReductionConfig("prumerge", variant="paper"),
    ReductionConfig("prumerge_plus"),
    ReductionConfig("prumerge_plus", form="fixed"),
    ReductionConfig("prumerge_plus", variant="paper"),
    ReductionConfig("prumerge_plus", variant="paper", form="fixed"),
    ReductionConfig("aits"),
    ReductionConfig("aits", variant="paper"),
    ReductionConfig("sequential", budget=20),
    ReductionConfig("spatial", grid=(4, 4)),
    ReductionConfig("none"),
]
BUDGET_CONFIGS = [
    ReductionConfig(method, variant=variant, budget=budget)
    for method, variant, budget in itertools.product(
        ["prumerge", "prumerge_plus", "aits", "sequential", "spatial"], ["reference", "paper"], [16, 32, 64]
    )
]


@pytest.mark.parametrize("cfg", ALL_CONFIGS + BUDGET_CONFIGS, ids=lambda c: c.describe())
def test_batch_invariance_and_padding(cfg):
    inputs = random_inputs(batch=5, n=144)
    out = reduce(inputs, cfg)
    width = out.tokens.shape[1]
    assert out.indices.shape == (5, width)
    for b in range(5):
        single = reduce(
            ReducerInputs(
                inputs.features[b : b + 1], inputs.attention[b : b + 1], inputs.keys[b : b + 1], (12, 12)
            ),
            cfg,
        )
        length = int(single.lengths[0])
        assert int(out.lengths[b]) == length
        assert torch.equal(out.indices[b, :length], single.indices[0, :length])
        torch.testing.assert_close(out.tokens[b, :length], single.tokens[0, :length], rtol=1e-5, atol=1e-6)
        assert torch.all(out.tokens[b, length:] == 0)
        assert torch.all(out.indices[b, length:] == -1)
        kept = out.indices[b, :length]
        kept = kept[kept >= 0]
        assert len(kept.unique()) == len(kept)


@pytest.mark.parametrize("cfg", BUDGET_CONFIGS, ids=lambda c: c.describe())
def test_budget_is_exact(cfg):
    out = reduce(random_inputs(batch=3, n=144), cfg)
    assert out.lengths.tolist() == [cfg.budget] * 3


def test_outputs_keep_the_feature_dtype_and_counts_under_bfloat16():
    inputs = random_inputs(batch=3, n=144)
    low = ReducerInputs(inputs.features.bfloat16(), inputs.attention, inputs.keys, inputs.grid)
    for cfg in ALL_CONFIGS[:6]:
        a, b = reduce(inputs, cfg), reduce(low, cfg)
        assert b.tokens.dtype == torch.bfloat16
        assert torch.equal(a.lengths, b.lengths) and torch.equal(a.indices, b.indices)
        torch.testing.assert_close(b.tokens.float(), a.tokens, rtol=2e-2, atol=2e-2)


def test_class_attention_variants():
    gen = torch.Generator().manual_seed(3)
    q, k = torch.randn(2, 8, generator=gen), torch.randn(2, 5, 8, generator=gen)
    ref = class_attention(q, k, num_heads=2, variant="reference")
    manual = torch.softmax(k[0] @ q[0] / 8**0.5, -1)[1:]
    torch.testing.assert_close(ref[0], manual)
    paper = class_attention(q, k, num_heads=2, variant="paper")
    heads = [
        torch.softmax(k[1, :, h * 4 : h * 4 + 4] @ q[1, h * 4 : h * 4 + 4] / 2.0, -1)[1:] for h in range(2)
    ]
    torch.testing.assert_close(paper[1], (heads[0] + heads[1]) / 2)
    assert ref.dtype == paper.dtype == torch.float32


def test_unknown_method_and_bad_options_are_clear():
    with pytest.raises(ValueError, match="valid methods are: aits, .*none, prumerge, prumerge_plus"):
        ReductionConfig("prumerge_pls")
    with pytest.raises(ValueError, match="Unknown reduction variant"):
        ReductionConfig("prumerge", variant="authors")
    with pytest.raises(ValueError, match="needs a token budget"):
        ReductionConfig("sequential")
    with pytest.raises(ValueError, match="Unknown token-reduction option"):
        ReductionConfig.from_value({"method": "prumerge", "keep": 0.1})
    assert set(available_reducers()) >= {"none", "prumerge", "prumerge_plus", "aits", "sequential", "spatial"}


def test_config_round_trip():
    cfg = ReductionConfig("spatial", grid=(5, 8))
    assert ReductionConfig.from_value(cfg.to_dict()) == cfg
    assert cfg.to_dict()["grid"] == [5, 8]
    assert ReductionConfig.from_value("prumerge_plus").method == "prumerge_plus"
    assert ReductionConfig.from_value(None).method == "none"


def test_config_replace_drops_options_of_the_old_method():
    spatial = ReductionConfig("spatial", grid=(5, 8))
    assert spatial.replace(method="prumerge").grid is None
    budgeted = ReductionConfig("prumerge", budget=64)
    assert budgeted.replace(method="prumerge_plus").budget == 64
    assert budgeted.replace(method="none").budget is None
    assert budgeted.replace(variant="paper") == ReductionConfig("prumerge", variant="paper", budget=64)


def test_ratio_is_a_budget_relative_to_n():
    inputs = random_inputs(batch=2, n=144)
    out = reduce(inputs, ReductionConfig("aits", ratio=0.25))
    assert out.lengths.tolist() == [36, 36]
    assert ReductionConfig("sequential", ratio=0.5).for_tokens(576).budget == 288
    with pytest.raises(ValueError, match="not both"):
        ReductionConfig("aits", ratio=0.5, budget=3)


def test_no_reducer_returns_more_tokens_than_it_got_or_an_all_zero_token():
    """Adaptive PruMerge+ when >= 116 outliers include the last patch: every patch becomes a centre."""
    from llava.model.token_reduction import ReducerInputs, ReductionConfig, get_reducer, outlier_count

    n, generator = 576, torch.Generator().manual_seed(3)
    attention = torch.full((1, n), 1e-4) + 1e-7 * torch.rand(1, n, generator=generator)
    big = torch.cat([torch.randperm(n - 1, generator=generator)[:135], torch.tensor([n - 1])])
    attention[0, big] = 0.5 + torch.rand(136, generator=generator)
    attention = attention / attention.sum()
    assert int(outlier_count(attention)[0]) == 136
    inputs = ReducerInputs(
        features=torch.randn(1, n, 16, generator=generator),
        attention=attention,
        keys=torch.randn(1, n, 16, generator=generator),
        grid=(24, 24),
    )
    for reduction in ({"method": "prumerge_plus"}, {"method": "prumerge", "budget": 576}):
        out = get_reducer(reduction["method"]).fn(inputs, ReductionConfig.from_value(reduction))
        length = int(out.lengths[0])
        assert length == n, reduction  # all N patches, no extra token on top
        assert (out.tokens[0, :length].abs().amax(-1) > 0).all(), reduction  # no all-zero token


def _inputs_16(attention_values: dict[int, float]):
    """A 4 x 4 grid whose class attention is 0.01 + a tiny raster ramp, with some patches set high."""
    from llava.model.token_reduction import ReducerInputs

    attention = 0.01 + 1e-5 * torch.arange(16, dtype=torch.float32)
    for patch, value in attention_values.items():
        attention[patch] = value
    generator = torch.Generator().manual_seed(0)
    return ReducerInputs(
        features=torch.randn(1, 16, 8, generator=generator),
        attention=attention[None],
        keys=torch.randn(1, 16, 8, generator=generator),
        grid=(4, 4),
    )


def test_budgeted_prumerge_plus_selects_by_hand():
    """Budget 9, reference: 8 centres = round(8 x 0.25) = 2 by attention (6, 9) + 6 spread over the other 14
    patches at floor((i + 0.5) x 14 / 6) = 1, 3, 5, 8, 10, 12 of them, i.e. patches 1, 3, 5, 10, 12, 14;
    then the extra token. Paper, budget 8: round(8 x 0.5) = 4 by attention, 4 spread over the other 12
    at 1, 4, 7, 10 of them, output in raster order, no extra token."""
    from llava.model.token_reduction import ReductionConfig, get_reducer

    plus = get_reducer("prumerge_plus").fn
    inputs = _inputs_16({6: 0.5, 9: 0.3, 2: 0.2, 13: 0.1})
    out = plus(inputs, ReductionConfig("prumerge_plus", budget=9))
    assert out.lengths.tolist() == [9] and out.indices[0].tolist() == [6, 9, 1, 3, 5, 10, 12, 14, -1]
    out = plus(inputs, ReductionConfig("prumerge_plus", variant="paper", budget=8))
    # by attention: 6, 9, 2, 13; the other 12 in raster order: 0 1 3 4 5 7 8 10 11 12 14 15 -> 1, 5, 10, 14
    assert out.lengths.tolist() == [8] and out.indices[0].tolist() == [1, 2, 5, 6, 9, 10, 13, 14]


def test_paper_variant_never_returns_nothing_and_its_lattice_rounds():
    from llava.model.token_reduction import ReductionConfig, get_reducer, outlier_count
    from llava.model.token_reduction.reducers import _lattice

    flat = _inputs_16({})  # no IQR outlier at all
    assert int(outlier_count(flat.attention)[0]) == 0
    for method in ("prumerge", "aits"):
        out = get_reducer(method).fn(flat, ReductionConfig(method, variant="paper"))
        assert out.lengths.tolist() == [1] and out.indices[0].tolist() == [15], method  # the top patch
    # 10 points on 24 x 24: round(sqrt(10)) = 3 rows, round(10 / 3) = 3 columns, at 4, 12, 20
    # 7 points: 3 rows (4, 12, 20) x round(7 / 3) = 2 columns (6, 18)
    mask = _lattice(torch.tensor([10, 7]), (24, 24))
    assert mask[0].nonzero().flatten().tolist() == [r * 24 + c for r in (4, 12, 20) for c in (4, 12, 20)]
    assert mask[1].nonzero().flatten().tolist() == [r * 24 + c for r in (4, 12, 20) for c in (6, 18)]
