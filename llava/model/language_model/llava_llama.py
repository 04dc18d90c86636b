"""``LlavaLlamaForCausalLM``: a Llama language model with a CLIP vision tower, a token reducer and a projector.

The module layout matches upstream LLaVA-1.5 checkpoints (``model.embed_tokens``, ``model.layers``,
``model.mm_projector``, ``lm_head``), so their weights load as they are. The vision tower's weights
are not part of the checkpoint: they are loaded from ``mm_vision_tower``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import GenerationMixin, LlamaModel
from transformers.modeling_outputs import CausalLMOutputWithPast
from transformers.models.llama.modeling_llama import LlamaForCausalLM, LlamaPreTrainedModel

from llava.constants import IGNORE_INDEX
from llava.model.configuration_llava import LlavaConfig
from llava.model.llava_arch import MultimodalInputs, splice_visual_tokens
from llava.model.multimodal_encoder.builder import build_vision_tower
from llava.model.multimodal_encoder.clip_encoder import CLIPVisionTower
from llava.model.multimodal_projector.builder import build_vision_projector
from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.atp import ATPModules, ThresholdPredictor
from llava.model.token_reduction.in_llm import InLLMMethod, InLLMPruning
from llava.model.token_reduction.registry import get_reducer

VISION_TOWER_PREFIX = "model.vision_tower."


def last_prompt_positions(labels: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B]`` the last token of each training sample's first question: the one before its first answer
    token (the first label that is not ``IGNORE_INDEX``); the last real token when nothing is answered."""
    answered = labels != IGNORE_INDEX  # [B, L]
    real = torch.ones_like(answered) if attention_mask is None else attention_mask.bool()
    last_real = real.long().cumsum(dim=1).argmax(dim=1)  # the last real position (right padding)
    first_answer = answered.long().argmax(dim=1)
    return torch.where(answered.any(dim=1), (first_answer - 1).clamp(min=0), last_real)


def _multi_process() -> bool:
    return (
        torch.distributed.is_available()
        and torch.distributed.is_initialized()
        and torch.distributed.get_world_size() > 1
    )


@dataclass
class LlavaCausalLMOutput(CausalLMOutputWithPast):
    """``CausalLMOutputWithPast`` plus, when images were spliced, per-sample ``truncated`` and ``num_visual_tokens``.

    Training with ATP adds its two loss terms (``atp_budget_loss`` = L_ATP, ``atp_target_loss`` = L_target;
    ``loss`` stays the language-model loss, the trainer weighs and adds them) and, detached, the mean soft
    count after each module (``atp_kept_tokens``, ``[K]``) and the mean N̄ (``atp_mean_tokens``).
    """

    truncated: torch.Tensor | None = None
    num_visual_tokens: torch.Tensor | None = None
    atp_budget_loss: torch.Tensor | None = None
    atp_target_loss: torch.Tensor | None = None
    atp_kept_tokens: torch.Tensor | None = None
    atp_mean_tokens: torch.Tensor | None = None


class LlavaLlamaModel(LlamaModel):
    """The Llama decoder plus ``vision_tower`` and ``mm_projector`` when the config names a tower."""

    config_class = LlavaConfig

    def __init__(self, config: LlavaConfig) -> None:
        config = LlavaConfig.from_object(config)
        super().__init__(config)
        if config.mm_use_im_start_end or config.mm_use_im_patch_token:
            raise ValueError(
                "mm_use_im_start_end / mm_use_im_patch_token (LLaVA v0/v1 image tokens) are not supported; "
                "LLaVA-1.5 checkpoints set both to false."
            )
        if config.mm_vision_tower:
            self.vision_tower = build_vision_tower(config, load_weights=False)
            self.mm_projector = build_vision_projector(config)
            if config.mm_atp_layers:
                self.atp_modules = ATPModules(config.mm_atp_layers, self.vision_tower.num_patches)
        # hooks on the decoder layers' calls, idle unless an in-LLM reduction (FastV) runs a forward pass
        self.in_llm = InLLMPruning(self.layers, config)
        self._in_llm_method = None

    def get_vision_tower(self) -> CLIPVisionTower | None:
        return getattr(self, "vision_tower", None)

    def in_llm_reduction(self) -> ReductionConfig | None:
        """The configured in-LLM reduction (FastV), or None (the tower holds the parsed reduction)."""
        tower = self.get_vision_tower()
        return tower.reduction if tower is not None and tower.reduction.in_llm else None

    def in_llm_method(self) -> InLLMMethod | None:
        """The in-LLM method to run on the decoder layers' calls, or None."""
        reduction = self.in_llm_reduction()
        if reduction is None:
            return None
        if self._in_llm_method is None or self._in_llm_method.config != reduction:
            self._in_llm_method = self.build_in_llm_method(reduction)
        return self._in_llm_method

    def build_in_llm_method(self, reduction: ReductionConfig) -> InLLMMethod:
        """The in-LLM method of ``reduction``, checked against this model's layers (ATP's insertion layers)."""
        method = get_reducer(reduction.method).in_llm_method(reduction)
        check = getattr(method, "check_layers", None)
        if check is not None:
            check(len(self.layers))
        bind = getattr(method, "bind", None)  # ATP: the trained threshold predictors and the patch grid
        if bind is not None:
            tower = self.get_vision_tower()
            bind(getattr(self, "atp_modules", None), tower.num_patches if tower is not None else None)
        return method

    def _init_weights(self, module: nn.Module) -> None:
        """Llama's initialisation, and ATP's own for threshold predictors a checkpoint does not hold."""
        if isinstance(module, ThresholdPredictor):
            module.reset_parameters()
        else:
            super()._init_weights(module)


