"""What a LLaVA-1.5 checkpoint records besides its weights: the upstream ``mm_*`` config fields and the
CLIP image processor of its vision tower.

Used wherever a checkpoint or a tower folder is written: the llava-hf converter
(:mod:`llava.model.convert_llava_hf`), the tiny checkpoints of the tests (:mod:`llava.tiny`), the
benchmarks and the quickstart.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

#: The Llama fields of a llava-hf ``text_config`` that a LlavaConfig takes over (the vocabulary size and
#: the pad id are the caller's choice: llava-hf's vocabulary adds its image token).
LLAMA_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "hidden_act",
    "attention_bias",
    "mlp_bias",
    "tie_word_embeddings",
    "bos_token_id",
    "eos_token_id",
)

#: OpenAI CLIP's normalisation (``openai/clip-vit-large-patch14-336``'s ``preprocessor_config.json``).
OPENAI_CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
OPENAI_CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def llava_mm_fields(
    vision_tower: str, mm_hidden_size: int, projector_type: str = "mlp2x_gelu"
) -> dict[str, Any]:
    """The upstream ``mm_*`` config fields of a LLaVA-1.5 checkpoint that differ from ``LlavaConfig``'s defaults.

    The others (``mm_vision_select_layer`` −2, ``image_aspect_ratio`` ``pad``, ...) are declared once in
    :class:`llava.model.configuration_llava.LlavaConfig`, and every field is written to ``config.json``.
    """
    return {
        "mm_vision_tower": vision_tower,
        "mm_hidden_size": mm_hidden_size,
        "mm_projector_type": projector_type,
        "tokenizer_model_max_length": 2048,
    }


def save_image_processor(out_dir: str | Path, image_size: int = 336) -> None:
    """Writes a CLIP-336-style ``preprocessor_config.json`` (bicubic resize, centre crop, OpenAI mean/std)."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=OPENAI_CLIP_MEAN,
        image_std=OPENAI_CLIP_STD,
        resample=3,
        do_center_crop=True,
    )
    processor.save_pretrained(out_dir)
