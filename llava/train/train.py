"""Train LLaVA-1.5: projector pretraining, full finetuning or LoRA finetuning, with token reduction in the loop.

Upstream's flags keep their names and meanings (see ``scripts/v1_5/*.sh``), plus the token reduction's
(``--token_reduction``, ``--reduction_variant``, ``--reduction_form``, ``--reduction_budget``, ... one per
option of ``ReductionConfig``) and ``--skip_bad_samples``::

    deepspeed llava/train/train_mem.py --deepspeed scripts/zero3.json --lora_enable True ... \\
        --token_reduction prumerge_plus --reduction_variant reference

One entry point, four steps: :func:`setup` (tokenizer, model, data), :func:`train`, :func:`save`,
:func:`report`. The reduction used is written into every saved ``config.json``.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers

from llava.model import LlavaConfig, LlavaLlamaForCausalLM, register_auto_classes
from llava.model.token_reduction.args import ReductionArguments
from llava.train.arguments import DataArguments, ModelArguments, TrainingArguments
from llava.train.data import DataCollatorForSupervisedDataset, LazySupervisedDataset
from llava.train.llava_trainer import (
    LLaVATrainer,
    latest_complete_checkpoint,
    require_complete,
    save_lora_extras,
    save_projector,
)
from llava.train.zero import init_deepspeed_distributed, load_into

logger = logging.getLogger("llava.train")


@dataclass
class Setup:
    """Everything a run needs, built once."""

    model: Any
    tokenizer: Any
    config: LlavaConfig
    dataset: LazySupervisedDataset
    trainer: LLaVATrainer


def llava_config(
    model_args: ModelArguments, training_args: TrainingArguments, data_args: DataArguments
) -> LlavaConfig:
    """The base model's config with the ``mm_*`` fields of this run (a LLaVA checkpoint keeps its tower)."""
    from transformers import AutoConfig, CLIPVisionConfig

    path, cache_dir = model_args.model_name_or_path, training_args.cache_dir
    values, _ = LlavaConfig.get_config_dict(path, cache_dir=cache_dir)  # upstream's 2023 "llava" read as ours
    if values.get("model_type") != LlavaConfig.model_type:  # a base LLM
        values = AutoConfig.from_pretrained(path, cache_dir=cache_dir).to_dict()
    for key in ("model_type", "architectures", "transformers_version", "text_config", "vision_config"):
        values.pop(key, None)
    config = LlavaConfig.from_dict(values)
    tower = model_args.vision_tower or config.mm_vision_tower
    if tower is None:
        raise ValueError("--vision_tower is required (e.g. openai/clip-vit-large-patch14-336).")
    config.mm_vision_tower = tower
    config.mm_hidden_size = CLIPVisionConfig.from_pretrained(tower).hidden_size
    config.mm_vision_select_layer = model_args.mm_vision_select_layer
    config.mm_vision_select_feature = model_args.mm_vision_select_feature
    config.mm_projector_type = model_args.mm_projector_type
    config.mm_use_im_start_end = model_args.mm_use_im_start_end
    config.mm_use_im_patch_token = model_args.mm_use_im_patch_token
    config.mm_patch_merge_type = model_args.mm_patch_merge_type
    config.image_aspect_ratio = data_args.image_aspect_ratio
    config.tokenizer_model_max_length = training_args.model_max_length
    config.tokenizer_padding_side = "right"  # the collator pads right (a LLaVA base may record another side)
    config.tune_mm_mlp_adapter = model_args.tune_mm_mlp_adapter
    config.freeze_mm_mlp_adapter = training_args.freeze_mm_mlp_adapter
    config.mm_projector_lr = training_args.mm_projector_lr
    config.mm_token_reduction = model_args.reduction.to_dict()
    # the ATP modules this run trains (a checkpoint's own, for the same layers, load as they are); a run
    # without ATP drops a checkpoint's modules rather than carrying unused weights
    atp = model_args.reduction.method == "atp"
    config.mm_atp_layers = list(model_args.reduction.atp_layers) if atp else None
    config.use_cache = False
    return config


def compute_dtype(training_args: TrainingArguments) -> torch.dtype:
    """The dtype of the forward and backward: bfloat16 for ``--bf16``, float16 for ``--fp16``, else float32."""
    if training_args.bf16:
        return torch.bfloat16
    return torch.float16 if training_args.fp16 else torch.float32


def load_dtype(training_args: TrainingArguments) -> torch.dtype:
    """The dtype the weights are loaded in: the 16-bit type under DeepSpeed, float32 without it.

    DeepSpeed (``"fp16"/"bf16": {"enabled": "auto"}`` follow ``--fp16/--bf16``) casts the model to that type
    itself (ZeRO-3 partitions it in that type at load) and keeps the float32 master weights in its
    optimizer, so loading in 16 bits only saves memory. Without DeepSpeed the stored weights *are* the
    optimizer's weights: they stay float32 and the Trainer's autocast computes in 16 bits.
    """
    return compute_dtype(training_args) if training_args.deepspeed else torch.float32


