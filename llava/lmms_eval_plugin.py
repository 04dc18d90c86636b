"""An lmms-eval model for LLaVA-1.5 with PruMerge / PruMerge+ token reduction: ``--model llava_prumerge``.

lmms-eval finds it through the ``lmms_eval.models`` entry point ``llava_prumerge`` (see
:func:`manifest`) and builds :class:`LlavaPruMerge` from ``--model_args``, for example::

    lmms-eval --model llava_prumerge \\
        --model_args pretrained=liuhaotian/llava-v1.5-7b,token_reduction=prumerge_plus \\
        --tasks mme --batch_size 8

Supported request types: ``generate_until`` (batched, left padding, greedy at temperature 0) and
``loglikelihood`` (batched; the continuation is scored as the assistant's answer). Multi-round
generation is not supported.

When lmms-eval is not installed (it needs torchvision) the class derives from a small local base with
the same three abstract methods, so it can still be built and tested.
"""

from __future__ import annotations

import abc
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.dtypes import AUTO, resolve_dtype
from llava.eval.runner import Loaded
from llava.mm_utils import get_model_name_from_path, load_image, process_images
from llava.model.token_reduction.args import reduction_changes, reduction_keys
from llava.prompting import (
    batch_prompt_ids,
    build_prompt,
    generation_kwargs,
    left_pad,
    pad_token_id,
    prompt_ids,
)

MODEL_ID = "llava_prumerge"
NO_IMAGES = torch.zeros(0, 3, 1, 1)

try:  # lmms-eval is optional: it needs torchvision, which this project does not
    from lmms_eval.api.model import lmms as _LmmsBase
except ImportError:  # pragma: no cover - depends on the environment

    class _LmmsBase(abc.ABC):
        """Stand-in for ``lmms_eval.api.model.lmms`` when lmms-eval is not installed.

        It declares the same abstract request methods and the attributes lmms-eval reads, so that
        :class:`LlavaPruMerge` can be used and tested without lmms-eval (and torchvision).
        """

        is_simple = True

        def __init__(self) -> None:
            self._rank = 0
            self._world_size = 1
            self.cache_hook = None
            self.task_dict: dict[str, Any] = {}

        @property
        def rank(self) -> int:
            """This process's rank (always 0: one process)."""
            return self._rank

        @property
        def world_size(self) -> int:
            """Number of processes (always 1)."""
            return self._world_size

        def set_cache_hook(self, cache_hook: Any) -> None:
            """Accepts lmms-eval's cache hook (unused)."""
            self.cache_hook = cache_hook

        @abc.abstractmethod
        def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
            """Log-probability of each continuation and whether it is the greedy one."""

        @abc.abstractmethod
        def generate_until(self, requests: list) -> list[str]:
            """Generated text for each request."""

        @abc.abstractmethod
        def generate_until_multi_round(self, requests: list) -> list[str]:
            """Multi-round generation."""


def manifest() -> Any:
    """The ``lmms_eval.models`` entry point: registers ``llava_prumerge`` with lmms-eval.

    Raises:
        ImportError: lmms-eval is not installed.
    """
    try:
        from lmms_eval.models.registry_v2 import ModelManifest
    except ImportError as err:
        raise ImportError(
            "The llava_prumerge model plugin needs lmms-eval: `pip install lmms-eval` "
            "(it also needs torchvision)."
        ) from err
    return ModelManifest(model_id=MODEL_ID, simple_class_path="llava.lmms_eval_plugin.LlavaPruMerge")


# ---------------------------------------------------------------------------------------------
# --model_args parsing (lmms-eval passes "None" as a string and numbers as int or float)
# ---------------------------------------------------------------------------------------------


