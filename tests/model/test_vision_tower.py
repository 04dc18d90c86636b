"""The CLIP vision tower: which checkpoints it loads and which layer settings it accepts."""

from types import SimpleNamespace

import pytest
import torch
from transformers import CLIPConfig, CLIPModel

from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.tiny import save_image_processor, tiny_clip_config


def test_loads_the_vision_half_of_a_full_clip_checkpoint(tmp_path):
    # openai/clip-vit-large-patch14-336 is a full CLIPModel (text and vision).
    vision = tiny_clip_config(num_layers=4)
    text = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2}
    torch.manual_seed(0)
    clip = CLIPModel(CLIPConfig(vision_config=vision.to_dict(), text_config=text, projection_dim=32))
    clip.save_pretrained(tmp_path)
    save_image_processor(tmp_path)
    tower = build_vision_tower(SimpleNamespace(mm_vision_tower=str(tmp_path), mm_token_reduction="prumerge"))
    assert tower.config.num_hidden_layers == 4
    for ours, theirs in zip(
        tower.vision_tower.state_dict().values(), clip.vision_model.state_dict().values()
    ):
        assert torch.equal(ours, theirs)
    out = tower(torch.randn(2, 3, 336, 336))
    assert out.tokens.shape[0] == 2 and out.class_attention.shape == (2, 576)


def test_layer_settings_are_checked():
    config = tiny_clip_config(num_layers=4)
    cfg = SimpleNamespace(mm_vision_tower="x", vision_config=config, mm_vision_select_layer=-1)
    assert build_vision_tower(cfg, load_weights=False).num_layers_run == 4  # no reducer: all layers
    cfg.mm_token_reduction = "prumerge"
    with pytest.raises(ValueError, match="layer after mm_vision_select_layer=-1"):
        build_vision_tower(cfg, load_weights=False)
    cfg.mm_vision_select_layer, cfg.mm_vision_select_feature = -2, "cls_patch"
    with pytest.raises(ValueError, match="mm_vision_select_feature='patch'"):
        build_vision_tower(cfg, load_weights=False)
    cfg.mm_token_reduction, cfg.mm_vision_select_layer = None, 7
    with pytest.raises(ValueError, match="out of range"):
        build_vision_tower(cfg, load_weights=False)
    with pytest.raises(ValueError, match="names no vision tower"):
        build_vision_tower(SimpleNamespace(), load_weights=False)


def test_cls_patch_keeps_the_cls_token():
    cfg = SimpleNamespace(
        mm_vision_tower="x",
        vision_config=tiny_clip_config(num_layers=2),
        mm_vision_select_feature="cls_patch",
    )
    out = build_vision_tower(cfg, load_weights=False)(torch.randn(1, 3, 336, 336))
    assert out.tokens.shape[1] == 577 and out.lengths.tolist() == [577]


def test_impossible_budgets_fail_when_the_reducer_is_chosen():
    cfg = SimpleNamespace(mm_vision_tower="x", vision_config=tiny_clip_config(num_layers=4))
    tower = build_vision_tower(cfg, load_weights=False)
    for reduction in ({"method": "prumerge", "budget": 577}, {"method": "sequential", "budget": 5000}):
        with pytest.raises(ValueError, match="more than the 576 tokens this vision tower produces"):
            tower.set_reduction(reduction)
    with pytest.raises(ValueError, match="does not fit"):
        tower.set_reduction({"method": "spatial", "budget": 575})  # 23 x 25: no room for 25 columns
    with pytest.raises(ValueError, match="budget"):
        tower.set_reduction("ats")  # needs a budget: said when chosen, not at the first image
    tower.set_reduction({"method": "prumerge", "budget": 576})  # the whole budget: allowed
    out = tower(torch.randn(1, 3, 336, 336))
    assert out.lengths.tolist() == [576] and int((out.indices[0] >= 0).sum()) == 575  # + the extra token
    with pytest.raises(ValueError, match="more than the 576"):
        build_vision_tower(
            SimpleNamespace(**vars(cfg), mm_token_reduction={"method": "prumerge", "budget": 600}),
            load_weights=False,
        )
