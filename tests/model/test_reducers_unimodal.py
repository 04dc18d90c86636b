"""ToMe, EViT and ATS on the tower's output: budgets, order, batch invariance and hand-worked cases."""

from types import SimpleNamespace

import pytest
import torch

from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.token_reduction import ReducerInputs, ReductionConfig, get_reducer, reduce
from llava.model.token_reduction.unimodal import ats_scores
from llava.tiny import tiny_clip_config

METHODS = ("tome", "evit", "ats")


def make_inputs(batch: int = 3, rows: int = 8, cols: int = 8, dim: int = 6, seed: int = 0) -> ReducerInputs:
    gen = torch.Generator().manual_seed(seed)
    n = rows * cols
    features = torch.randn(batch, n, dim, generator=gen)
    attention = torch.randn(batch, n, generator=gen).mul(2).softmax(dim=-1)
    keys = torch.randn(batch, n, 5, generator=gen)
    values = torch.randn(batch, n, 5, generator=gen)
    return ReducerInputs(features, attention, keys, (rows, cols), values)


def run(method: str, inputs: ReducerInputs, **options):
    return reduce(inputs, ReductionConfig(method=method, **options))


def single(inputs: ReducerInputs, b: int) -> ReducerInputs:
    return ReducerInputs(
        inputs.features[b : b + 1],
        inputs.attention[b : b + 1],
        inputs.keys[b : b + 1],
        inputs.grid,
        inputs.values[b : b + 1],
    )


def test_registered_with_their_needs():
    assert all(get_reducer(m).needs_attention for m in METHODS)
    assert get_reducer("ats").needs_values
    assert not get_reducer("tome").needs_values and not get_reducer("evit").needs_values


@pytest.mark.parametrize("method", METHODS)
def test_budget_is_required(method):
    with pytest.raises(ValueError, match="budget"):
        run(method, make_inputs())


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [1, 2, 7, 16, 33, 63])
def test_budget_padding_and_unique_indices(method, budget):
    inputs = make_inputs()
    out = run(method, inputs, budget=budget)
    batch, width, dim = out.tokens.shape
    assert (batch, dim) == (3, 6) and out.indices.shape == (batch, width)
    if method == "ats":
        assert (out.lengths <= budget).all() and (out.lengths >= 1).all()
    else:
        assert out.lengths.tolist() == [budget] * batch and width == budget
    assert width == int(out.lengths.max())
    for b in range(batch):
        length = int(out.lengths[b])
        idx = out.indices[b, :length]
        real = idx[idx >= 0]
        assert len(set(real.tolist())) == len(real)
        assert torch.equal(real, real.sort().values)  # ascending patch order
        assert (out.indices[b, length:] == -1).all() and (out.tokens[b, length:] == 0).all()
        if method == "evit":
            assert idx[-1] == -1 and (real >= 0).all() and len(real) == budget - 1


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [1, 5, 16])
def test_batch_gives_each_image_its_single_image_tokens(method, budget):
    inputs = make_inputs(batch=4, seed=1)
    out = run(method, inputs, budget=budget)
    for b in range(4):
        alone = run(method, single(inputs, b), budget=budget)
        length = int(alone.lengths[0])
        assert int(out.lengths[b]) == length
        assert torch.equal(out.indices[b, :length], alone.indices[0, :length])
        torch.testing.assert_close(out.tokens[b, :length], alone.tokens[0, :length])


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [64, 100])
def test_full_budget_is_the_full_sequence(method, budget):
    inputs = make_inputs()
    out = run(method, inputs, budget=budget)
    assert out.lengths.tolist() == [64] * 3
    assert torch.equal(out.indices, torch.arange(64).expand(3, 64))
    assert torch.equal(out.tokens, inputs.features)


@pytest.mark.parametrize("method", METHODS)
def test_ratio_resolves_to_a_budget(method):
    out = run(method, make_inputs(), ratio=0.25)
    if method == "ats":
        assert (out.lengths <= 16).all()
    else:
        assert out.lengths.tolist() == [16] * 3


def test_tome_keeps_dtype_and_bf16_runs():
    inputs = make_inputs()
    inputs.features = inputs.features.bfloat16()
    out = run("tome", inputs, budget=10)
    assert out.tokens.dtype == torch.bfloat16 and out.tokens.shape == (3, 10, 6)


def hand_inputs(features, attention, keys, values=None) -> ReducerInputs:
    features, attention, keys = (
        torch.tensor(t, dtype=torch.float32)[None] for t in (features, attention, keys)
    )
    values = None if values is None else torch.tensor(values, dtype=torch.float32)[None]
    return ReducerInputs(features, attention, keys, (1, features.shape[1]), values)