def parse_optional(value: Any) -> Any:
    """``None`` for ``None``, ``"None"``, ``"null"`` and ``""``; anything else unchanged."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null", "")):
        return None
    return value


def parse_int(value: Any, name: str, minimum: int | None = None) -> int | None:
    """An optional integer from an int or a string; fails on anything else or below ``minimum``."""
    value = parse_optional(value)
    if value is None:
        return None
    try:
        number = int(str(value).strip()) if not isinstance(value, int) else value
    except ValueError as err:
        raise ValueError(f"{name} must be an integer, got {value!r}.") from err
    if minimum is not None and number < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {number}.")
    return number


DTYPE_ALIASES = {
    "fp16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
    "fp32": "float32",
    "float": "float32",
}


def parse_dtype(value: Any, device: str | None = None) -> torch.dtype:
    """The ``dtype`` model_arg on ``device`` (None: CUDA when available) as a torch dtype.

    ``auto`` (also None / ``"None"``) / ``float16`` / ``bfloat16`` / ``float32``, as the command lines'
    ``--dtype`` (see :func:`llava.dtypes.resolve_dtype`), plus the short names ``fp16`` / ``half`` /
    ``bf16`` / ``fp32`` / ``float`` and a ``torch.`` prefix; a ``torch.dtype`` is used as is.
    """
    value = parse_optional(value)
    if isinstance(value, torch.dtype):
        return value
    name = AUTO if value is None else str(value).strip().lower().removeprefix("torch.")
    return resolve_dtype(DTYPE_ALIASES.get(name, name), device, option="dtype")


def parse_batch_size(value: Any) -> int:
    """``batch_size`` as an int (``auto`` is not supported: fall back to 1)."""
    value = parse_optional(value)
    if value is None or str(value).strip().lower().startswith("auto"):
        return 1
    return parse_int(value, "batch_size", minimum=1)


def pop_reduction_args(model_args: dict[str, Any]) -> dict[str, Any]:
    """Removes the reduction's keys (``token_reduction``, ``reduction_budget``, ... one per option of
    ``ReductionConfig``) from ``model_args`` and returns them as changes to the recorded reduction."""
    given = {key: parse_optional(model_args.pop(key)) for key in reduction_keys() & set(model_args)}
    return reduction_changes(given)


# ---------------------------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------------------------


def as_image(visual: Any) -> Any:
    """A PIL image from a PIL image or an image path; fails on anything else (videos, audio)."""
    if isinstance(visual, (str, Path)):
        return load_image(visual)
    if hasattr(visual, "convert") and hasattr(visual, "size"):
        return visual
    raise TypeError(f"llava_prumerge takes images (PIL images or image paths), got {type(visual).__name__}.")


def flatten_visuals(visuals: Any) -> list[Any]:
    """The images of a request as a flat list (``doc_to_visual`` may return None, one image or a list)."""
    if visuals is None:
        return []
    if not isinstance(visuals, (list, tuple)):
        visuals = [visuals]
    flat: list[Any] = []
    for visual in visuals:
        flat.extend(flatten_visuals(visual) if isinstance(visual, (list, tuple)) else [as_image(visual)])
    return flat


def user_turn(context: str, num_images: int) -> str:
    """The user's message: one ``<image>\\n`` per image in front of the context, as upstream LLaVA.

    A context that already holds exactly one ``<image>`` per image is kept as is.
    """
    if num_images and context.count(DEFAULT_IMAGE_TOKEN) == num_images:
        return context
    text = context.replace(DEFAULT_IMAGE_TOKEN, "").strip() if DEFAULT_IMAGE_TOKEN in context else context
    return f"{DEFAULT_IMAGE_TOKEN}\n" * num_images + text


def stop_strings(until: Any) -> list[str]:
    """``gen_kwargs["until"]`` as a list of non-empty strings."""
    if until is None:
        return []
    if isinstance(until, str):
        return [until] if until else []
    if isinstance(until, Iterable):
        return [s for s in until if isinstance(s, str) and s]
    raise ValueError(f"gen_kwargs 'until' must be a string or a list of strings, got {until!r}.")


def cut_at_stop(text: str, stops: Sequence[str]) -> str:
    """``text`` up to the first occurrence of any stop string."""
    end = min((i for i in (text.find(s) for s in stops) if i >= 0), default=len(text))
    return text[:end]


def batches(indices: list[int], size: int) -> list[list[int]]:
    """Consecutive slices of ``indices`` of at most ``size`` items."""
    return [indices[i : i + size] for i in range(0, len(indices), size)]


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


class LlavaPruMerge(_LmmsBase):
    """LLaVA-1.5 (any checkpoint ``load_pretrained_model`` reads) with an optional token reduction.

    Args (strings as lmms-eval passes ``--model_args``; ``"None"`` means None):
        pretrained: checkpoint folder or Hub id.
        model_base: base LLM for LoRA and projector-only checkpoints.
        token_reduction, reduction_variant, reduction_budget, reduction_ratio, ...: one key per option of
            the token reduction (the CLI's ``--token-reduction`` / ``--reduction-*`` flags with
            underscores), changing the checkpoint's recorded reduction.
        conv_template: conversation template (``vicuna_v1`` for LLaVA-1.5).
        batch_size: requests per forward pass.
        device: ``cpu``, ``cuda`` or ``cuda:N`` (default: CUDA when available).
        dtype: ``auto`` (default: float16 on CUDA, float32 on CPU) / ``float16`` / ``bfloat16`` / ``float32``.
        max_new_tokens: default generation length when a task's ``gen_kwargs`` sets none.
    """

    def __init__(
        self,
        pretrained: str,
        model_base: str | None = None,
        conv_template: str = "vicuna_v1",
        batch_size: int | str = 1,
        device: str | None = None,
        dtype: str | None = AUTO,
        max_new_tokens: int | str = 128,
        **model_args: Any,
    ) -> None:
        from llava.conversation import get_conv_template
        from llava.model.loader import load_pretrained_model

        super().__init__()
        self._rank, self._world_size = 0, 1
        self.task_dict = getattr(self, "task_dict", {})
        model_args.pop("max_batch_size", None)  # lmms-eval passes it to every model
        changes = pop_reduction_args(model_args)
        if model_args:
            raise TypeError(
                f"llava_prumerge: unknown model_args {sorted(model_args)}; the token reduction's are "
                f"{sorted(reduction_keys())}."
            )
        get_conv_template(conv_template)  # fails early on an unknown name
        self.conv_template = conv_template
        self.batch_size_per_gpu = parse_batch_size(batch_size)
        self.max_new_tokens = parse_int(max_new_tokens, "max_new_tokens", minimum=1) or 128
        pretrained, device = str(pretrained), parse_optional(device)
        model_name = get_model_name_from_path(pretrained)
        tokenizer, model, processor, _ = load_pretrained_model(
            pretrained,
            parse_optional(model_base),
            model_name,
            device=device,
            dtype=parse_dtype(dtype, device),
            reduction_changes=changes,
        )
        self.reduction = model.token_reduction
        self.loaded = Loaded(tokenizer, model, processor, model_name)

    @property
    def model(self) -> Any:
        """The loaded ``LlavaLlamaForCausalLM``."""
        return self.loaded.model

    @property
    def tokenizer(self) -> Any:
        """The model's tokenizer."""
        return self.loaded.tokenizer

    @property
    def batch_size(self) -> int:
        """Requests per forward pass."""
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        """Where the model lives."""
        return self.model.device

    # -- requests -----------------------------------------------------------------------------

    def _doc(self, task: str, split: str, doc_id: Any) -> Any:
        """The task document a request refers to (``task_dict`` is set by lmms-eval)."""
        return self.task_dict[task][split][doc_id]

    def _visuals(self, doc_to_visual: Callable[[Any], Any] | None, doc_id: Any, task: str, split: str):
        """The request's images (``[]`` without ``doc_to_visual``)."""
        if doc_to_visual is None:
            return []
        return flatten_visuals(doc_to_visual(self._doc(task, split, doc_id)))

    def _pixels(self, images: list[Any]) -> torch.Tensor:
        """Preprocessed images ``[I, 3, H, W]`` (``[0, 3, 1, 1]`` for none)."""
        if not images:
            return NO_IMAGES
        aspect = self.model.config.image_aspect_ratio
        return process_images(images, self.loaded.image_processor, aspect)

    def _prompt(self, context: str, num_images: int) -> str:
        """The one-turn prompt ending with ``ASSISTANT:`` (LLaVA-1.5's template)."""
        return build_prompt(self.conv_template, user_turn(context, num_images))

    # -- generate_until ------------------------------------------------------------------------

    def generate_until(self, requests: list) -> list[str]:
        """Generates an answer for each request; returns the texts in request order.

        Requests with the same ``gen_kwargs`` are batched ``batch_size`` at a time (left padding).
        """
        groups: dict[str, list[int]] = {}
        for index, request in enumerate(requests):
            key = json.dumps(request.args[1] or {}, sort_keys=True, default=str)
            groups.setdefault(key, []).append(index)
        results: list[str] = [""] * len(requests)
        for indices in groups.values():
            gen_kwargs = dict(requests[indices[0]].args[1] or {})
            kwargs = self._generation_kwargs(gen_kwargs)
            stops = stop_strings(gen_kwargs.get("until"))
            for chunk in batches(indices, self.batch_size):
                texts = self._generate([requests[i] for i in chunk], kwargs)
                for index, text in zip(chunk, texts):
                    results[index] = cut_at_stop(text, stops)
        return results

    def _generation_kwargs(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """``generate`` arguments from a task's ``gen_kwargs`` (greedy unless sampling is asked for)."""
        temperature = float(gen_kwargs.get("temperature") or 0.0)
        if gen_kwargs.get("do_sample") is False:
            temperature = 0.0
        elif gen_kwargs.get("do_sample") and temperature == 0:
            temperature = 1.0
        return generation_kwargs(
            self.tokenizer,
            max_new_tokens=parse_int(gen_kwargs.get("max_new_tokens"), "max_new_tokens", 1)
            or self.max_new_tokens,
            temperature=temperature,
            top_p=parse_optional(gen_kwargs.get("top_p")),
            num_beams=parse_int(gen_kwargs.get("num_beams"), "num_beams", 1) or 1,
        )

    @torch.no_grad()
    def _generate(self, requests: list, kwargs: dict[str, Any]) -> list[str]:
        """Generates one batch (``args = (context, gen_kwargs, doc_to_visual, doc_id, task, split)``)."""
        prompts, images = [], []
        for request in requests:
            context, _, doc_to_visual, doc_id, task, split = request.args
            visuals = self._visuals(doc_to_visual, doc_id, task, split)
            prompts.append(self._prompt(context, len(visuals)))
            images.extend(visuals)
        ids, mask = batch_prompt_ids(self.tokenizer, prompts)
        model = self.model
        pixels = self._pixels(images).to(model.device, model.dtype)
        # LlavaLlamaForCausalLM.generate splices the images itself (and passes FastV its visual mask)
        new_tokens = model.generate(
            inputs=ids.to(model.device), images=pixels, attention_mask=mask.to(model.device), **kwargs
        )
        return [t.strip() for t in self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]

    def generate_until_multi_round(self, requests: list) -> list[str]:
        """Not supported: LLaVA-1.5 evaluation here is single-turn."""
        raise NotImplementedError(
            "llava_prumerge does not support multi-round generation (generate_until_multi_round); "
            "use single-turn tasks (generate_until / loglikelihood)."
        )

    # -- loglikelihood -------------------------------------------------------------------------

    def loglikelihood(self, requests: list) -> list[tuple[float, bool]]:
        """For each request, ``(log P(continuation | prompt), continuation is the greedy one)``.

        The context is the user's turn (images spliced in front), the continuation the assistant's
        answer right after ``ASSISTANT:`` (no end-of-sequence token is scored).
        """
        results: list[tuple[float, bool]] = []
        size = 1 if self.model.model.in_llm_reduction() is not None else self.batch_size
        for chunk in batches(list(range(len(requests))), size):
            results.extend(self._score([requests[i] for i in chunk]))
        return results

    def _score_inputs(self, request: Any) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """Prompt ids, continuation ids and images of one loglikelihood request."""
        context, target, doc_to_visual, doc_id, task, split = request.args
        continuation = target if isinstance(target, str) else target(self._doc(task, split, doc_id))
        if isinstance(continuation, (list, tuple)):
            continuation = continuation[0]
        visuals = self._visuals(doc_to_visual, doc_id, task, split)
        ids = prompt_ids(self.tokenizer, user_turn(context, len(visuals)), self.conv_template)
        answer = self.tokenizer(str(continuation), add_special_tokens=False)["input_ids"]
        return ids, torch.tensor(answer, dtype=torch.long), visuals

    @torch.no_grad()
    def _score(self, requests: list) -> list[tuple[float, bool]]:
        """Scores one batch: one forward pass over prompt + continuation, left padded."""
        parts = [self._score_inputs(r) for r in requests]
        ids, mask = left_pad([torch.cat([p, a]) for p, a, _ in parts], pad_token_id(self.tokenizer))
        pixels = self._pixels([image for _, _, visuals in parts for image in visuals])
        model = self.model
        inputs = model.prepare_multimodal_inputs(
            ids.to(model.device),
            mask.to(model.device),
            pixels.to(model.device, model.dtype),
            padding_side="left",
        )
        extra = {}
        if model.model.in_llm_reduction() is not None:  # FastV ranks by the last prompt token
            length = inputs.inputs_embeds.shape[1]
            extra = {"visual_mask": inputs.visual_mask, "query_index": length - len(parts[0][1]) - 1}
        logits = model(
            inputs_embeds=inputs.inputs_embeds,
            attention_mask=inputs.attention_mask,
            position_ids=inputs.position_ids,
            **extra,
        ).logits
        results = []
        for row, (_, answer, _) in enumerate(parts):
            results.append(self._answer_score(logits[row], answer))
        return results

    @staticmethod
    def _answer_score(logits: torch.Tensor, answer: torch.Tensor) -> tuple[float, bool]:
        """Log-probability and greediness of the ``n`` answer tokens that end a ``[L, V]`` row.

        Counted from the end: the visual tokens shift every position before them.
        """
        n = len(answer)
        if n == 0:
            return 0.0, True
        length = logits.shape[0]
        step_logits = logits[length - n - 1 : length - 1].float()  # position t predicts token t + 1
        answer = answer.to(step_logits.device)
        logprobs = torch.log_softmax(step_logits, dim=-1)
        total = logprobs.gather(1, answer[:, None]).sum().item()
        greedy = bool((step_logits.argmax(dim=-1) == answer).all())
        return float(total), greedy
