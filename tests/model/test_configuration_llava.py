"""LlavaConfig: its declared fields and defaults, legacy configs, serialisation, and the defaults the model uses."""

import json
import shutil
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaConfig

from llava.constants import IMAGE_TOKEN_INDEX
from llava.model import LlavaConfig, LlavaLlamaForCausalLM
from llava.model.language_model import llava_llama
from llava.model.loader import load_pretrained_model
from llava.model.multimodal_encoder.builder import build_vision_tower

# The LLaVA fields and the default each takes when a config.json lacks it.
DEFAULTS = {
    "mm_atp_layers": None,
    "mm_vision_tower": None,
    "mm_hidden_size": None,
    "mm_vision_select_layer": -2,
    "mm_vision_select_feature": "patch",
    "mm_projector_type": "linear",
    "mm_use_im_start_end": False,
    "mm_use_im_patch_token": False,
    "image_aspect_ratio": "pad",
    "mm_patch_merge_type": "flat",
    "tokenizer_model_max_length": None,
    "tokenizer_padding_side": "right",
    "use_mm_proj": True,
    "tune_mm_mlp_adapter": False,
    "freeze_mm_mlp_adapter": False,
    "mm_projector_lr": None,
    "mm_token_reduction": None,
    "vision_config": None,
}
LLAMA = {"vocab_size": 64, "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1}
LLAMA["num_attention_heads"] = 4


def test_llava_config_is_one_class_importable_from_every_old_path():
    import llava.model

    assert llava_llama.LlavaConfig is LlavaConfig is llava.model.LlavaConfig
    assert LlavaConfig.__module__ == "llava.model.configuration_llava"
    assert issubclass(LlavaConfig, LlamaConfig) and LlavaConfig.model_type == "llava_llama"


def test_a_config_without_any_llava_field_reads_the_declared_defaults(tmp_path):
    assert set(LlavaConfig.llava_fields()) == set(DEFAULTS)
    config = LlavaConfig.from_dict({"model_type": "llava", **LLAMA})
    assert {name: getattr(config, name) for name in DEFAULTS} == DEFAULTS
    assert config.model_type == "llava_llama" and config.hidden_size == 32

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llava", **LLAMA}))
    loaded = LlavaConfig.from_pretrained(tmp_path)
    assert {name: getattr(loaded, name) for name in DEFAULTS} == DEFAULTS
    assert loaded.model_type == "llava_llama"


def test_fields_are_typed():
    with pytest.raises(Exception, match="mm_vision_select_layer"):
        LlavaConfig(mm_vision_select_layer="-2")
    config = LlavaConfig()
    with pytest.raises(Exception, match="mm_use_im_start_end"):
        config.mm_use_im_start_end = "no"
    assert LlavaConfig(mm_token_reduction="prumerge").mm_token_reduction == {"method": "prumerge"}


def test_every_field_round_trips_through_to_dict_and_save_pretrained(tmp_path):
    from llava.tiny import tiny_clip_config

    values = {
        "mm_vision_tower": "openai/clip-vit-large-patch14-336",
        "mm_hidden_size": 1024,
        "mm_vision_select_layer": -3,
        "mm_vision_select_feature": "cls_patch",
        "mm_projector_type": "mlp2x_gelu",
        "mm_use_im_start_end": True,
        "mm_use_im_patch_token": True,
        "image_aspect_ratio": "square",
        "mm_patch_merge_type": "spatial",
        "tokenizer_model_max_length": 4096,
        "tokenizer_padding_side": "left",
        "use_mm_proj": False,
        "tune_mm_mlp_adapter": True,
        "freeze_mm_mlp_adapter": True,
        "mm_projector_lr": 2e-5,
        "mm_token_reduction": {"method": "prumerge_plus", "variant": "reference", "form": "adaptive"},
        "mm_atp_layers": [4, 14, 24],
    }
    assert set(values) == set(DEFAULTS) - {"vision_config"}
    config = LlavaConfig(**LLAMA, **values, vision_config=tiny_clip_config(num_layers=2))
    again = LlavaConfig.from_dict(config.to_dict())
    assert {name: getattr(again, name) for name in values} == values
    assert again.vision_config.num_hidden_layers == 2 and again.hidden_size == 32

    config.vision_config = None
    config.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())
    assert {name: written[name] for name in values} == values
    assert "vision_config" not in written  # None is not written
    loaded = LlavaConfig.from_pretrained(tmp_path)
    assert {name: getattr(loaded, name) for name in DEFAULTS} == {**values, "vision_config": None}

    # defaults are written too: upstream LLaVA's code reads these keys from config.json
    LlavaConfig(**LLAMA).save_pretrained(tmp_path / "defaults")
    written = json.loads((tmp_path / "defaults" / "config.json").read_text())
    assert {name: written[name] for name in DEFAULTS if name != "vision_config"} == {
        k: v for k, v in DEFAULTS.items() if k != "vision_config"
    }


