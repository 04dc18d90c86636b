"""VisionZip and DivPrune reducers: hand-worked cases, batch properties and the tower's skipped layer."""

import math
from types import SimpleNamespace

import pytest
import torch

from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.token_reduction import ReducerInputs, ReductionConfig, get_reducer, reduce
from llava.model.token_reduction.prellm import divprune_select, visionzip_split
from llava.tiny import tiny_clip_config

METHODS = ("visionzip", "divprune")


def random_inputs(batch=4, n=144, dim=8, seed=0, dtype=torch.float32) -> ReducerInputs:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(batch, n, generator=gen) * torch.linspace(0.5, 3.0, batch)[:, None]
    return ReducerInputs(
        torch.randn(batch, n, dim, generator=gen).to(dtype),
        logits.softmax(-1) * 0.9,
        torch.randn(batch, n, 6, generator=gen),
        (12, n // 12),
    )


def take(inputs: ReducerInputs, b: int) -> ReducerInputs:
    return ReducerInputs(
        inputs.features[b : b + 1], inputs.attention[b : b + 1], inputs.keys[b : b + 1], inputs.grid
    )


def run(method: str, inputs: ReducerInputs, budget: int):
    return reduce(inputs, ReductionConfig(method, budget=budget))


# ----------------------------------------------------------------------------------------------
# VisionZip by hand
# ----------------------------------------------------------------------------------------------


def test_visionzip_split_follows_54_plus_10():
    assert visionzip_split(64) == (54, 10)
    assert visionzip_split(128) == (108, 20)
    assert visionzip_split(192) == (162, 30)
    assert visionzip_split(10) == (8, 2)
    assert visionzip_split(1) == (1, 0)
    for budget in range(1, 600):
        dominant, contextual = visionzip_split(budget)
        assert dominant + contextual == budget and dominant >= 1
        assert contextual == math.floor(budget * 10 / 64 + 0.5)


def test_visionzip_by_hand():
    # N = 12, budget 10 -> 8 dominant + 2 contextual. The four lowest-attention patches are 1, 4, 7, 10
    # (raster order); R = 4, step = 4 // 2 = 2, so the targets are remaining positions 0 and 2: patches
    # 1 and 7. Patch 4's key (0.1, 1) is nearest to patch 7's (0, 1); patch 10's (1, 0.2) to patch 1's
    # (1, 0). Contextual tokens: mean(f1, f10) at index 1, mean(f7, f4) at index 7.
    attention = torch.full((1, 12), 0.5)
    attention[0, [1, 4, 7, 10]] = torch.tensor([0.01, 0.02, 0.03, 0.04])
    attention[0, 0] = 0.9  # the dominant ones may differ: only their set matters
    keys = torch.randn(1, 12, 2, generator=torch.Generator().manual_seed(3))
    keys[0, 1], keys[0, 7] = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    keys[0, 4], keys[0, 10] = torch.tensor([0.1, 1.0]), torch.tensor([1.0, 0.2])
    features = torch.arange(12 * 3, dtype=torch.float32).view(1, 12, 3)
    out = run("visionzip", ReducerInputs(features, attention, keys, (3, 4)), 10)
    dominant = [0, 2, 3, 5, 6, 8, 9, 11]
    assert out.indices.tolist() == [dominant + [1, 7]]
    assert out.lengths.tolist() == [10]
    f = features[0]
    expected = torch.cat([f[dominant], ((f[1] + f[10]) / 2)[None], ((f[7] + f[4]) / 2)[None]])
    torch.testing.assert_close(out.tokens[0], expected)


def test_visionzip_target_with_several_tokens_and_unassigned_target():
    # N = 8, budget 7 -> 6 dominant + 1 contextual; the remaining patches are 2 and 5, R = 2, step 2:
    # target = patch 2, patch 5 merges into it whatever its key.
    attention = torch.tensor([[0.9, 0.8, 0.01, 0.7, 0.6, 0.02, 0.5, 0.4]])
    features = torch.randn(1, 8, 4)
    out = run("visionzip", ReducerInputs(features, attention, torch.randn(1, 8, 3), (2, 4)), 7)
    assert out.indices.tolist() == [[0, 1, 3, 4, 6, 7, 2]]
    torch.testing.assert_close(out.tokens[0, -1], (features[0, 2] + features[0, 5]) / 2)
    # N = 12, budget 10, all remaining tokens closest to the first target: the second one stays alone.
    attention = torch.linspace(1.0, 0.1, 12)[None]  # remaining = 8, 9, 10, 11; targets 8 and 10
    keys = torch.ones(1, 12, 2)
    keys[0, 10] = torch.tensor([-1.0, 0.0])
    out = run("visionzip", ReducerInputs(features.new_ones(1, 12, 4).cumsum(1), attention, keys, (3, 4)), 10)
    assert out.indices[0, -2:].tolist() == [8, 10]
    torch.testing.assert_close(out.tokens[0, -2:, 0], torch.tensor([(9 + 10 + 12) / 3, 11.0]))


# ----------------------------------------------------------------------------------------------
# DivPrune by hand
# ----------------------------------------------------------------------------------------------

ANGLES = [0, 10, 90, 100, 175, 187, 270]  # degrees; cosine distance depends only on the angle
SCALES = [1, 2, 3, 0.5, 1, 4, 5]  # the features are normalised first


def angle_features() -> torch.Tensor:
    rad = torch.tensor(ANGLES, dtype=torch.float64) * math.pi / 180
    return (torch.stack([rad.cos(), rad.sin()], -1) * torch.tensor(SCALES)[:, None])[None].float()


def test_divprune_max_min_order_by_hand():
    # Nearest-neighbour angles: 10, 10, 10, 10, 12, 12, 83 -> patch 6 (270°) is picked first; then the
    # farthest from it, 90° (patch 2); then min distances 90 / 80 / 10 / 85 / 83 -> 0°; then 175°
    # (85 vs 83 for 187°); then 187° (12 vs 10 and 10).
    feats = angle_features()
    picks = [6, 2, 0, 4, 5]
    for budget in range(1, 6):
        mask = divprune_select(feats, budget)[0]
        assert sorted(mask.nonzero().flatten().tolist()) == sorted(picks[:budget])
    out = run("divprune", ReducerInputs(feats, None, None, (1, 7)), 4)
    assert out.indices.tolist() == [[0, 2, 4, 6]]  # ascending patch order
    torch.testing.assert_close(out.tokens[0], feats[0, [0, 2, 4, 6]])


def test_divprune_square_corners_first():
    # Cosine distance only sees directions: the four corners of a square centred on the origin are
    # 90° apart, the other points lie within 6° of the +x axis. Max-min picks the corners first
    # (whichever order ties give), then one point of the cluster.
    cluster = [[2.0, 0.0], [1.0, 0.05], [3.0, -0.15], [0.5, 0.05]]
    corners = [[1.0, 1.0], [-2.0, 2.0], [-1.0, -1.0], [3.0, -3.0]]
    feats = torch.tensor(
        [cluster[0], corners[0], cluster[1], corners[1], cluster[2], corners[2], cluster[3], corners[3]]
    )
    out = run("divprune", ReducerInputs(feats[None], None, None, (2, 4)), 4)
    assert out.indices.tolist() == [[1, 3, 5, 7]]
    out = run("divprune", ReducerInputs(feats[None], None, None, (2, 4)), 5)
    assert set(out.indices[0].tolist()) > {1, 3, 5, 7}


def test_divprune_duplicates_give_unique_indices():
    feats = torch.ones(2, 10, 4)  # all distances 0: still `budget` distinct patches
    out = run("divprune", ReducerInputs(feats, None, None, (2, 5)), 6)
    assert out.indices.tolist() == [list(range(6))] * 2


# ----------------------------------------------------------------------------------------------
# Properties of both
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [1, 5, 36, 64, 143])
def test_exact_budget_unique_indices_and_batch_invariance(method, budget):
    inputs = random_inputs()
    out = run(method, inputs, budget)
    assert out.tokens.shape == (4, budget, 8) and out.lengths.tolist() == [budget] * 4
    for b in range(4):
        row = out.indices[b]
        assert len(set(row.tolist())) == budget and int(row.min()) >= 0 and int(row.max()) < 144
        alone = run(method, take(inputs, b), budget)
        assert torch.equal(alone.indices[0], row)
        torch.testing.assert_close(alone.tokens[0], out.tokens[b])


