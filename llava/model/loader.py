"""Loading LLaVA-1.5 checkpoints: full, LoRA (+ base LLM) and projector-only (+ base LLM).

What a checkpoint is comes from the files in it, never from its folder name:

- ``adapter_config.json`` → a LoRA run (the released ``yuzhang/llava-prumerge-*-lora`` are this):
  needs ``model_base`` = the base LLM; ``non_lora_trainables.bin`` holds the projector.
- ``mm_projector.bin`` and no other weights → a pretraining (projector-only) output: needs ``model_base``.
- model weights (``*.safetensors`` / ``pytorch_model*.bin``) → a full checkpoint.

The token reduction is, in order: the caller's override, the checkpoint's ``mm_token_reduction``, the
table of known released checkpoints (:data:`KNOWN_REDUCTIONS`), else none.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import torch

from llava.model.configuration_llava import LEGACY_MODEL_TYPES, LlavaConfig
from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM
from llava.model.multimodal_encoder.clip_encoder import resolve_tower_path
from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.args import apply_changes

logger = logging.getLogger(__name__)

# Released checkpoints that do not record their reducer (the authors hard-coded it in the tower).
KNOWN_REDUCTIONS: dict[str, dict[str, Any]] = {
    "yuzhang/llava-prumerge-vicuna-7b-v1.5-lora": {"method": "prumerge", "variant": "reference"},
    "yuzhang/llava-prumerge-vicuna-13b-v1.5-lora": {"method": "prumerge", "variant": "reference"},
    "yuzhang/llava-prumerge-plus-vicuna-7b-v1.5-lora": {
        "method": "prumerge_plus",
        "variant": "reference",
        "form": "adaptive",
    },
    "liuhaotian/llava-v1.5-7b": {"method": "none"},
    "liuhaotian/llava-v1.5-13b": {"method": "none"},
    "liuhaotian/llava-v1.5-7b-lora": {"method": "none"},
    "liuhaotian/llava-v1.5-13b-lora": {"method": "none"},
}
WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin", "model*.bin")


def resolve_checkpoint(path: str) -> Path:
    """A local folder for ``path``: the folder itself, or a Hub snapshot (from the cache when offline)."""
    local = Path(path).expanduser()
    if local.is_dir():
        return local
    if local.exists():
        raise ValueError(f"{path} is a file; pass the checkpoint folder that holds config.json.")
    from huggingface_hub import snapshot_download

    try:
        return Path(
            snapshot_download(path, allow_patterns=["*.json", "*.bin", "*.safetensors", "*.model", "*.txt"])
        )
    except Exception as err:  # noqa: BLE001 - any Hub failure gets the same actionable message
        raise OSError(
            f"Could not find the checkpoint {path!r}: it is not a local folder and could not be fetched from the "
            f"Hugging Face Hub ({type(err).__name__}: {err}). Download it first, or pass a local folder."
        ) from err


def checkpoint_kind(folder: Path) -> str:
    """``lora``, ``projector`` or ``full``, decided by the files present."""
    if (folder / "adapter_config.json").is_file():
        return "lora"
    weights = [p for pattern in WEIGHT_PATTERNS for p in folder.glob(pattern) if p.name != "mm_projector.bin"]
    if weights:
        return "full"
    if (folder / "mm_projector.bin").is_file():
        return "projector"
    raise ValueError(
        f"{folder} holds no model weights, no adapter_config.json and no mm_projector.bin: "
        "it is not a LLaVA checkpoint folder."
    )


def load_llava_config(folder: Path) -> LlavaConfig:
    """The ``LlavaConfig`` of a checkpoint, for ``model_type`` ``llava_llama`` and the 2023 ``llava``."""
    path = folder / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: a LLaVA checkpoint folder needs its config.json.")
    data = json.loads(path.read_text())
    if "text_config" in data:
        raise ValueError(
            f"{folder} is in transformers' LlavaForConditionalGeneration (llava-hf) format; convert it with "
            "`python -m llava.model.convert_llava_hf --from-hf ...` first."
        )
    ours = (*LEGACY_MODEL_TYPES, LlavaConfig.model_type)
    if not data.get("mm_vision_tower") and data.get("model_type") not in ours:
        raise ValueError(
            f"{folder} is not a LLaVA checkpoint (model_type={data.get('model_type')!r}, no mm_vision_tower). "
            "If it is a base LLM, pass it as --model-base with a LLaVA checkpoint as --model-path."
        )
    config = LlavaConfig.from_dict(data)  # fields the file lacks take their declared defaults
    if config.mm_vision_tower:
        config.mm_vision_tower = resolve_tower_path(config.mm_vision_tower, folder)
    return config


def resolve_reduction(
    config: LlavaConfig, model_path: str, override: ReductionConfig | dict[str, Any] | str | None
) -> ReductionConfig:
    """The reduction to run: ``override``, else the checkpoint's, else a known checkpoint's, else none."""
    if override is not None:
        source, value = "the caller", override
    elif config.mm_token_reduction:
        source, value = "the checkpoint's config", config.mm_token_reduction
    elif model_path.rstrip("/") in KNOWN_REDUCTIONS:
        source, value = "the table of released checkpoints", KNOWN_REDUCTIONS[model_path.rstrip("/")]
    else:
        source, value = "default", None
    reduction = ReductionConfig.from_value(value)
    logger.info("Token reduction %s (from %s)", reduction.describe(), source)
    return reduction


def _warn_unrecorded_reduction(folder: Path, model_path: str, reduction: ReductionConfig) -> None:
    """A LoRA whose files record no reducer (the released PruMerge adapters, e.g. a --local-dir copy)."""
    logger.warning(
        "%s records no token reduction (mm_token_reduction) and runs with %r. The released PruMerge / PruMerge+ "
        "adapters record none either: if this is one of them (e.g. a local copy of %s), pass "
        "--token-reduction prumerge or prumerge_plus (token_reduction= in Python).",
        folder,
        reduction.describe(),
        next(iter(KNOWN_REDUCTIONS)),
    )


def _check_base(base: Path, config: LlavaConfig, trained_on: str | None = None) -> None:
    """Fails clearly when the base is not the model the LoRA/projector was trained on.

    That is a plain LLM, or a LLaVA checkpoint when the adapter records it as its base (``trained_on``:
    a LoRA trained on a finished LLaVA model, as ``scripts/v1_5/finetune_lora_atp.sh`` does).
    """
    data = json.loads((base / "config.json").read_text()) if (base / "config.json").is_file() else {}
    on_this_llava = trained_on is not None and _model_name(trained_on) == _model_name(str(base))
    if (data.get("mm_vision_tower") or "text_config" in data) and not on_this_llava:
        raise ValueError(
            f"--model-base {base} is a LLaVA checkpoint; the base must be the language model the LoRA or projector "
            "was trained on (e.g. lmsys/vicuna-7b-v1.5 for the 7B PruMerge LoRA)."
        )
    for field in ("hidden_size", "num_hidden_layers", "vocab_size"):
        if field in data and data[field] != getattr(config, field):
            raise ValueError(
                f"--model-base {base} has {field}={data[field]} but the checkpoint expects "
                f"{getattr(config, field)}: pass the base LLM it was trained on (7B vs 13B?)."
            )


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
    return torch.load(path, map_location="cpu", weights_only=True)


def projector_state(state: dict[str, torch.Tensor], source: Path) -> dict[str, torch.Tensor]:
    """The ``mm_projector`` weights of ``state`` (keys like ``[base_model.model.]model.mm_projector.0.weight``),
    keyed relative to the projector."""
    projector = {}
    for key, value in state.items():
        name = key.removeprefix("base_model.model.").removeprefix("base_model.")
        if ".mm_projector." in f".{name}":
            projector[name.split("mm_projector.", 1)[1]] = value
    if not projector:
        raise ValueError(f"{source} holds no mm_projector weights (keys: {list(state)[:4]} ...).")
    return projector


def _load_projector(model: LlavaLlamaForCausalLM, state: dict[str, torch.Tensor], source: Path) -> None:
    model.get_model().mm_projector.load_state_dict(projector_state(state, source), strict=True)


@contextlib.contextmanager
def _projector_loaded_later() -> Iterator[None]:
    """transformers' load report leaves out the projector, which is loaded right after from its own file.

    Without this, every LoRA or projector-only load lists the projector as "MISSING ... newly initialized".
    """
    cls = LlavaLlamaForCausalLM
    before = cls._keys_to_ignore_on_load_missing
    cls._keys_to_ignore_on_load_missing = [*before, r"model\.mm_projector\."]
    try:
        yield
    finally:
        cls._keys_to_ignore_on_load_missing = before


def _from_pretrained(
    folder: Path, config: LlavaConfig, projector_follows: bool = False, **kwargs: Any
) -> LlavaLlamaForCausalLM:
    """The language model (and projector, when present) from ``folder``, the CLIP weights from their own.

    ``projector_follows``: ``folder`` is a base LLM and the caller loads the projector next.
    """
    with _projector_loaded_later() if projector_follows else contextlib.nullcontext():
        model = LlavaLlamaForCausalLM.from_pretrained(folder, config=config, **kwargs)
    model.get_vision_tower().load_model()
    return model


# Adapters apply to the language model only: the tower is frozen CLIP and the projector is in
# non_lora_trainables.bin, whatever the adapter config's target list says.
LLM_ONLY_EXCLUDE = r".*\b(vision_tower|mm_projector)\b.*"


def _exclusion(existing: str | list[str] | set[str] | None) -> str:
    """One regex excluding the tower and projector and whatever ``existing`` (peft's forms) excluded."""
    if not existing:
        return LLM_ONLY_EXCLUDE
    if isinstance(existing, str):
        return f"(?:{existing})|(?:{LLM_ONLY_EXCLUDE})"
    names = "|".join(re.escape(name) for name in sorted(existing))  # peft: exact name or a ".name" suffix
    return f"(?:(?:.*\\.)?(?:{names}))|(?:{LLM_ONLY_EXCLUDE})"


def _adapter_config(folder: Path, base: Path, model_base: str | None):
    """The adapter's config restricted to the language model; warns when it names another base LLM."""
    from peft import PeftConfig

    adapter = PeftConfig.from_pretrained(str(folder))
    recorded = getattr(adapter, "base_model_name_or_path", None)
    given = model_base or str(base)
    if recorded and _model_name(recorded) != _model_name(given):
        logger.warning(
            "The LoRA adapter in %s was trained on %r but --model-base is %r: its shapes match, so it loads, "
            "but its answers are only meaningful on the base it was trained on.",
            folder,
            recorded,
            given,
        )
    if hasattr(adapter, "exclude_modules"):
        adapter.exclude_modules = _exclusion(adapter.exclude_modules)
    return adapter


def _adapter_base(folder: Path) -> str | None:
    """The base model an adapter's ``adapter_config.json`` records (None when it records none)."""
    path = folder / "adapter_config.json"
    return json.loads(path.read_text()).get("base_model_name_or_path") if path.is_file() else None


def _model_name(path_or_id: str) -> str:
    """The last component of a Hub id or folder (``lmsys/vicuna-7b-v1.5`` and ``/data/vicuna-7b-v1.5`` agree)."""
    return Path(path_or_id.rstrip("/")).name.lower()


def _non_lora_file(folder: Path) -> Path:
    extra = next(
        (
            folder / n
            for n in ("non_lora_trainables.bin", "non_lora_trainables.safetensors")
            if (folder / n).is_file()
        ),
        None,
    )
    if extra is None:
        raise FileNotFoundError(
            f"{folder} has adapter_config.json but no non_lora_trainables.bin (the projector): "
            "was it saved by an old trainer at an intermediate step? Use the final output folder."
        )
    return extra


def _load_non_lora(model: LlavaLlamaForCausalLM, state: dict[str, torch.Tensor], source: Path) -> None:
    """Loads every weight of ``non_lora_trainables.bin`` that maps onto the model; names the others.

    The projector must be there. Other trained weights (embeddings, ``lm_head``, ...) load too, as the
    original code's non-strict load does; keys that name nothing in the model are listed in a warning.
    """
    _load_projector(model, state, source)
    own = model.state_dict()
    mapped, unknown = {}, []
    for key, value in state.items():
        name = key.removeprefix("base_model.model.").removeprefix("base_model.")
        if ".mm_projector." in f".{name}":
            continue
        if name not in own:
            unknown.append(key)
        elif own[name].shape != value.shape:
            raise ValueError(
                f"{source}: {key} has shape {tuple(value.shape)}, the model's {name} has {tuple(own[name].shape)}: "
                "this file belongs to another model size."
            )
        else:
            mapped[name] = value
    if mapped:
        model.load_state_dict(mapped, strict=False)
        logger.info(
            "Loaded %d non-LoRA weight(s) besides the projector from %s: %s",
            len(mapped),
            source,
            ", ".join(sorted(mapped)[:8]),
        )
    if unknown:
        logger.warning(
            "%s: %d key(s) match nothing in the model and were not loaded: %s",
            source,
            len(unknown),
            ", ".join(unknown[:8]),
        )


def _load_lora(
    folder: Path, base: Path, config: LlavaConfig, model_base: str | None = None, **kwargs: Any
) -> LlavaLlamaForCausalLM:
    from peft import PeftModel

    extra = _non_lora_file(folder)
    adapter = _adapter_config(folder, base, model_base)
    model = _from_pretrained(base, config, projector_follows=True, **kwargs)
    _load_non_lora(model, _read_state(extra), extra)
    logger.info("Merging the LoRA adapter from %s", folder)
    return PeftModel.from_pretrained(model, folder, config=adapter).merge_and_unload()


def _load_weights(
    kind: str,
    folder: Path,
    base: Path | None,
    config: LlavaConfig,
    model_base: str | None = None,
    **kwargs: Any,
):
    if kind == "full":
        return _from_pretrained(folder, config, **kwargs)
    if base is None:
        what = (
            "a LoRA adapter (adapter_config.json)"
            if kind == "lora"
            else "a projector only (mm_projector.bin)"
        )
        raise ValueError(
            f"{folder} is {what}: pass --model-base with the base LLM it was trained on, "
            "e.g. --model-base lmsys/vicuna-7b-v1.5."
        )
    _check_base(base, config, _adapter_base(folder) if kind == "lora" else None)
    if kind == "lora":
        return _load_lora(folder, base, config, model_base, **kwargs)
    model = _from_pretrained(base, config, projector_follows=True, **kwargs)
    _load_projector(model, _read_state(folder / "mm_projector.bin"), folder / "mm_projector.bin")
    return model


def _load_tokenizer(folder: Path, base: Path | None):
    from transformers import AutoTokenizer

    for source in (folder, base):
        if source is not None and any((source / n).is_file() for n in ("tokenizer.json", "tokenizer.model")):
            return AutoTokenizer.from_pretrained(source)
    raise FileNotFoundError(f"No tokenizer in {folder}" + (f" or {base}" if base else ""))


class LoadedModel(NamedTuple):
    """What :func:`load_pretrained_model` returns; unpacks as upstream's 4-tuple."""

    tokenizer: Any
    model: LlavaLlamaForCausalLM
    image_processor: Any
    context_len: int


def load_pretrained_model(
    model_path: str,
    model_base: str | None = None,
    model_name: str | None = None,
    load_8bit: bool = False,
    load_4bit: bool = False,
    device_map: str | dict | None = None,
    device: str | None = None,
    dtype: torch.dtype | None = None,
    token_reduction: ReductionConfig | dict[str, Any] | str | None = None,
    attn_implementation: str | None = None,
    use_flash_attn: bool = False,
    reduction_changes: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Loads a LLaVA-1.5 checkpoint of any kind (see the module docstring).

    Args:
        model_path: a local folder or Hub id.
        model_base: the base LLM for LoRA and projector-only checkpoints.
        model_name: the name logged for the loaded model (default: from ``model_path``, as upstream's
            ``get_model_name_from_path``); it decides nothing (the checkpoint's files say what it is).
        load_8bit, load_4bit: bitsandbytes quantisation of the language model (GPU only).
        device_map, device: where to put the model (default: CUDA if available, else CPU).
        dtype: default float16 on CUDA, float32 on CPU.
        token_reduction: replace the reduction recorded in the checkpoint.
        reduction_changes: change some of its options (the command lines' ``--reduction-*`` flags).
        attn_implementation: ``sdpa`` (default), ``eager`` or ``flash_attention_2``.
        use_flash_attn: upstream's flag, the same as ``attn_implementation="flash_attention_2"``.

    Returns:
        a :class:`LoadedModel`: unpacks as upstream's ``(tokenizer, model, image_processor, context_len)``.
    """
    from llava.mm_utils import get_model_name_from_path, load_image_processor
    from llava.model import register_auto_classes

    register_auto_classes()
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
    folder = resolve_checkpoint(model_path)
    base = resolve_checkpoint(model_base) if model_base else None
    kind = checkpoint_kind(folder)
    _require_config(folder, kind)
    config = load_llava_config(folder)
    reduction = _reduction_to_run(config, folder, model_path, kind, token_reduction, reduction_changes)
    if use_flash_attn:
        attn_implementation = "flash_attention_2"
    kwargs = _from_pretrained_kwargs(dtype, attn_implementation, load_8bit, load_4bit, device_map)
    model = _load_weights(kind, folder, base, config, model_base, **kwargs)
    tower = model.get_vision_tower()
    model.get_model().in_llm_method()  # an in-LLM method's layers are checked against the LLM here
    if device_map is None:
        model.to(device)
    tower.to(device=model.device, dtype=dtype)
    model.eval()
    tokenizer = _load_tokenizer(folder, base)
    # upstream's fallback: the legacy Llama key max_sequence_length, which only some old configs carry
    context_len = config.tokenizer_model_max_length or getattr(config, "max_sequence_length", 2048)
    name = model_name or get_model_name_from_path(model_path)
    logger.info("Loaded %s (%s checkpoint), token reduction %s", name, kind, reduction.describe())
    return LoadedModel(tokenizer, model, load_image_processor(tower.vision_tower_name), context_len)


def _require_config(folder: Path, kind: str) -> None:
    """An adapter without ``config.json`` is a Trainer's intermediate folder: say so before anything else."""
    if kind == "lora" and not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"{folder} holds a LoRA adapter but no config.json or non_lora_trainables.bin: it looks like an "
            "intermediate checkpoint-N folder written by the Trainer alone. Load the run's final output folder, "
            "or a checkpoint saved by llava/train/train.py (which writes both at every step)."
        )


def _reduction_to_run(
    config: LlavaConfig,
    folder: Path,
    model_path: str,
    kind: str,
    token_reduction: ReductionConfig | dict[str, Any] | str | None,
    changes: Mapping[str, Any] | None,
) -> ReductionConfig:
    """The reduction the loaded model runs (recorded in ``config``): resolved, changed, warned about."""
    reduction = resolve_reduction(config, model_path, token_reduction)
    if changes:
        reduction = apply_changes(reduction, changes)
        logger.info("Token reduction %s (with the options given)", reduction.describe())
    recorded = config.mm_token_reduction or model_path.rstrip("/") in KNOWN_REDUCTIONS
    chosen = token_reduction is not None or "method" in (changes or {})
    if kind == "lora" and not chosen and not recorded:
        _warn_unrecorded_reduction(folder, model_path, reduction)
    config.mm_token_reduction = reduction.to_dict()
    return reduction


def _from_pretrained_kwargs(
    dtype: torch.dtype,
    attn_implementation: str | None,
    load_8bit: bool,
    load_4bit: bool,
    device_map: str | dict | None,
) -> dict[str, Any]:
    """The keyword arguments of ``from_pretrained`` for the loader's precision and placement options."""
    kwargs: dict[str, Any] = {"dtype": dtype}
    if attn_implementation:
        kwargs["attn_implementation"] = attn_implementation
    if load_8bit or load_4bit:
        kwargs["quantization_config"] = _quantization_config(load_8bit)
    if device_map is not None:
        kwargs["device_map"] = device_map
    return kwargs


def _quantization_config(load_8bit: bool):
    from transformers import BitsAndBytesConfig

    if load_8bit:
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_compute_dtype=torch.float16,
        bnb_4bit_use_double_quant=True,
        bnb_4bit_quant_type="nf4",
    )
