"""Loading Video-LLaVA checkpoints in their three layouts, decided by the files, never by folder names.

- ``original``: upstream's ``LanguageBind/Video-LLaVA-7B`` folder (``config.json`` with ``model_type``
  ``llava`` and ``mm_video_tower``; weights ``model.*``, ``model.mm_projector.{0,2}.*``, ``lm_head.weight``;
  its ``model.video_tower.*`` / ``model.image_tower.*`` copies are ignored) plus the
  ``LanguageBind_Video_merge`` tower folder (``vision_model.*`` with the temporal weights), as upstream
  loads it at run time. Videos only (its image tower, LanguageBind_Image, is not built here).
- ``hf``: one ``Video-LLaVA-7B-hf`` folder (transformers' ``VideoLlavaForConditionalGeneration``:
  ``language_model.*``, ``multi_modal_projector.linear_{1,2}``, ``video_tower.*``, ``image_tower.*``,
  with or without ``vision_model.`` and the 5.x ``model.`` prefix). Its towers have no temporal
  attention, so the video tower runs ``impl="clip"``; the image tower is built too. Its 32064-row
  embeddings are kept (our prompts never contain the three added tokens).
- ``ours``: a checkpoint saved by :class:`LlavaVideoForCausalLM` (``model_type`` ``llava_video_llama``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPVisionConfig

from llava.model import checkpoint_format
from llava.model.configuration_llava_video import LlavaVideoConfig
from llava.model.language_model.llava_video import LlavaVideoForCausalLM
from llava.model.loader import (
    LoadedModel,
    _from_pretrained_kwargs,
    _load_tokenizer,
    _read_state,
    resolve_checkpoint,
)
from llava.model.multimodal_encoder.clip_encoder import resolve_tower_path
from llava.model.multimodal_encoder.languagebind_video import LanguageBindVideoConfig
from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.args import apply_changes

logger = logging.getLogger(__name__)

VIDEO_SOURCES = ("original", "hf", "ours")
#: The LLaVA-1.5 ``model_type`` of upstream's 2023 uploads, which Video-LLaVA-7B also uses.
ORIGINAL_MODEL_TYPE = "llava"
HF_MODEL_TYPE = "video_llava"
#: Llama fields read from the -hf ``text_config``.
LLAMA_FIELDS = ("vocab_size", *checkpoint_format.LLAMA_FIELDS, "pad_token_id")
#: -hf projector layer → ours (``mm_projector.0`` / ``.2``, the GELU is ``.1``).
PROJECTOR_LAYERS = {"linear_1": "0", "linear_2": "2"}
#: Room for 8 frames x 257 tokens plus the question (the spliced prompt is cut to this many tokens).
VIDEO_MAX_LENGTH = 3072


def _config_json(folder: Path) -> dict[str, Any]:
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a Video-LLaVA checkpoint folder needs its config.json.")
    return json.loads(path.read_text())


def video_checkpoint_layout(folder: Path) -> str:
    """``original``, ``hf`` or ``ours`` from ``config.json``; a clear error for anything else."""
    data = _config_json(folder)
    model_type = data.get("model_type")
    if model_type == HF_MODEL_TYPE and "text_config" in data:
        return "hf"
    if model_type == LlavaVideoConfig.model_type:
        return "ours"
    if data.get("mm_video_tower") and "text_config" not in data:
        return "original"
    if "text_config" in data:
        raise ValueError(
            f"{folder} is a transformers {model_type!r} checkpoint, not VideoLlavaForConditionalGeneration "
            "(Video-LLaVA-7B-hf): it has no video tower."
        )
    if data.get("mm_vision_tower"):
        raise ValueError(
            f"{folder} is an image LLaVA checkpoint (mm_vision_tower, no mm_video_tower): load it with "
            "llava.model.builder.load_pretrained_model, or pass a Video-LLaVA-7B folder."
        )
    raise ValueError(
        f"{folder} is not a Video-LLaVA checkpoint (model_type={model_type!r}, no mm_video_tower, no "
        "video_llava text_config): pass LanguageBind/Video-LLaVA-7B or Video-LLaVA-7B-hf."
    )


def _checked_layout(folder: Path, source: str | None) -> str:
    """The folder's layout; raises when ``source`` names another (or no) layout."""
    layout = video_checkpoint_layout(folder)
    if source is not None and source != layout:
        if source not in VIDEO_SOURCES:
            raise ValueError(f"source must be one of {VIDEO_SOURCES}, got {source!r}.")
        raise ValueError(f"{folder} is a Video-LLaVA checkpoint in the {layout!r} layout, not {source!r}.")
    return layout