@pytest.mark.parametrize("method", METHODS)
def test_output_order(method):
    out = run(method, random_inputs(), 64)
    if method == "divprune":
        assert torch.all(out.indices[:, 1:] > out.indices[:, :-1])
    else:
        dominant, contextual = out.indices[:, :54], out.indices[:, 54:]
        assert torch.all(dominant[:, 1:] > dominant[:, :-1]) and torch.all(
            contextual[:, 1:] > contextual[:, :-1]
        )


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("budget", [144, 500])
def test_full_budget_is_the_full_sequence(method, budget):
    inputs = random_inputs()
    out = run(method, inputs, budget)
    assert out.indices.tolist() == [list(range(144))] * 4
    assert torch.equal(out.tokens, inputs.features) and out.lengths.tolist() == [144] * 4


@pytest.mark.parametrize("method", METHODS)
def test_ratio_and_dtype(method):
    inputs = random_inputs(dtype=torch.bfloat16)
    out = reduce(inputs, ReductionConfig(method, ratio=0.25))
    assert out.tokens.shape == (4, 36, 8) and out.tokens.dtype == torch.bfloat16
    assert out.indices.dtype == torch.long and out.lengths.tolist() == [36] * 4


@pytest.mark.parametrize("method", METHODS)
def test_budget_is_required(method):
    with pytest.raises(ValueError, match="budget"):
        reduce(random_inputs(), ReductionConfig(method))


def test_registry_flags_and_visionzip_needs_attention():
    assert get_reducer("visionzip").needs_attention and not get_reducer("divprune").needs_attention
    inputs = random_inputs()
    with pytest.raises(ValueError, match="attention"):
        run("visionzip", ReducerInputs(inputs.features, None, None, inputs.grid), 16)


@pytest.mark.parametrize("method", METHODS)
def test_tower_runs_the_next_layer_only_for_visionzip(method):
    # The tower reads attention and keys through the next layer's submodules (layer_norm1, q/k_proj),
    # not its forward, so every submodule of that layer is hooked.
    cfg = SimpleNamespace(
        mm_vision_tower="x",
        vision_config=tiny_clip_config(num_layers=2),
        mm_token_reduction={"method": method, "budget": 16},
    )
    tower = build_vision_tower(cfg, load_weights=False)
    calls = []
    for module in tower.vision_tower.encoder.layers[-1].modules():
        module.register_forward_hook(lambda *args: calls.append(1))
    out = tower(torch.randn(2, 3, 336, 336))
    assert out.tokens.shape[:2] == (2, 16) and out.lengths.tolist() == [16, 16]
    assert out.indices.shape == (2, 16) and int(out.indices.min()) >= 0
    assert (len(calls) > 0) == (method == "visionzip")
