"""Tiny LLaVA checkpoints built locally: a small CLIP tower at 336/14, a small Llama and a trained tokenizer.

They run the same code paths as LLaVA-1.5-7B (only sizes differ), with random weights. Tests,
benchmarks and the quickstart build them; ``python -m llava.tiny --out DIR`` writes one to disk.
This module builds toys on top of the library; the library never imports it (the checkpoint fields and
the image processor it writes come from :mod:`llava.model.checkpoint_format`).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.model.checkpoint_format import llava_mm_fields, save_image_processor

DEFAULT_CORPUS = [
    "What is in the image? Describe it in detail.",
    "How many objects are there? Answer the question using a single word or phrase.",
    "Is there a red circle in the image? yes no",
    "Answer with the option's letter from the given choices directly. A B C D",
    "The image shows a blue square next to a green triangle on a white background.",
]


def tiny_clip_config(
    hidden_size: int = 32,
    num_layers: int = 24,
    num_heads: int = 4,
    image_size: int = 336,
    patch_size: int = 14,
) -> CLIPVisionConfig:
    """A ``CLIPVisionConfig`` with LLaVA-1.5's geometry (336 px, patch 14, 24 layers) and a small width."""
    return CLIPVisionConfig(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
        hidden_act="quick_gelu",
        projection_dim=hidden_size,
    )


def save_tiny_clip(out_dir: str | Path, seed: int = 0, qk_scale: float = 8.0, **config: Any) -> Path:
    """Saves a seeded random ``CLIPVisionModel`` plus its image processor to ``out_dir``.

    ``q_proj``/``k_proj`` weights are scaled by ``qk_scale`` so the class attention is peaky, as in a
    trained CLIP, and PruMerge finds a few outliers rather than none.
    """
    out_dir = Path(out_dir)
    torch.manual_seed(seed)
    model = CLIPVisionModel(tiny_clip_config(**config))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith(("q_proj.weight", "k_proj.weight")):
                param.mul_(qk_scale)
    model.save_pretrained(out_dir)
    save_image_processor(out_dir, model.config.image_size)
    return out_dir


def _tiny_tokenizer(tokenizer_dir: str | Path | None, corpus: list[str]):
    """The tokenizer of ``tokenizer_dir``, or one trained on ``corpus``."""
    if tokenizer_dir is None:
        from llava.tokenizer_train import train_sentencepiece_tokenizer

        with tempfile.TemporaryDirectory() as tmp:
            return train_sentencepiece_tokenizer(corpus, tmp)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tokenizer_dir)


