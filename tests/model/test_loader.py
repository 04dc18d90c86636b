"""load_pretrained_model: the three checkpoint kinds, legacy configs, reductions and clear errors."""

import json
import shutil

import pytest
import torch
from tests_support import REPO_ROOT, prompt_ids
from transformers import LlamaConfig, LlamaForCausalLM

from llava.model import LlavaLlamaForCausalLM, ReductionConfig
from llava.model.loader import (
    KNOWN_REDUCTIONS,
    checkpoint_kind,
    load_llava_config,
    load_pretrained_model,
    resolve_reduction,
)


def logits_of(tokenizer, model, seed=0):
    ids = prompt_ids(tokenizer, "What is this?")[None]
    pixels = torch.randn(1, 3, 336, 336, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return model(input_ids=ids, images=pixels).logits


@pytest.fixture(scope="module")
def base_llm(tiny_llava_dir, tmp_path_factory):
    """A plain Llama checkpoint (the 'vicuna' of the tiny model), with its tokenizer."""
    config = load_llava_config(tiny_llava_dir)
    fields = [
        "vocab_size",
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "num_key_value_heads",
        "pad_token_id",
        "bos_token_id",
        "eos_token_id",
    ]
    torch.manual_seed(5)
    llm = LlamaForCausalLM(LlamaConfig(**{f: getattr(config, f) for f in fields}))
    out = tmp_path_factory.mktemp("base_llm")
    llm.save_pretrained(out)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tiny_llava_dir / name, out / name)
    return out


def llava_on_base(base_llm, tiny_llava_dir):
    config = load_llava_config(tiny_llava_dir)
    model = LlavaLlamaForCausalLM.from_pretrained(base_llm, config=config)
    model.get_vision_tower().load_model()
    torch.manual_seed(7)
    for p in model.get_model().mm_projector.parameters():
        torch.nn.init.normal_(p, std=0.05)
    return model.eval(), config


def test_full_checkpoint_round_trip(tiny_llava, tiny_llava_dir):
    tokenizer, model = tiny_llava
    assert checkpoint_kind(tiny_llava_dir) == "full"
    again = load_pretrained_model(str(tiny_llava_dir), device="cpu")[1]
    torch.testing.assert_close(logits_of(tokenizer, model), logits_of(tokenizer, again))


def test_lora_checkpoint_with_base(base_llm, tiny_llava_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    model, config = llava_on_base(base_llm, tiny_llava_dir)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=r"model\.layers\.\d+\.(self_attn|mlp)\.\w+_proj",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora).eval()
    tokenizer = load_pretrained_model(str(tiny_llava_dir), device="cpu")[0]
    expected = logits_of(tokenizer, peft_model)
    peft_model.save_pretrained(tmp_path)  # adapter_config.json + adapter weights
    projector = {k: v for k, v in peft_model.state_dict().items() if "mm_projector" in k}
    assert all(k.startswith("base_model.model.model.mm_projector.") for k in projector)
    torch.save(projector, tmp_path / "non_lora_trainables.bin")
    config.mm_vision_tower = str(tiny_llava_dir / "vision_tower")
    config.save_pretrained(tmp_path)
    assert checkpoint_kind(tmp_path) == "lora"

    tokenizer2, loaded, processor, context = load_pretrained_model(str(tmp_path), str(base_llm), device="cpu")
    assert type(loaded) is LlavaLlamaForCausalLM and not any(
        "lora" in n for n, _ in loaded.named_parameters()
    )
    torch.testing.assert_close(logits_of(tokenizer2, loaded), expected, rtol=1e-4, atol=1e-4)
    assert context == 2048 and processor.crop_size["height"] == 336

    with pytest.raises(ValueError, match="--model-base"):
        load_pretrained_model(str(tmp_path), device="cpu")
    with pytest.raises(ValueError, match="base must be the language model"):
        load_pretrained_model(str(tmp_path), str(tiny_llava_dir), device="cpu")
    (tmp_path / "non_lora_trainables.bin").unlink()
    with pytest.raises(FileNotFoundError, match="non_lora_trainables.bin"):
        load_pretrained_model(str(tmp_path), str(base_llm), device="cpu")


LEAF_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture
def leaf_target_lora(base_llm, tiny_llava_dir, tmp_path):
    """A LoRA checkpoint as the original code writes it: leaf-name targets, no exclusion, non-zero init.

    The adapter weights cover the language model only (upstream adds LoRA before the tower exists);
    ``init_lora_weights: false`` makes any adapter wrongly added to the tower change the logits.
    Returns ``(folder, tokenizer, expected logits)``.
    """
    from peft import LoraConfig, get_peft_model

    model, config = llava_on_base(base_llm, tiny_llava_dir)
    lora = LoraConfig(
        r=4,
        lora_alpha=8,
        target_modules=LEAF_TARGETS,
        exclude_modules=r".*(vision_tower|mm_projector).*",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora).eval()
    tokenizer = load_pretrained_model(str(tiny_llava_dir), device="cpu")[0]
    expected = logits_of(tokenizer, peft_model)
    peft_model.save_pretrained(tmp_path)
    adapter = json.loads((tmp_path / "adapter_config.json").read_text())
    adapter.update(exclude_modules=None, init_lora_weights=False, base_model_name_or_path=str(base_llm))
    (tmp_path / "adapter_config.json").write_text(json.dumps(adapter))
    state = peft_model.state_dict()
    torch.save({k: v for k, v in state.items() if "mm_projector" in k}, tmp_path / "non_lora_trainables.bin")
    config.mm_vision_tower = str(tiny_llava_dir / "vision_tower")
    config.save_pretrained(tmp_path)
    return tmp_path, tokenizer, expected