def load_video_llava(
    model_path: str,
    source: str | None = None,
    video_tower: str | None = None,
    impl: str | None = None,
    token_reduction: ReductionConfig | dict[str, Any] | str | None = None,
    reduction_form: str | None = None,
    iqr_scope: str | None = None,
    keep_cls: bool | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    attn_implementation: str | None = None,
    reduction_changes: dict[str, Any] | None = None,
) -> LoadedModel:
    """Loads a Video-LLaVA checkpoint of any layout (module docstring) as a :class:`LlavaVideoForCausalLM`.

    Args:
        model_path: the checkpoint folder (or Hub id, from the cache when offline).
        source: the expected layout (``original``, ``hf``, ``ours``); None: read from the files. A
            folder of another layout raises.
        video_tower: ``original`` only: the ``LanguageBind_Video_merge`` folder or Hub id (default: the
            config's ``mm_video_tower``).
        impl: ``languagebind`` (default for ``original``) or ``clip`` (the only one ``hf`` has).
        token_reduction: the reduction (method name, dict or config); default: the checkpoint's, else none.
        reduction_form, iqr_scope, keep_cls: the video options (``LlavaVideoConfig``'s fields).
        device, dtype: default CUDA / float16 when available, else CPU / float32.
        reduction_changes: option changes applied to that reduction (the front ends' ``--token-reduction``
            / ``--reduction-*`` flags, :func:`llava.model.token_reduction.args.reduction_changes`).

    Returns:
        :class:`~llava.model.loader.LoadedModel` ``(tokenizer, model, None, context_len)``.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    folder = resolve_checkpoint(model_path)
    layout = _checked_layout(folder, source)
    options = {
        "video_reduction_form": reduction_form,
        "video_iqr_scope": iqr_scope,
        "video_keep_cls": keep_cls,
    }
    options = {k: v for k, v in options.items() if v is not None}
    kwargs = _from_pretrained_kwargs(dtype, attn_implementation, False, False, None)
    if layout == "hf":
        model = _load_hf(folder, impl, options, kwargs)
    elif layout == "original":
        model = _load_original(folder, video_tower, impl, options, kwargs)
    else:
        model = _load_ours(folder, impl, options, kwargs)
    if token_reduction is not None or model.config.mm_token_reduction:
        model.set_token_reduction(
            token_reduction if token_reduction is not None else model.config.mm_token_reduction
        )
    if reduction_changes:
        model.set_token_reduction(apply_changes(model.token_reduction, reduction_changes))
    model.to(device=device, dtype=dtype).eval()
    tokenizer = _load_tokenizer(folder, None)
    logger.info(
        "Loaded Video-LLaVA (%s layout, %s tower), per-frame reduction %s",
        layout,
        model.config.mm_video_tower_impl,
        model.video_reduction.describe(),
    )
    return LoadedModel(tokenizer, model, None, model.config.tokenizer_model_max_length or VIDEO_MAX_LENGTH)


def _finish_load(model: LlavaVideoForCausalLM, info: dict[str, list[str]], folder: Path) -> None:
    """Fails on language-model or projector weights the folder did not have."""
    towers = ("model.vision_tower.", "model.video_tower.")
    missing = [k for k in info.get("missing_keys", []) if not k.startswith(towers)]
    if missing:
        raise ValueError(
            f"{folder} lacks weights of the language model or projector: {sorted(missing)[:5]} ... "
            "(is it a complete Video-LLaVA checkpoint, not a LoRA or projector-only folder?)"
        )


def _load_original(
    folder: Path, video_tower: str | None, impl: str | None, options: dict[str, Any], kwargs: dict[str, Any]
) -> LlavaVideoForCausalLM:
    data = {k: v for k, v in _config_json(folder).items() if k not in ("model_type", "mm_vision_tower")}
    tower = video_tower or data.get("mm_video_tower")
    tower_dir = Path(resolve_tower_path(str(tower), folder))
    tower_dir = tower_dir if tower_dir.is_dir() else resolve_checkpoint(str(tower))
    data.update(mm_video_tower=str(tower_dir), mm_video_tower_impl=impl or "languagebind", **options)
    data.setdefault("tokenizer_model_max_length", VIDEO_MAX_LENGTH)
    config = LlavaVideoConfig.from_dict(data)
    model, info = LlavaVideoForCausalLM.from_pretrained(
        folder, config=config, output_loading_info=True, **kwargs
    )
    _finish_load(model, info, folder)
    model.get_video_tower().load_model()
    return model


def _load_ours(
    folder: Path, impl: str | None, options: dict[str, Any], kwargs: dict[str, Any]
) -> LlavaVideoForCausalLM:
    data = {k: v for k, v in _config_json(folder).items() if k != "model_type"}
    data.update(options)
    if impl is not None:
        data["mm_video_tower_impl"] = impl
    config = LlavaVideoConfig.from_dict(data)
    config.mm_video_tower = resolve_tower_path(config.mm_video_tower, folder)
    if config.mm_vision_tower:
        config.mm_vision_tower = resolve_tower_path(config.mm_vision_tower, folder)
    model, info = LlavaVideoForCausalLM.from_pretrained(
        folder, config=config, output_loading_info=True, **kwargs
    )
    _finish_load(model, info, folder)
    model.get_video_tower().load_model()
    if model.get_vision_tower() is not None:
        model.get_vision_tower().load_model()
    return model


def hf_video_config(data: dict[str, Any], folder: Path, options: dict[str, Any]) -> LlavaVideoConfig:
    """Our config for a ``VideoLlavaConfig`` dict: Llama fields, projector, both towers from ``vision_config``."""
    if data.get("projector_hidden_act", "gelu") != "gelu" or not data.get("multimodal_projector_bias", True):
        raise ValueError(
            f"{folder}: only the gelu MLP projector with biases (Video-LLaVA-7B-hf) is supported."
        )
    layer = data.get("vision_feature_layer", -2)
    if not isinstance(layer, int):
        raise ValueError(f"{folder}: vision_feature_layer={layer!r}; only one layer (an int) is supported.")
    text = data["text_config"]
    vision = {k: v for k, v in data["vision_config"].items() if k != "model_type"}
    frames = max(
        data.get("video_seq_length", 2056) // ((vision["image_size"] // vision["patch_size"]) ** 2 + 1), 1
    )
    tower_config = LanguageBindVideoConfig.from_dict({**vision, "add_time_attn": False, "num_frames": frames})
    llama = {f: text[f] for f in LLAMA_FIELDS if f in text}
    return LlavaVideoConfig(
        **llama,
        mm_hidden_size=tower_config.hidden_size,
        mm_projector_type="mlp2x_gelu",
        mm_vision_select_layer=layer,
        mm_vision_tower=str(folder),  # the image tower (weights from this folder, below)
        vision_config=CLIPVisionConfig.from_dict(vision),
        mm_video_tower=str(folder),
        mm_video_tower_impl="clip",
        video_num_frames=frames,
        video_tower_config=tower_config,
        tokenizer_model_max_length=VIDEO_MAX_LENGTH,
        **options,
    )


def hf_video_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict, dict]:
    """Splits a -hf state dict into ours: (language model + projector, video tower, image tower).

    Accepts the on-disk names (``language_model.model.*``, ``video_tower.vision_model.*``) and the 5.x
    in-memory ones (``model.language_model.*``, ``model.video_tower.*``).
    """
    llm, video, image = {}, {}, {}
    for key, value in state.items():
        name = key.removeprefix("model.")
        if name.startswith(("video_tower.", "image_tower.")):
            tower, rest = name.split(".", 1)
            (video if tower == "video_tower" else image)[rest.removeprefix("vision_model.")] = value
        elif name.startswith("multi_modal_projector."):
            _, layer, param = name.split(".")
            llm[f"model.mm_projector.{PROJECTOR_LAYERS[layer]}.{param}"] = value
        elif name in ("language_model.lm_head.weight", "lm_head.weight"):
            llm["lm_head.weight"] = value
        elif name.startswith("language_model."):
            llm["model." + name.removeprefix("language_model.").removeprefix("model.")] = value
    return llm, video, image


def _load_hf(
    folder: Path, impl: str | None, options: dict[str, Any], kwargs: dict[str, Any]
) -> LlavaVideoForCausalLM:
    if impl not in (None, "clip"):
        raise ValueError(
            f"{folder} is Video-LLaVA-7B-hf, whose video tower has no temporal attention: impl must be 'clip'. "
            "For the published tower load the original Video-LLaVA-7B with LanguageBind_Video_merge."
        )
    config = hf_video_config(_config_json(folder), folder, options)
    state: dict[str, torch.Tensor] = {}
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    for file in files:
        state.update(_read_state(file))
    llm, video, image = hf_video_state(state)
    if not video or not llm:
        raise ValueError(
            f"{folder} holds no video_tower / language_model weights (keys: {list(state)[:4]} ...)."
        )
    model, info = LlavaVideoForCausalLM.from_pretrained(
        None, config=config, state_dict=llm, output_loading_info=True, **kwargs
    )
    _finish_load(model, info, folder)
    video_tower = model.get_video_tower()
    video_tower.load_weights(_tower_state(video_tower.vision_tower, video, folder, "video_tower"))
    image_tower = model.get_vision_tower().vision_tower
    image_tower.load_state_dict(_tower_state(image_tower, image, folder, "image_tower"), strict=True)
    return model


def _tower_state(module: torch.nn.Module, state: dict[str, torch.Tensor], folder: Path, what: str) -> dict:
    """The weights of ``module`` in ``state``; every one must be there."""
    wanted = module.state_dict()
    missing = sorted(set(wanted) - set(state))
    if missing:
        raise ValueError(f"{folder}: the {what} weights lack {missing[:4]} ...")
    return {k: state[k] for k in wanted}


__all__ = [
    "VIDEO_SOURCES",
    "hf_video_config",
    "hf_video_state",
    "load_video_llava",
    "video_checkpoint_layout",
]
