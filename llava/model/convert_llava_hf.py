"""Converting between LLaVA-1.5 checkpoints and transformers' ``LlavaForConditionalGeneration`` (llava-hf).

Differences between the two formats (see docs/Checkpoints.md):

- llava-hf adds ``<image>`` and ``<pad>`` tokens and pads the vocabulary to a multiple of 64; its
  processor expands ``<image>`` into N placeholder ids. Converting *to* llava-hf fills the new rows
  with the mean of the existing embeddings (transformers' converter samples them randomly); converting
  *from* llava-hf drops every row from the ``<image>`` id on.
- llava-hf stores the CLIP weights in the checkpoint; this format loads them from ``mm_vision_tower``,
  so ``--from-hf`` writes them to ``OUT/vision_tower`` and records that relative path.
- Only the ``mlp2x_gelu`` projector exists in llava-hf, and no token reduction: ``--to-hf`` produces
  the full-token model.

Usage::

    python -m llava.model.convert_llava_hf --to-hf --model-path CKPT [--model-base BASE] --out HF_DIR
    python -m llava.model.convert_llava_hf --from-hf --model-path HF_DIR --out CKPT
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

import torch
from transformers import LlamaConfig, LlavaForConditionalGeneration
from transformers import LlavaConfig as HFLlavaConfig

from llava.model.checkpoint_format import LLAMA_FIELDS, llava_mm_fields, save_image_processor
from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM


def _text_config(config: LlavaConfig, vocab_size: int, pad_token_id: int) -> LlamaConfig:
    values = {f: getattr(config, f) for f in LLAMA_FIELDS if hasattr(config, f)}
    return LlamaConfig(vocab_size=vocab_size, pad_token_id=pad_token_id, **values)


def _extend_rows(weight: torch.Tensor, rows: int) -> torch.Tensor:
    extra = weight.mean(dim=0, keepdim=True).expand(rows - weight.shape[0], -1)
    return torch.cat([weight, extra], dim=0)


def to_hf(model: LlavaLlamaForCausalLM, tokenizer) -> tuple[LlavaForConditionalGeneration, Any]:
    """The llava-hf model and tokenizer equivalent to ``model`` with no token reduction."""
    config, tower = model.config, model.get_vision_tower()
    if config.mm_projector_type != "mlp2x_gelu":
        raise ValueError(f"llava-hf only has the mlp2x_gelu projector, not {config.mm_projector_type!r}.")
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})  # first: id = old vocab size
    tokenizer.add_special_tokens({"pad_token": "<pad>"})
    image_id, pad_id = tokenizer.convert_tokens_to_ids("<image>"), tokenizer.pad_token_id
    vocab = -(-len(tokenizer) // 64) * 64
    hf_config = HFLlavaConfig(
        vision_config=tower.config.to_dict(),
        text_config=_text_config(config, vocab, pad_id).to_dict(),
        image_token_index=image_id,
        pad_token_id=pad_id,
        vision_feature_layer=config.mm_vision_select_layer,
        vision_feature_select_strategy="default" if config.mm_vision_select_feature == "patch" else "full",
        projector_hidden_act="gelu",
        multimodal_projector_bias=True,
        image_seq_length=tower.num_patches,
    )
    hf_model = LlavaForConditionalGeneration(hf_config)
    state = {}
    for key, value in model.state_dict().items():
        if key.startswith("model.vision_tower.vision_tower."):
            state["model.vision_tower." + key.removeprefix("model.vision_tower.vision_tower.")] = value
        elif key.startswith("model.mm_projector."):
            layer = {"0": "linear_1", "2": "linear_2"}[key.split(".")[2]]
            state[f"model.multi_modal_projector.{layer}.{key.split('.')[-1]}"] = value
        elif key.startswith("model."):
            state["model.language_model." + key.removeprefix("model.")] = value
        else:
            state[key] = value
    for key in ("model.language_model.embed_tokens.weight", "lm_head.weight"):
        state[key] = _extend_rows(state[key], vocab)
    hf_model.load_state_dict(state, strict=True)
    return hf_model.to(model.dtype).eval(), tokenizer


def from_hf(hf_model: LlavaForConditionalGeneration, tokenizer, out_dir: str | Path) -> LlavaLlamaForCausalLM:
    """Writes ``hf_model`` as a LLaVA-1.5 checkpoint in ``out_dir`` (CLIP in ``out_dir/vision_tower``)."""
    out_dir = Path(out_dir)
    hf = hf_model.config
    if hf.projector_hidden_act != "gelu" or hf.vision_feature_select_strategy not in ("default", "full"):
        raise ValueError("Only LLaVA-1.5-style llava-hf checkpoints (gelu MLP projector) can be converted.")
    vocab = hf.image_token_index  # rows from the <image> id on were added by the llava-hf conversion
    tower_dir = out_dir / "vision_tower"
    hf_model.model.vision_tower.save_pretrained(tower_dir)
    save_image_processor(tower_dir, hf.vision_config.image_size)
    fields = llava_mm_fields(str(tower_dir), hf.vision_config.hidden_size)
    fields["mm_vision_select_layer"] = hf.vision_feature_layer
    fields["mm_vision_select_feature"] = (
        "patch" if hf.vision_feature_select_strategy == "default" else "cls_patch"
    )
    text = hf.text_config.to_dict()
    llama = {f: text[f] for f in LLAMA_FIELDS if f in text}
    config = LlavaConfig(vocab_size=vocab, pad_token_id=tokenizer.unk_token_id, **llama, **fields)
    model = LlavaLlamaForCausalLM(config)
    model.get_vision_tower().load_model()
    state = {}
    for key, value in hf_model.state_dict().items():
        if key.startswith("model.language_model."):
            state["model." + key.removeprefix("model.language_model.")] = value
        elif key.startswith("model.multi_modal_projector."):
            layer = {"linear_1": "0", "linear_2": "2"}[key.split(".")[2]]
            state[f"model.mm_projector.{layer}.{key.split('.')[-1]}"] = value
        elif key == "lm_head.weight":
            state[key] = value
    for key in ("model.embed_tokens.weight", "lm_head.weight"):
        state[key] = state[key][:vocab]
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith("model.vision_tower.")]
    if missing or unexpected:
        raise ValueError(f"Conversion left missing={missing[:5]} unexpected={unexpected[:5]} keys.")
    model.config.mm_vision_tower = "vision_tower"  # relative to the checkpoint folder
    model.save_pretrained(out_dir)
    tokenizer.pad_token = tokenizer.unk_token
    tokenizer.save_pretrained(out_dir)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Convert between LLaVA-1.5 and llava-hf checkpoints.")
    direction = parser.add_mutually_exclusive_group(required=True)
    direction.add_argument(
        "--to-hf", action="store_true", help="LLaVA-1.5 (full, LoRA or projector) -> llava-hf"
    )
    direction.add_argument("--from-hf", action="store_true", help="llava-hf -> LLaVA-1.5 full checkpoint")
    parser.add_argument("--model-path", required=True)
    parser.add_argument("--model-base", default=None, help="base LLM of a LoRA or projector-only checkpoint")
    parser.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.to_hf:
        from llava.model.loader import load_pretrained_model

        tokenizer, model, processor, _ = load_pretrained_model(
            args.model_path, args.model_base, device="cpu", token_reduction="none"
        )
        hf_model, tokenizer = to_hf(model, tokenizer)
        hf_model.save_pretrained(args.out)
        tokenizer.save_pretrained(args.out)
        processor.save_pretrained(args.out)
    else:
        from transformers import AutoTokenizer

        hf_model = LlavaForConditionalGeneration.from_pretrained(args.model_path, dtype=torch.float32)
        from_hf(hf_model, AutoTokenizer.from_pretrained(args.model_path), args.out)
    print(f"Wrote {args.out}")


if __name__ == "__main__":
    main()
