"""The kept visual tokens of each in-LLM pruning stage (``model.kept_visual_ranks()``), which the
visualiser draws: raster indices of the image, per sample in a left-padded batch, matching the schedule."""

import pytest
import torch
from tests_support import pad_left, prompt_ids

GRID_9 = [r * 24 + c for r in range(0, 24, 8) for c in range(0, 24, 8)]  # the stride-8 grid, raster order


@pytest.fixture
def atp_model(tiny_llava):
    """The session's 2-layer tiny LLaVA with ATP inserted at layer 1 for one test, then back to none."""
    tokenizer, model = tiny_llava

    def use(theta_r: float, theta_s: float):
        options = {"atp_layers": (1,), "atp_redundancy_threshold": theta_r, "atp_spatial_threshold": theta_s}
        model.set_token_reduction({"method": "atp", **options})
        return tokenizer, model

    yield use
    model.set_token_reduction("none")


def kept(model, tokenizer, questions, pixels):
    ids, mask = pad_left([prompt_ids(tokenizer, q) for q in questions])
    with torch.no_grad():
        model(input_ids=ids, attention_mask=mask, images=pixels)
    ranks = model.kept_visual_ranks()
    return [
        [sorted(row[row >= 0].tolist()) for row in stage] for stage in ranks
    ], model.visual_token_schedule()


def test_spatial_branch_alone_keeps_the_grid_as_raster_indices(atp_model):
    tokenizer, model = atp_model(1.0, 0.9)
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    (stage,), schedule = kept(model, tokenizer, ["What is this?"], pixels)
    assert stage == [GRID_9] and schedule.tolist() == [[576, 9]]


def test_batched_rows_keep_each_samples_own_tokens(atp_model):
    tokenizer, model = atp_model(0.5, 0.9)
    questions = ["What is this?", "Describe the image in detail please."]
    pixels = torch.randn(2, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    (stage,), schedule = kept(model, tokenizer, questions, pixels)
    assert [len(row) for row in stage] == schedule[:, 1].tolist()
    assert len({len(row) for row in stage}) > 1  # each image kept its own number
    for i, question in enumerate(questions):
        (alone,), _ = kept(model, tokenizer, [question], pixels[i : i + 1])
        assert alone == [stage[i]]
    with torch.no_grad():  # a text-only prompt prunes nothing and leaves no kept tokens
        model(input_ids=prompt_ids(tokenizer, "Hello", image=False)[None])
    assert model.kept_visual_ranks() is None
