"""Cog predictor: answer a question about one image with a LLaVA-1.5 (+ PruMerge) checkpoint.

``cog.yaml`` points at :class:`Predictor`. ``setup()`` loads the checkpoint named by the environment
variable ``LLAVA_MODEL_PATH`` (default :data:`DEFAULT_MODEL_PATH`), with ``LLAVA_MODEL_BASE`` as the base
LLM for LoRA or projector-only checkpoints. ``predict()`` asks one question with the ``vicuna_v1``
template (the one LLaVA-1.5 was trained with) and returns the answer. Its ``dtype`` input (``auto``:
float16 on CUDA, float32 on CPU) reloads the checkpoint when it names another dtype than the loaded one.
Nothing is loaded or downloaded when this module is imported. See ``docs/Cog.md``.
"""

# ruff: noqa: B008 - cog declares inputs as `Input(...)` defaults of predict()

from __future__ import annotations

import gc
import os
from typing import Any

import torch

from llava.dtypes import AUTO, DTYPE_CHOICES, resolve_dtype
from llava.mm_utils import load_image, process_images
from llava.model import ReductionConfig, available_reducers
from llava.model.token_reduction.args import apply_changes, option_specs, reduction_changes
from llava.prompting import generation_kwargs, prompt_ids

try:
    from cog import BasePredictor, Input, Path
except ImportError:  # pragma: no cover - depends on whether cog is installed
    # Stand-ins so this file imports (and the tests run) without the ``cog`` package, which only
    # exists inside a Cog build. ``Input(...)`` just returns its default, so ``predict()``'s defaults
    # work when it is called directly; ``Path`` is ``pathlib.Path``, which cog's ``Path`` subclasses.
    from pathlib import Path

    class BasePredictor:
        """Minimal stand-in for ``cog.BasePredictor``."""

        def setup(self) -> None:
            """Loads what ``predict`` needs; nothing here."""

    def Input(default: Any = None, **_: Any) -> Any:
        """Minimal stand-in for ``cog.Input``: returns ``default`` and ignores the rest."""
        return default


DEFAULT_MODEL_PATH = "liuhaotian/llava-v1.5-7b"
CONV_MODE = "vicuna_v1"
CHECKPOINT = "checkpoint"  # the token_reduction choice that keeps the checkpoint's own reduction
REDUCTION_CHOICES = [CHECKPOINT, *available_reducers()]
REDUCTION_OPTIONS = option_specs()


class Predictor(BasePredictor):
    """Loads one checkpoint in ``setup()`` and answers a question about an image in ``predict()``."""

    def setup(self) -> None:
        """Loads the checkpoint from ``LLAVA_MODEL_PATH`` (+ ``LLAVA_MODEL_BASE``) in the ``auto`` dtype."""
        self.model_path = os.environ.get("LLAVA_MODEL_PATH") or DEFAULT_MODEL_PATH
        self.model_base = os.environ.get("LLAVA_MODEL_BASE") or None
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self._load(resolve_dtype(AUTO, self.device, option="dtype"))

    def _load(self, dtype: torch.dtype) -> None:
        """(Re)loads the checkpoint in ``dtype``, after freeing the loaded one; remembers its reduction."""
        from llava.model.loader import load_pretrained_model

        self.model = self.dtype = None  # a failed load leaves no half-set model; the next call retries
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        self.tokenizer, self.model, self.image_processor, self.context_len = load_pretrained_model(
            self.model_path, self.model_base, device=self.device, dtype=dtype
        )
        self.dtype = dtype
        self.checkpoint_reduction = ReductionConfig.from_value(self.model.config.mm_token_reduction)

    def predict(
        self,
        image: Path = Input(description="Image to ask about"),
        prompt: str = Input(description="Question or instruction about the image"),
        temperature: float = Input(description="Sampling temperature; 0 = greedy", default=0.2, ge=0.0),
        top_p: float = Input(
            description="Nucleus sampling (used when temperature > 0)", default=1.0, gt=0.0, le=1.0
        ),
        max_tokens: int = Input(description="Maximum number of new tokens", default=512, ge=1),
        token_reduction: str = Input(
            description="Visual-token reduction: 'checkpoint' keeps the checkpoint's own",
            default=CHECKPOINT,
            choices=REDUCTION_CHOICES,
        ),
        reduction_budget: int = Input(description=REDUCTION_OPTIONS["budget"].help, default=0, ge=0),
        dtype: str = Input(
            description="Precision: auto = float16 on GPU, float32 on CPU (a change reloads the model)",
            default=AUTO,
            choices=list(DTYPE_CHOICES),
        ),
    ) -> str:
        """The model's answer (stripped) to ``prompt`` about ``image``.

        Raises:
            ValueError: an unknown ``token_reduction`` (the message lists the valid ones) or ``dtype``, a
                bad ``temperature`` / ``top_p`` / ``max_tokens``, or bfloat16 on a GPU without it.
        """
        reduction = self._reduction(token_reduction, reduction_budget)
        wanted = resolve_dtype(dtype, self.device, option="dtype")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature}.")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}.")
        if max_tokens < 1:
            raise ValueError(f"max_tokens must be at least 1, got {max_tokens}.")
        if wanted != self.dtype:
            self._load(wanted)
        self.model.set_token_reduction(reduction)

        input_ids = prompt_ids(self.tokenizer, prompt, CONV_MODE, image=True)[None]
        pixels = process_images(
            [load_image(image)], self.image_processor, self.model.config.image_aspect_ratio
        )
        kwargs = generation_kwargs(self.tokenizer, max_tokens, temperature, top_p=top_p)
        with torch.inference_mode():
            new_tokens = self.model.generate(
                input_ids.to(self.model.device),
                images=pixels.to(device=self.model.device, dtype=self.model.dtype),
                **kwargs,
            )
        return self.tokenizer.decode(new_tokens[0], skip_special_tokens=True).strip()

    def _reduction(self, name: str, budget: int = 0) -> ReductionConfig:
        """The reduction for the ``token_reduction`` choice ``name`` and ``reduction_budget`` (the CLI's
        ``--token-reduction`` / ``--reduction-budget`` semantics: 0 keeps the method's own count)."""
        valid = [CHECKPOINT, *available_reducers()]  # also reducers registered after import
        if name not in valid:
            raise ValueError(f"Unknown token_reduction {name!r}; valid choices are: {', '.join(valid)}.")
        given = {"token_reduction": None if name == CHECKPOINT else name, "reduction_budget": budget or None}
        return apply_changes(self.checkpoint_reduction, reduction_changes(given))