def test_lora_adapters_apply_to_the_language_model_only(leaf_target_lora, base_llm, caplog):
    folder, tokenizer, expected = leaf_target_lora
    with caplog.at_level("WARNING"):
        _, loaded, _, _ = load_pretrained_model(str(folder), str(base_llm), device="cpu")
    torch.testing.assert_close(logits_of(tokenizer, loaded), expected, rtol=1e-4, atol=1e-4)
    messages = "\n".join(r.getMessage() for r in caplog.records)
    assert "vision_tower" not in messages  # no "missing adapter keys" for tower modules
    assert "MISSING" not in messages and "newly initialized" not in messages  # the projector is loaded next


def test_intermediate_trainer_checkpoint_gets_its_own_message(leaf_target_lora, base_llm, tmp_path):
    folder = tmp_path / "checkpoint-500"
    folder.mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(leaf_target_lora[0] / name, folder / name)
    with pytest.raises(FileNotFoundError, match="intermediate checkpoint-N folder"):
        load_pretrained_model(str(folder), str(base_llm), device="cpu")


def test_every_non_lora_weight_that_maps_loads_and_the_rest_are_named(leaf_target_lora, base_llm, caplog):
    folder, _, _ = leaf_target_lora
    extras = torch.load(folder / "non_lora_trainables.bin")
    vocab_embed = torch.randn(
        *LlavaLlamaForCausalLM.from_pretrained(base_llm).get_input_embeddings().weight.shape
    )
    extras["base_model.model.model.embed_tokens.weight"] = (
        vocab_embed  # trained embeddings, as some runs save
    )
    extras["base_model.model.model.not_a_module.weight"] = torch.zeros(3)
    torch.save(extras, folder / "non_lora_trainables.bin")
    with caplog.at_level("WARNING"):
        _, loaded, _, _ = load_pretrained_model(str(folder), str(base_llm), device="cpu")
    torch.testing.assert_close(loaded.get_input_embeddings().weight, vocab_embed)
    assert any("not_a_module" in r.getMessage() for r in caplog.records if r.levelname == "WARNING")