def test_a_model_built_without_the_fields_uses_the_declared_defaults(tiny_llava_dir):
    data = json.loads((tiny_llava_dir / "config.json").read_text())
    for name in LlavaConfig.llava_fields():
        if name not in ("mm_vision_tower", "mm_hidden_size"):
            data.pop(name, None)
    data["mm_vision_tower"] = str(tiny_llava_dir / "vision_tower")
    torch.manual_seed(0)
    model = LlavaLlamaForCausalLM(LlavaConfig.from_dict(data)).eval()
    tower = model.get_vision_tower()
    tower.load_model()
    assert tower.select_layer == -2 and tower.select_feature == "patch"
    assert tower.reduction.method == "none"
    assert isinstance(model.get_model().mm_projector, torch.nn.Linear)  # mm_projector_type: linear

    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        hidden = tower.vision_tower(pixels, output_hidden_states=True).hidden_states
        out = tower(pixels)
    torch.testing.assert_close(out.tokens, hidden[-2][:, 1:])  # layer -2, patch tokens only

    # tokenizer_padding_side: the splice pads on the right unless the caller says otherwise
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 6], [1, 7, IMAGE_TOKEN_INDEX, 0]])
    mask = torch.tensor([[1, 1, 1, 1], [1, 1, 1, 0]])
    with torch.no_grad():
        spliced = model.prepare_multimodal_inputs(ids, mask, torch.cat([pixels, pixels]))
    assert spliced.inputs_embeds.shape[1] == 3 + tower.num_patches
    assert spliced.attention_mask[1].tolist() == [1] * (2 + tower.num_patches) + [0]

    namespace = build_vision_tower(
        SimpleNamespace(mm_vision_tower=data["mm_vision_tower"]), load_weights=False
    )
    assert namespace.select_layer == -2 and namespace.select_feature == "patch"


def test_a_plain_llama_config_builds_a_text_only_llava_model():
    model = LlavaLlamaForCausalLM(LlamaConfig(**LLAMA))
    assert isinstance(model.config, LlavaConfig) and model.get_vision_tower() is None
    assert model.config.tokenizer_padding_side == "right"


def test_an_old_checkpoint_missing_the_optional_fields_loads(tiny_llava_dir, tmp_path):
    folder = tmp_path / "llava-v1.5-2023"
    shutil.copytree(tiny_llava_dir, folder)
    data = json.loads((folder / "config.json").read_text())
    kept = ("mm_vision_tower", "mm_hidden_size", "mm_projector_type")  # what the weights need
    for name in LlavaConfig.llava_fields():
        if name not in kept:
            data.pop(name, None)
    data["model_type"] = "llava"
    (folder / "config.json").write_text(json.dumps(data))
    tokenizer, model, _, context_len = load_pretrained_model(str(folder), device="cpu")
    _, reference, _, _ = load_pretrained_model(str(tiny_llava_dir), device="cpu")
    assert context_len == 2048  # upstream's fallback without tokenizer_model_max_length
    assert model.config.tokenizer_model_max_length is None and model.config.image_aspect_ratio == "pad"
    assert model.get_vision_tower().select_layer == -2
    ids = torch.tensor([[1, 5, IMAGE_TOKEN_INDEX, 6]])
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(
            model(input_ids=ids, images=pixels).logits, reference(input_ids=ids, images=pixels).logits
        )