class LlavaLlamaForCausalLM(LlamaForCausalLM):
    """LLaVA-1.5: images are encoded, reduced, projected and spliced at their placeholders.

    ``forward`` and ``generate`` take ``images`` ``[I, 3, H, W]``, one per ``IMAGE_TOKEN_INDEX`` in
    ``input_ids`` (row-major order over the batch). Each image contributes the number of tokens its
    reducer kept.
    """

    config_class = LlavaConfig
    _keys_to_ignore_on_load_missing = [r"model\.vision_tower\."]
    _keys_to_ignore_on_load_unexpected = [r"rotary_emb\.inv_freq", r"model\.vision_tower\."]

    def __init__(self, config: LlavaConfig) -> None:
        config = LlavaConfig.from_object(config)  # e.g. a base LLM's LlamaConfig: the LLaVA fields' defaults
        LlamaPreTrainedModel.__init__(self, config)
        self.model = LlavaLlamaModel(config)
        self.vocab_size = config.vocab_size
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def get_model(self) -> LlavaLlamaModel:
        return self.model

    def _init_weights(self, module: nn.Module) -> None:
        """As :meth:`LlavaLlamaModel._init_weights` (whichever model transformers asks)."""
        if isinstance(module, ThresholdPredictor):
            module.reset_parameters()
        else:
            super()._init_weights(module)

    def get_vision_tower(self) -> CLIPVisionTower | None:
        return self.model.get_vision_tower()

    @property
    def token_reduction(self) -> ReductionConfig:
        """The reduction the model runs (what ``config.mm_token_reduction`` records; none when absent)."""
        return ReductionConfig.from_value(self.config.mm_token_reduction)

    def set_token_reduction(
        self, reduction: ReductionConfig | dict[str, Any] | str | None
    ) -> ReductionConfig:
        """Switches the reducer and records it in ``config.mm_token_reduction``."""
        reduction = ReductionConfig.from_value(reduction)
        if reduction.in_llm:
            self.model.build_in_llm_method(reduction)  # options that must fit the LLM raise before any switch
        self._require_tower().set_reduction(reduction)
        self.config.mm_token_reduction = reduction.to_dict()
        return reduction

    def add_atp_modules(self, layers: tuple[int, ...] | list[int]) -> ATPModules:
        """New (untrained) ATP modules for ``layers``, recorded in ``config.mm_atp_layers``; replaces any."""
        tower = self._require_tower()
        modules = ATPModules(layers, tower.num_patches).to(self.device)
        self.model.atp_modules = modules
        self.config.mm_atp_layers = list(modules.layers)
        self.model._in_llm_method = None  # rebuilt with the new modules
        return modules

    def _require_tower(self) -> CLIPVisionTower:
        tower = self.get_vision_tower()
        if tower is None:
            raise ValueError("This model has no vision tower (its config sets no mm_vision_tower).")
        return tower

    def encode_images(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Projected visual tokens ``[I, M, H]`` (zero after each length) and lengths ``[I]``."""
        out = self._require_tower()(images)
        projector = self.model.mm_projector
        dtype = next(projector.parameters(), out.tokens).dtype
        tokens = projector(out.tokens.to(dtype))  # [I, M, H]
        valid = torch.arange(tokens.shape[1], device=tokens.device)[None] < out.lengths[:, None]
        return tokens * valid[..., None].to(tokens.dtype), out.lengths

    def prepare_multimodal_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        images: torch.Tensor | None,
        labels: torch.Tensor | None = None,
        padding_side: str | None = None,
    ) -> MultimodalInputs:
        """Encodes ``images`` (None or empty for text only) and splices them into ``input_ids``.

        See :func:`splice_visual_tokens`.
        """
        has_images = images is not None and len(images) > 0
        if has_images:
            tokens, lengths = self.encode_images(images)
        elif self.training and self.get_vision_tower() is not None and _multi_process():
            # A text-only batch on one rank of a multi-process run: run the tower and projector on one
            # blank image and splice none of its tokens, so every rank takes part in the same ZeRO-3 /
            # DDP collectives. The sample itself gets no image tokens.
            size = self.get_vision_tower().config.image_size
            blank = torch.zeros(1, 3, size, size, device=input_ids.device)
            tokens, lengths = self.encode_images(blank)
            tokens, lengths = tokens[:0], lengths[:0]
        else:
            tokens, lengths = self._no_images(input_ids)
        return self.splice(input_ids, attention_mask, labels, tokens, lengths, padding_side)

    def splice(
        self, input_ids, attention_mask, labels, tokens, lengths, padding_side=None
    ) -> MultimodalInputs:
        """:func:`splice_visual_tokens` with this model's embeddings, context length and padding side."""
        return splice_visual_tokens(
            input_ids,
            attention_mask,
            labels,
            tokens,
            lengths,
            self.get_input_embeddings(),
            max_length=self.config.tokenizer_model_max_length,
            padding_side=padding_side or self.config.tokenizer_padding_side,
        )

    def _no_images(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        empty = torch.zeros(0, 0, self.config.hidden_size, device=input_ids.device)
        return empty, torch.zeros(0, dtype=torch.long, device=input_ids.device)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        labels: torch.LongTensor | None = None,
        images: torch.Tensor | None = None,
        image_sizes: Any = None,
        visual_mask: torch.Tensor | None = None,
        query_index: int | None = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: Any,
    ) -> LlavaCausalLMOutput:
        """Llama's forward, after splicing ``images`` into ``input_ids``.

        Splicing happens when ``images`` are given, and in training for every batch (a text-only batch
        splices zero images). The output adds ``truncated`` and ``num_visual_tokens`` per sample.
        ``visual_mask`` / ``query_index`` are for FastV when ``inputs_embeds`` are given directly.
        ``image_sizes`` is accepted for upstream's call signature and unused: it serves LLaVA-NeXT's
        any-resolution tiling, and LLaVA-1.5 brings every image to the tower's square input.
        ``logits_to_keep`` is Llama's (0 = every position); being in this signature is what makes
        ``generate`` ask for the last position only in prefill instead of the LM head over the whole prompt.
        The KV cache and every other keyword pass through to Llama under whatever name it uses.
        """
        spliced = None
        if inputs_embeds is None and input_ids is not None and (images is not None or self.training):
            spliced = self.prepare_multimodal_inputs(input_ids, attention_mask, images, labels)
            input_ids, inputs_embeds = None, spliced.inputs_embeds
            attention_mask, position_ids, labels = (
                spliced.attention_mask,
                spliced.position_ids,
                spliced.labels,
            )
            visual_mask = spliced.visual_mask
        with self._in_llm_step(visual_mask, attention_mask, query_index, labels) as step:
            out = super().forward(
                input_ids=input_ids,
                attention_mask=attention_mask,
                position_ids=position_ids,
                inputs_embeds=inputs_embeds,
                labels=labels,
                logits_to_keep=logits_to_keep,
                **kwargs,
            )
            extra = self.model.in_llm.method.training_outputs(step) if step and step.mode == "soft" else {}
        return LlavaCausalLMOutput(
            **dict(out.items()),
            truncated=None if spliced is None else spliced.truncated,
            num_visual_tokens=None if spliced is None else spliced.num_visual_tokens,
            **extra,
        )

    def _in_llm_step(
        self, visual_mask, attention_mask, query_index, labels
    ) -> contextlib.AbstractContextManager:
        """The in-LLM reduction's hooks for one forward pass (a null context without one).

        In training the method runs with soft masks (ATP); its text queries end before each sample's
        first answer token. A method without soft masks (FastV) cannot train.
        """
        method = self.model.in_llm_method()
        if method is None:
            return contextlib.nullcontext()
        soft = self.training
        if soft and not hasattr(method, "soft_mask"):
            raise ValueError(
                f"The in-LLM reduction {self.model.in_llm_reduction().method!r} runs at inference only; "
                "it cannot run while training."
            )
        if soft and labels is not None:
            query_index = last_prompt_positions(labels, attention_mask)
        return self.model.in_llm.forward_step(method, visual_mask, attention_mask, query_index, soft=soft)

    @torch.no_grad()
    def generate(
        self,
        inputs: torch.Tensor | None = None,
        images: torch.Tensor | None = None,
        image_sizes: Any = None,
        attention_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        """Generation with images spliced once, left-padded. Returns only the new tokens ``[B, T_new]``.

        ``attention_mask`` marks padding in ``inputs`` (either side). ``image_sizes`` is unused (see
        :meth:`forward`). Without ``images`` the prompt is text only; the output is still only the new tokens, as upstream LLaVA. With ``inputs_embeds``
        instead of ``inputs`` this is transformers' own generation.
        """
        if inputs is None:
            return GenerationMixin.generate(self, attention_mask=attention_mask, **kwargs)
        spliced = self.prepare_multimodal_inputs(inputs, attention_mask, images, padding_side="left")
        return self.generate_spliced(spliced, **kwargs)

    @torch.no_grad()
    def generate_spliced(self, spliced: MultimodalInputs, **kwargs: Any) -> torch.Tensor:
        """Generation from inputs already spliced with left padding (see ``prepare_multimodal_inputs``).

        Returns only the new tokens. Callers that need ``num_visual_tokens`` splice first, then call this.
        """
        if self.model.in_llm_reduction() is not None:  # FastV: which tokens are visual, the last prompt token
            kwargs.update(visual_mask=spliced.visual_mask, query_index=spliced.inputs_embeds.shape[1] - 1)
        return GenerationMixin.generate(
            self, inputs_embeds=spliced.inputs_embeds, attention_mask=spliced.attention_mask, **kwargs
        )

    def visual_token_schedule(self) -> torch.Tensor | None:
        """``[B, num_layers]`` visual tokens each decoder layer ran on in the last prefill with an in-LLM
        reduction (FastV, ATP), or None (no in-LLM reduction: every layer runs on ``num_visual_tokens``)."""
        if self.model.in_llm_reduction() is None:
            return None
        return self.model.in_llm.last_schedule

    def kept_visual_ranks(self) -> list[torch.Tensor] | None:
        """After a prefill with an in-LLM reduction, one ``[B, L']`` tensor per pruning stage: each token's
        index among its sample's visual tokens (its raster index for one image), -1 for the others; else None."""
        if self.model.in_llm_reduction() is None:
            return None
        return self.model.in_llm.last_kept_ranks

    def pruning_thresholds(self) -> dict[int, list[list[float]]] | None:
        """After a prefill with ATP, ``{insertion layer: [[θ_r, θ_s] per sample]}`` (predicted by the
        trained modules, or the fixed ones); None for other reductions or text-only prompts."""
        thresholds = self.model.in_llm.last_thresholds if self.model.in_llm_reduction() is not None else None
        if not thresholds:
            return None
        batch = self.model.in_llm.last_schedule.shape[0]
        out = {}
        for prune_layer, (theta_r, theta_s) in sorted(thresholds.items()):
            pair = [
                torch.as_tensor(t, dtype=torch.float32).flatten().expand(batch) for t in (theta_r, theta_s)
            ]
            out[prune_layer + 1] = torch.stack(pair, dim=1).tolist()
        return out

    def save_pretrained(self, save_directory: Any, state_dict: dict | None = None, **kwargs: Any) -> None:
        """Saves like transformers does, without the vision tower (it loads from ``mm_vision_tower``)."""
        state_dict = self.state_dict() if state_dict is None else state_dict
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith(VISION_TOWER_PREFIX)}
        super().save_pretrained(save_directory, state_dict=state_dict, **kwargs)