def build_model(
    model_args: ModelArguments,
    training_args: TrainingArguments,
    config: LlavaConfig,
    attn_implementation: str | None,
):
    """The LLaVA model on the base weights, with the CLIP weights, the projector and the trainable set."""
    from llava.model.loader import _read_state, projector_state

    model = LlavaLlamaForCausalLM.from_pretrained(
        model_args.model_name_or_path,
        config=config,
        dtype=load_dtype(training_args),
        cache_dir=training_args.cache_dir,
        attn_implementation=attn_implementation,
    )
    tower = model.get_vision_tower()
    load_into(tower.vision_tower, tower.pretrained_state_dict())
    tower.check_reduction()
    if model_args.pretrain_mm_mlp_adapter:
        path = Path(model_args.pretrain_mm_mlp_adapter)
        load_into(model.get_model().mm_projector, projector_state(_read_state(path), path))
    model.requires_grad_(not (model_args.freeze_backbone or model_args.tune_mm_mlp_adapter))
    model.get_vision_tower().requires_grad_(False)
    if training_args.gradient_checkpointing:
        model.enable_input_require_grads()
    if training_args.lora_enable:
        model = add_lora(model, training_args)
    projector = projector_owner(model, training_args).mm_projector
    projector.requires_grad_(not training_args.freeze_mm_mlp_adapter)
    atp_modules = getattr(projector_owner(model, training_args), "atp_modules", None)
    if atp_modules is not None:
        atp_modules.requires_grad_(True)  # ATP's threshold predictors train in every kind of run
    if not training_args.deepspeed:
        store_frozen_in_half(
            model, compute_dtype(training_args), with_llm=saves_no_llm(model_args, training_args)
        )
    return model


def projector_owner(model, training_args: TrainingArguments):
    """The ``LlavaLlamaModel`` holding the projector (and ATP's modules), under the PEFT wrapper for LoRA."""
    return model.base_model.model.get_model() if training_args.lora_enable else model.get_model()


def check_atp_training(model_args: ModelArguments, training_args: TrainingArguments) -> None:
    """ATP trains its thresholds toward a budget, through soft masks the attention must take as a bias."""
    reduction = model_args.reduction
    if reduction.method != "atp":
        return
    if reduction.atp_target_tokens is None:
        raise ValueError(
            "--token_reduction atp trains toward a budget of visual tokens: give --reduction_atp_target_tokens "
            "(144 or 88 in the paper)."
        )
    if reduction.atp_redundancy_threshold is not None or reduction.atp_spatial_threshold is not None:
        raise ValueError(
            "Fixed ATP thresholds (--reduction_atp_redundancy_threshold / --reduction_atp_spatial_threshold) "
            "are for inference without trained modules; training learns the thresholds: drop them."
        )
    kwargs = training_args.gradient_checkpointing_kwargs or {}
    if training_args.gradient_checkpointing and kwargs.get("use_reentrant"):
        raise ValueError(
            "ATP's soft masks reach the decoder layers as an attention bias, which reentrant activation "
            "checkpointing does not differentiate: drop use_reentrant from --gradient_checkpointing_kwargs."
        )


def saves_no_llm(model_args: ModelArguments, training_args: TrainingArguments) -> bool:
    """Whether the run's checkpoints leave the language model's weights out (LoRA, projector-only)."""
    return training_args.lora_enable or model_args.tune_mm_mlp_adapter


def store_frozen_in_half(model, dtype: torch.dtype, with_llm: bool) -> None:
    """Stores frozen weights in the autocast ``dtype`` (no-op for float32); trainable ones stay float32.

    Always the vision tower; the language model too when ``with_llm`` (LoRA, projector-only), i.e. when
    its weights are frozen and never written, so every checkpoint still holds one dtype. This is safe:
    a frozen weight needs no float32 master copy (it is never updated), its matmuls already run in
    ``dtype`` under autocast, and the 16-bit forward is the one evaluation runs. The gradients that
    flow through the frozen LLM to the adapters and the projector are 16-bit under autocast either way.
    """
    if dtype == torch.float32:
        return
    modules = [model] if with_llm else [model.get_vision_tower()]
    for module in modules:
        for param in module.parameters():
            if not param.requires_grad and param.is_floating_point():
                param.data = param.data.to(dtype)