def test_tome_merges_the_obvious_pair():
    # A = {0, 2}, B = {1, 3}; key 0 equals key 1, key 2 is far from both B keys.
    x = [[1.0, 0.0], [3.0, 2.0], [5.0, 5.0], [7.0, 1.0]]
    keys = [[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, 1.0, 0.2]]
    out = run("tome", hand_inputs(x, [0.25] * 4, keys), budget=3)
    assert out.indices.tolist() == [[1, 2, 3]]
    torch.testing.assert_close(out.tokens[0], torch.tensor([[2.0, 1.0], [5.0, 5.0], [7.0, 1.0]]))


def test_tome_averages_by_size():
    # Round 1 (5 -> 2): tokens 0 and 2 join 1 (size 3), token 4 joins 3 (size 2).
    x = [[1.0], [2.0], [3.0], [10.0], [20.0]]
    e1, e2 = [1.0, 0.0], [0.0, 1.0]
    keys = [e1, e1, e1, e2, e2]
    two = run("tome", hand_inputs(x, [0.2] * 5, keys), budget=2)
    assert two.indices.tolist() == [[1, 3]]
    torch.testing.assert_close(two.tokens[0], torch.tensor([[2.0], [15.0]]))
    # Round 2 (2 -> 1): sizes 3 and 2 give the mean of all five, not the mean of the two means.
    one = run("tome", hand_inputs(x, [0.2] * 5, keys), budget=1)
    assert one.indices.tolist() == [[3]]
    torch.testing.assert_close(one.tokens[0], torch.tensor([[36.0 / 5]]))


def test_evit_fuses_the_inattentive_tokens_by_attention():
    x = [[1.0, 0.0], [2.0, 4.0], [3.0, 3.0], [8.0, 1.0]]
    out = run("evit", hand_inputs(x, [0.4, 0.1, 0.3, 0.2], [[0.0]] * 4), budget=3)
    assert out.indices.tolist() == [[0, 2, -1]] and out.lengths.tolist() == [3]
    fused = (0.1 * torch.tensor([2.0, 4.0]) + 0.2 * torch.tensor([8.0, 1.0])) / 0.3
    torch.testing.assert_close(
        out.tokens[0], torch.stack([torch.tensor([1.0, 0.0]), torch.tensor([3.0, 3.0]), fused])
    )
    only = run("evit", hand_inputs(x, [0.4, 0.1, 0.3, 0.2], [[0.0]] * 4), budget=1)
    assert only.indices.tolist() == [[-1]]
    torch.testing.assert_close(only.tokens[0, 0], torch.tensor([3.1, 1.5]))


def test_ats_samples_quantiles_and_drops_duplicates():
    # Scores a * |v| = [0.5, 0.1, 0.1, 0.3]: attention and value norms both matter.
    attention = [0.1, 0.2, 0.1, 0.3]
    values = [[5.0, 0.0], [0.0, 0.5], [0.6, 0.8], [1.0, 0.0]]  # norms 5, 0.5, 1, 1
    x = [[1.0], [2.0], [3.0], [4.0]]
    inputs = hand_inputs(x, attention, [[0.0]] * 4, values)
    torch.testing.assert_close(
        ats_scores(inputs.attention, inputs.values), torch.tensor([[0.5, 0.1, 0.1, 0.3]])
    )
    # Four zero-score tokens appended: CDF [0.5, 0.6, 0.7, 1, 1, 1, 1, 1]; quantiles
    # 0.125, 0.375, 0.625, 0.875 -> tokens 0, 0, 2, 3; the duplicate 0 goes, token 1 is skipped.
    x8 = [[float(i)] for i in range(8)]
    inputs8 = hand_inputs(x8, [0.1, 0.2, 0.1, 0.3, 0, 0, 0, 0], [[0.0]] * 8, values + [[1.0, 0.0]] * 4)
    out4 = run("ats", inputs8, budget=4)
    assert out4.indices.tolist() == [[0, 2, 3]] and out4.lengths.tolist() == [3]
    torch.testing.assert_close(out4.tokens[0], torch.tensor([[0.0], [2.0], [3.0]]))


def test_ats_in_the_tower_gets_values():
    cfg = SimpleNamespace(
        mm_vision_tower="x",
        vision_config=tiny_clip_config(num_layers=2),
        mm_token_reduction={"method": "ats", "budget": 16},
    )
    tower = build_vision_tower(cfg, load_weights=False)
    out = tower(torch.randn(2, 3, 336, 336))
    assert out.tokens.shape[0] == 2 and out.tokens.shape[1] <= 16
    assert ((out.lengths >= 1) & (out.lengths <= 16)).all()
