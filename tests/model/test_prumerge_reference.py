"""The `reference` variant reproduces the authors' own PruMerge / PruMerge+ outputs.

Fixtures: ``../shared/fixtures/prumerge_reference`` (outputs of the authors' code on a small seeded
CLIP tower and six images). Tolerances are those of that folder's README.
"""

import json
from types import SimpleNamespace

import pytest
import torch
from tests_support import SHARED, needs_shared

from llava.model.multimodal_encoder.builder import build_vision_tower

FIXTURES = SHARED / "fixtures" / "prumerge_reference"
NAMES = ["astronaut", "coffee", "chelsea", "flat", "gradient", "shapes"]
METHODS = {  # fixture key -> our reduction
    "prumerge": {"method": "prumerge"},
    "plus_adaptive": {"method": "prumerge_plus"},
    "plus_fixed": {"method": "prumerge_plus", "form": "fixed"},
}

pytestmark = needs_shared(FIXTURES, "the authors' PruMerge outputs")


@pytest.fixture(scope="module")
def reference():
    from safetensors.torch import load_file

    return load_file(FIXTURES / "reference_outputs.safetensors"), load_file(FIXTURES / "pixels.safetensors")


def tower(reduction):
    cfg = SimpleNamespace(mm_vision_tower=str(FIXTURES / "clip_small"), mm_token_reduction=reduction)
    return build_vision_tower(cfg).eval()


def assert_tokens_match(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """Every row within 5e-3 x its largest value; at most max(2, 10 %) rows off by more than 1e-5."""
    assert ours.shape == theirs.shape
    row_err = (ours - theirs).abs().amax(-1)
    assert torch.all(row_err <= 5e-3 * theirs.abs().amax(-1))
    assert int((row_err > 1e-5).sum()) <= max(2, len(theirs) // 10)


def pixels_from_pngs():
    from llava.mm_utils import load_image, load_image_processor, process_images

    processor = load_image_processor(str(FIXTURES / "clip_small"))
    images = [load_image(FIXTURES / "images" / f"{name}.png") for name in NAMES]
    return process_images(images, processor, "pad")


@pytest.mark.parametrize("key", list(METHODS))
@pytest.mark.parametrize("source", ["pixels", "pngs"])
def test_reference_variant_reproduces_authors_outputs(reference, key, source):
    outputs, pixels = reference
    batch = torch.cat([pixels[n] for n in NAMES]) if source == "pixels" else pixels_from_pngs()
    model = tower(METHODS[key])
    summary = json.loads((FIXTURES / "summary.json").read_text())
    for i, name in enumerate(NAMES):
        out = model(batch[i : i + 1])
        length = int(out.lengths[0])
        torch.testing.assert_close(out.class_attention[0], outputs[f"{name}/cls_attn_ref"], atol=1e-6, rtol=0)
        kept = outputs[f"{name}/{key}/kept_idx"]
        ours = out.indices[0, : length - 1]
        if key == "plus_fixed":
            # The authors' fixed form does not de-duplicate (its merges then drop real tokens, so their
            # tokens are no target): the same set of kept patches, each once, plus the extra token.
            assert set(ours.tolist()) == set(kept.tolist())
            assert length == len(set(kept.tolist())) + 1 and len(set(ours.tolist())) == length - 1
            continue
        assert (
            length
            == summary["table"][name][f"tokens_out_{'prumerge' if key == 'prumerge' else 'plus_adaptive'}"]
        )
        assert torch.equal(ours, kept)
        assert_tokens_match(out.tokens[0, :length], outputs[f"{name}/{key}/tokens"])


def test_batched_call_equals_single_images(reference):
    outputs, pixels = reference
    batch = torch.cat([pixels[n] for n in NAMES])
    model = tower({"method": "prumerge"})
    out = model(batch)
    for i, name in enumerate(NAMES):
        length = int(out.lengths[i])
        assert torch.equal(out.indices[i, : length - 1], outputs[f"{name}/prumerge/kept_idx"])
        assert_tokens_match(out.tokens[i, :length], outputs[f"{name}/prumerge/tokens"])
        assert torch.all(out.tokens[i, length:] == 0)
    # The authors' code pools the quartiles over the batch (all six images keep 79 tokens); ours computes
    # them per image, so each image keeps what it keeps alone.
    summary = json.loads((FIXTURES / "summary.json").read_text())
    assert out.lengths.tolist() == [summary["table"][name]["tokens_out_prumerge"] for name in NAMES]
    assert out.lengths.tolist() != [outputs["batch/prumerge/kept_idx"].shape[1] + 1] * len(NAMES)


def test_paper_attention_is_the_head_mean(reference):
    outputs, pixels = reference
    model = tower({"method": "prumerge", "variant": "paper"})
    for name in NAMES:
        out = model(pixels[name])
        torch.testing.assert_close(
            out.class_attention[0], outputs[f"{name}/cls_attn_headmean"], atol=1e-6, rtol=0
        )


def test_features_and_keys_are_the_authors(reference):
    outputs, pixels = reference
    model = tower({"method": "prumerge"})
    hidden = model.encode(pixels["coffee"])
    torch.testing.assert_close(hidden[0, 1:], outputs["coffee/features"], atol=1e-5, rtol=1e-5)
    _, keys, _ = model.attention_and_keys(hidden)
    torch.testing.assert_close(keys[0], outputs["coffee/k23"][1:], atol=1e-5, rtol=1e-5)