def add_lora(model, training_args: TrainingArguments):
    """LoRA on every Linear of the language model (not the tower, the projector or ``lm_head``)."""
    from peft import LoraConfig, get_peft_model

    skip = ("mm_projector", "vision_tower", "lm_head")
    targets = sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(s in name for s in skip)
        }
    )
    lora = LoraConfig(
        r=training_args.lora_r,
        lora_alpha=training_args.lora_alpha,
        lora_dropout=training_args.lora_dropout,
        bias=training_args.lora_bias,
        target_modules=targets,
        exclude_modules=r".*(vision_tower|mm_projector).*",
        task_type="CAUSAL_LM",
    )
    # Adapters in the model's dtype: float32 without DeepSpeed (the master weights); under DeepSpeed its
    # 16-bit type, as ZeRO needs one dtype across the trainable weights (it keeps float32 masters itself).
    return get_peft_model(model, lora, autocast_adapter_dtype=False)


def setup(argv: list[str] | None = None, attn_implementation: str | None = None) -> Setup:
    """Parses the flags and builds tokenizer, model, dataset and trainer (``sdpa`` attention by default)."""
    argv = sys.argv[1:] if argv is None else argv
    if any(a.startswith("--deepspeed") for a in argv):
        init_deepspeed_distributed()
    parser = transformers.HfArgumentParser(
        (ModelArguments, DataArguments, TrainingArguments, ReductionArguments)
    )
    model_args, data_args, training_args, reduction_args = parser.parse_args_into_dataclasses(args=argv)
    model_args.reduction = reduction_args.to_config()
    check_atp_training(model_args, training_args)
    if training_args.bits != 16:
        raise ValueError("--bits 4/8 (QLoRA) is not supported; train LoRA in bf16 (--bits 16).")
    logging.basicConfig(format="%(asctime)s %(name)s: %(message)s", level=logging.INFO)
    register_auto_classes()
    tokenizer = transformers.AutoTokenizer.from_pretrained(
        model_args.model_name_or_path,
        cache_dir=training_args.cache_dir,
        model_max_length=training_args.model_max_length,
        padding_side="right",
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.unk_token  # LLaVA-1.5: pad = unk (id 0)
    config = llava_config(model_args, training_args, data_args)
    # --seed also fixes the weights created here (projector, LoRA), not only the Trainer's shuffling
    transformers.set_seed(training_args.seed)
    model = build_model(model_args, training_args, config, attn_implementation)
    from llava.mm_utils import load_image_processor

    _ = training_args.world_size  # sets up the process group (torchrun), so rank 0 alone checks the images
    dataset = LazySupervisedDataset(
        data_args.data_path,
        tokenizer,
        load_image_processor(config.mm_vision_tower),
        model_args.version,
        data_args.image_folder,
        data_args.image_aspect_ratio,
        skip_bad=data_args.skip_bad_samples,
        check_images=not data_args.skip_image_check,
    )
    trainer = LLaVATrainer(
        model=model,
        args=training_args,
        train_dataset=dataset,
        data_collator=DataCollatorForSupervisedDataset(pad_token_id=tokenizer.pad_token_id),
        processing_class=tokenizer,
        llava_config=config,
    )
    return Setup(model, tokenizer, config, dataset, trainer)


def train(run: Setup) -> None:
    """Trains, resuming from ``--resume_from_checkpoint`` (a path, or True for the latest checkpoint)."""
    args = run.trainer.args
    resume = args.resume_from_checkpoint
    if resume in ("True", "true", True):  # the latest complete checkpoint, not merely the newest folder
        resume = latest_complete_checkpoint(args.output_dir, args.lora_enable)
        logger.info("Resuming from %s", resume)
    elif resume:
        require_complete(resume, args.lora_enable)
    run.trainer.train(resume_from_checkpoint=resume)


def save(run: Setup) -> None:
    """Writes the final checkpoint in LLaVA's format for this kind of run (see ``llava_trainer``)."""
    args, out = run.trainer.args, run.trainer.args.output_dir
    run.model.config.use_cache = True
    run.config.use_cache = True
    if run.config.tune_mm_mlp_adapter:
        save_projector(run.model, out, run.config, args.should_save)
    elif args.lora_enable:
        run.trainer.save_model(out)  # the PEFT adapter (gathered under ZeRO-3)
        save_lora_extras(run.model, out, run.config, args.should_save)
    else:
        run.trainer.save_model(out)
    if args.should_save:
        run.tokenizer.save_pretrained(out)


def report(run: Setup) -> None:
    """Reports what was skipped or cut, so no sample is lost silently."""
    skipped = run.dataset.skipped + run.dataset.corrupt_images.value
    if skipped:
        logger.warning("Skipped %d bad sample(s) (see the warnings above).", skipped)
    if run.trainer.num_truncated:
        logger.warning(
            "%d sample(s) were cut at --model_max_length %d (visual tokens included).",
            run.trainer.num_truncated,
            run.trainer.args.model_max_length,
        )


def main(argv: list[str] | None = None, attn_implementation: str | None = None) -> Setup:
    """Runs one training job; returns its :class:`Setup` (model, trainer, counts) for callers and tests."""
    run = setup(argv, attn_implementation)
    train(run)
    save(run)
    report(run)
    return run


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main(sys.argv[1:])