def _tiny_llama_fields(
    tokenizer, hidden_size: int, num_layers: int, num_heads: int, max_positions: int
) -> dict:
    """The Llama sizes and special ids of a tiny language model for ``tokenizer``."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": hidden_size,
        "intermediate_size": 2 * hidden_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_heads,
        "num_key_value_heads": num_heads,
        "max_position_embeddings": max_positions,
        "pad_token_id": tokenizer.pad_token_id,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def _save_tiny(model, tokenizer, out_dir: Path, tower_field: str, tower_dir: str | Path):
    """Saves ``model`` and ``tokenizer`` to ``out_dir`` (a tower inside it recorded by its relative name, so
    the checkpoint folder can move); returns ``(model in eval mode, tokenizer)``."""
    if Path(tower_dir).resolve().parent == out_dir.resolve():
        setattr(model.config, tower_field, Path(tower_dir).name)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return model.eval(), tokenizer


def build_tiny_llava(
    out_dir: str | Path,
    clip_dir: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    reduction: dict[str, Any] | str | None = None,
    projector_type: str = "mlp2x_gelu",
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
):
    """Builds and saves a full tiny LLaVA checkpoint; returns ``(model, tokenizer)``.

    Args:
        out_dir: the checkpoint folder to write.
        clip_dir: an existing CLIP folder; default: a new tiny one in ``out_dir/vision_tower``.
        tokenizer_dir: an existing tokenizer folder; default: one trained on ``corpus``.
        reduction: the ``mm_token_reduction`` to record.
    """
    from llava.model import LlavaConfig, LlavaLlamaForCausalLM, ReductionConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if clip_dir is None:
        clip_dir = save_tiny_clip(out_dir / "vision_tower", seed=seed)
    tokenizer = _tiny_tokenizer(tokenizer_dir, corpus)
    clip_config = CLIPVisionConfig.from_pretrained(clip_dir)
    config = LlavaConfig(
        **_tiny_llama_fields(tokenizer, hidden_size, num_layers, num_heads, max_positions=2048),
        **llava_mm_fields(str(clip_dir), clip_config.hidden_size, projector_type),
        mm_token_reduction=ReductionConfig.from_value(reduction).to_dict(),
    )
    torch.manual_seed(seed)
    model = LlavaLlamaForCausalLM(config)
    model.get_vision_tower().load_model()
    return _save_tiny(model, tokenizer, out_dir, "mm_vision_tower", clip_dir)


TRAIN_COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}


def save_tiny_train_workspace(
    root: str | Path,
    tokenizer_dir: str | Path,
    num_images: int = 24,
    num_layers: int = 2,
    image_size: int = 336,
) -> tuple[Path, Path]:
    """A base LLM, a 4-layer tiny CLIP tower and coloured-square questions in LLaVA's JSON (+ one text-only).

    Writes ``root/base`` (a ``num_layers``-layer width-64 Llama with the tokenizer of ``tokenizer_dir``; the
    tower takes ``image_size`` pixels in 14-pixel patches),
    ``root/clip``, ``root/images/*.png`` and ``root/data.json``. Returns ``(base, clip)``.
    """
    import json
    import random
    import shutil

    from PIL import Image, ImageDraw
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    root, tokenizer_dir = Path(root), Path(tokenizer_dir)
    base = root / "base"
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    sizes = {
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_hidden_layers": num_layers,
        "num_attention_heads": 4,
    }
    ids = {"pad_token_id": 0, "bos_token_id": 1, "eos_token_id": 2}
    config = LlamaConfig(vocab_size=len(tokenizer), num_key_value_heads=4, **sizes, **ids)
    LlamaForCausalLM(config).save_pretrained(base)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_dir / name, base / name)
    clip = save_tiny_clip(root / "clip", num_layers=4, image_size=image_size)
    images = root / "images"
    images.mkdir(exist_ok=True)
    rng = random.Random(0)
    records = []
    for i in range(num_images):
        colour = rng.choice(sorted(TRAIN_COLOURS))
        image = Image.new("RGB", (96, 96), (235, 235, 235))
        ImageDraw.Draw(image).rectangle([20, 20, 70, 70], fill=TRAIN_COLOURS[colour])
        image.save(images / f"{i}.png")
        question = {"from": "human", "value": "<image>\nWhat colour is the square?"}
        records.append(
            {"id": str(i), "image": f"{i}.png", "conversations": [question, {"from": "gpt", "value": colour}]}
        )
    text_only = [{"from": "human", "value": "Say yes."}, {"from": "gpt", "value": "yes"}]
    records.append({"id": "t", "conversations": text_only})
    (root / "data.json").write_text(json.dumps(records))
    return base, clip


def save_tiny_languagebind(
    out_dir: str | Path,
    seed: int = 0,
    qk_scale: float = 8.0,
    num_frames: int = 8,
    add_time_attn: bool = True,
    hidden_size: int = 32,
    num_layers: int = 4,
    num_heads: int = 4,
    image_size: int = 56,
    patch_size: int = 14,
) -> Path:
    """A seeded random video tower folder in ``LanguageBind_Video_merge``'s layout.

    ``config.json`` nests the tower's config under ``vision_config`` (``hidden_act`` ``gelu``) beside a
    ``text_config``; the weights are ``vision_model.*`` (temporal blocks included when ``add_time_attn``)
    plus a few text-model weights that the loader must ignore. ``q_proj``/``k_proj`` are scaled by
    ``qk_scale`` as in :func:`save_tiny_clip`. Default geometry: 56 px, patch 14 (4x4 = 16 patches per frame).
    """
    import json

    from safetensors.torch import save_file

    from llava.model.multimodal_encoder.languagebind_video import (
        LanguageBindVideoConfig,
        LanguageBindVideoEncoder,
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = LanguageBindVideoConfig(
        hidden_size=hidden_size,
        intermediate_size=4 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        image_size=image_size,
        patch_size=patch_size,
        hidden_act="gelu",
        projection_dim=hidden_size,
        add_time_attn=add_time_attn,
        num_frames=num_frames,
    )
    torch.manual_seed(seed)
    encoder = LanguageBindVideoEncoder(config)
    state = {}
    for name, param in encoder.state_dict().items():
        scale = qk_scale if name.endswith(("q_proj.weight", "k_proj.weight")) else 1.0
        state[f"vision_model.{name}"] = (param * scale).contiguous()
    state["text_model.embeddings.token_embedding.weight"] = torch.randn(16, hidden_size)
    state["logit_scale"] = torch.tensor(4.6)
    save_file(state, out_dir / "model.safetensors")
    vision = {k: v for k, v in config.to_dict().items() if k != "transformers_version"}
    text = {"hidden_size": hidden_size, "num_hidden_layers": 1, "vocab_size": 16}
    files = {"model_type": "LanguageBindVideo", "vision_config": vision, "text_config": text}
    (out_dir / "config.json").write_text(json.dumps(files, indent=2))
    return out_dir


def build_tiny_video_llava(
    out_dir: str | Path,
    tower_dir: str | Path | None = None,
    tokenizer_dir: str | Path | None = None,
    corpus: Iterable[str] = DEFAULT_CORPUS,
    impl: str = "languagebind",
    reduction: dict[str, Any] | str | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    seed: int = 0,
):
    """Builds and saves a tiny Video-LLaVA checkpoint (``llava_video_llama``); returns ``(model, tokenizer)``.

    The video tower is ``tower_dir`` or a new :func:`save_tiny_languagebind` in ``out_dir/video_tower``.
    """
    from llava.model.configuration_llava_video import LlavaVideoConfig
    from llava.model.language_model.llava_video import LlavaVideoForCausalLM
    from llava.model.token_reduction import ReductionConfig

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if tower_dir is None:
        tower_dir = save_tiny_languagebind(out_dir / "video_tower", seed=seed)
    tokenizer = _tiny_tokenizer(tokenizer_dir, corpus)
    from llava.model.multimodal_encoder.languagebind_video import load_video_tower_config

    tower_config = load_video_tower_config(tower_dir)
    fields = llava_mm_fields(str(tower_dir), tower_config.hidden_size)
    config = LlavaVideoConfig(
        **_tiny_llama_fields(tokenizer, hidden_size, num_layers, num_heads, max_positions=4096),
        mm_hidden_size=fields["mm_hidden_size"],
        mm_projector_type=fields["mm_projector_type"],
        mm_video_tower=str(tower_dir),
        mm_video_tower_impl=impl,
        video_num_frames=tower_config.num_frames,
        tokenizer_model_max_length=3072,
        mm_token_reduction=ReductionConfig.from_value(reduction).to_dict(),
    )
    torch.manual_seed(seed)
    model = LlavaVideoForCausalLM(config)
    model.get_video_tower().load_model()
    return _save_tiny(model, tokenizer, out_dir, "mm_video_tower", tower_dir)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Write a tiny random LLaVA-1.5 checkpoint (CPU, seconds).")
    parser.add_argument("--out", required=True, help="checkpoint folder to write")
    parser.add_argument("--token-reduction", default="none", help="mm_token_reduction method to record")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    build_tiny_llava(args.out, reduction=args.token_reduction, seed=args.seed)
    print(f"Wrote a tiny LLaVA checkpoint to {args.out}")


if __name__ == "__main__":
    main()