def test_lora_without_a_recorded_reduction_or_with_another_base_warns(leaf_target_lora, base_llm, caplog):
    folder, _, _ = leaf_target_lora
    config = json.loads((folder / "config.json").read_text())
    config.pop("mm_token_reduction", None)
    (folder / "config.json").write_text(json.dumps(config))
    adapter = json.loads((folder / "adapter_config.json").read_text())
    adapter["base_model_name_or_path"] = "lmsys/vicuna-13b-v1.5"
    (folder / "adapter_config.json").write_text(json.dumps(adapter))
    with caplog.at_level("WARNING"):
        load_pretrained_model(str(folder), str(base_llm), device="cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert any("--token-reduction" in w for w in warnings)
    assert any("lmsys/vicuna-13b-v1.5" in w and str(base_llm) in w for w in warnings)
    caplog.clear()
    with caplog.at_level("WARNING"):
        load_pretrained_model(str(folder), str(base_llm), device="cpu", token_reduction="prumerge")
    assert not any("--token-reduction" in r.getMessage() for r in caplog.records)


def test_projector_only_checkpoint_with_base(base_llm, tiny_llava_dir, tmp_path):
    model, config = llava_on_base(base_llm, tiny_llava_dir)
    state = {f"model.mm_projector.{k}": v for k, v in model.get_model().mm_projector.state_dict().items()}
    torch.save(state, tmp_path / "mm_projector.bin")
    config.save_pretrained(tmp_path)
    assert checkpoint_kind(tmp_path) == "projector"
    tokenizer, loaded, _, _ = load_pretrained_model(str(tmp_path), str(base_llm), device="cpu")
    torch.testing.assert_close(logits_of(tokenizer, loaded), logits_of(tokenizer, model))
    with pytest.raises(ValueError, match="projector only.*--model-base"):
        load_pretrained_model(str(tmp_path), device="cpu")


def test_legacy_model_type_llava_and_reduction_sources(tiny_llava_dir, tmp_path):
    folder = tmp_path / "llava-v1.5-legacy"
    shutil.copytree(tiny_llava_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config["model_type"] = "llava"  # the 2023 uploads; collides with transformers' own llava
    del config["mm_token_reduction"]  # released checkpoints record no reducer
    (folder / "config.json").write_text(json.dumps(config))
    _, model, _, _ = load_pretrained_model(str(folder), device="cpu")
    assert model.config.mm_token_reduction["method"] == "none"
    _, model, _, _ = load_pretrained_model(str(folder), device="cpu", token_reduction="prumerge_plus")
    assert model.get_vision_tower().reduction.method == "prumerge_plus"
    assert model.config.mm_token_reduction["method"] == "prumerge_plus"

    cfg = load_llava_config(folder)
    for repo, expected in KNOWN_REDUCTIONS.items():
        assert resolve_reduction(cfg, repo, None).method == expected["method"]
    assert (
        resolve_reduction(cfg, "yuzhang/llava-prumerge-plus-vicuna-7b-v1.5-lora", None).method
        == "prumerge_plus"
    )


def test_clear_errors(tiny_llava_dir, tmp_path, base_llm):
    with pytest.raises(ValueError, match="no model weights"):
        checkpoint_kind(tmp_path)
    with pytest.raises(ValueError, match="not a LLaVA checkpoint"):
        load_pretrained_model(str(base_llm), device="cpu")
    hf_style = tmp_path / "hf"
    hf_style.mkdir()
    (hf_style / "config.json").write_text(json.dumps({"model_type": "llava", "text_config": {}}))
    (hf_style / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="convert_llava_hf"):
        load_pretrained_model(str(hf_style), device="cpu")
    with pytest.raises(ValueError, match="valid methods are"):
        load_pretrained_model(str(tiny_llava_dir), device="cpu", token_reduction="prumerg")


def test_merge_and_extract_scripts(base_llm, tiny_llava_dir, tmp_path):
    import importlib.util

    from peft import LoraConfig, get_peft_model

    def script(name):
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module

    model, config = llava_on_base(base_llm, tiny_llava_dir)
    lora = LoraConfig(
        r=4,
        target_modules=["q_proj", "v_proj"],
        exclude_modules=r".*vision_tower.*",
        init_lora_weights=False,
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, lora).eval()
    lora_dir, merged_dir = tmp_path / "lora", tmp_path / "merged"
    peft_model.save_pretrained(lora_dir)
    torch.save(
        {k: v for k, v in peft_model.state_dict().items() if "mm_projector" in k},
        lora_dir / "non_lora_trainables.bin",
    )
    config.mm_vision_tower = str(tiny_llava_dir / "vision_tower")
    config.save_pretrained(lora_dir)
    tokenizer = load_pretrained_model(str(tiny_llava_dir), device="cpu")[0]
    expected = logits_of(tokenizer, peft_model)

    script("merge_lora_weights").main(
        ["--model-path", str(lora_dir), "--model-base", str(base_llm), "--save-model-path", str(merged_dir)]
    )
    assert checkpoint_kind(merged_dir) == "full"
    tokenizer, merged, _, _ = load_pretrained_model(str(merged_dir), device="cpu")
    torch.testing.assert_close(logits_of(tokenizer, merged), expected, rtol=1e-4, atol=1e-4)

    projector_dir = tmp_path / "projector"
    projector_dir.mkdir()
    script("extract_mm_projector").main(
        ["--model-path", str(merged_dir), "--output", str(projector_dir / "mm_projector.bin")]
    )
    assert sorted(torch.load(projector_dir / "mm_projector.bin")) == [
        "model.mm_projector.0.bias",
        "model.mm_projector.0.weight",
        "model.mm_projector.2.bias",
        "model.mm_projector.2.weight",
    ]
    config.save_pretrained(projector_dir)
    _, projected, _, _ = load_pretrained_model(str(projector_dir), str(base_llm), device="cpu")
    torch.testing.assert_close(
        projected.get_model().mm_projector.state_dict(), merged.get_model().mm_projector.state_dict()
    )


def test_loader_returns_a_named_tuple_and_applies_reduction_changes(tiny_llava_dir):
    changes = {"method": "fastv", "ratio": 0.5, "llm_layer": 1}
    loaded = load_pretrained_model(str(tiny_llava_dir), device="cpu", reduction_changes=changes)
    tokenizer, model, processor, context_len = loaded  # unpacks as upstream's 4-tuple
    assert (loaded.tokenizer, loaded.model, loaded.image_processor, loaded.context_len) == (
        tokenizer,
        model,
        processor,
        context_len,
    )
    assert model.token_reduction == ReductionConfig("fastv", ratio=0.5, llm_layer=1)
    assert model.config.mm_token_reduction["llm_layer"] == 1
    assert model.model.in_llm_method().prune_layers == (1,)


def test_upstream_import_path_is_the_loader():
    import llava.model.builder as upstream
    import llava.model.loader as loader

    assert upstream.load_pretrained_model is loader.load_pretrained_model
    assert upstream.LoadedModel is loader.LoadedModel
