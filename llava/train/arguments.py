"""Command-line arguments of ``llava/train/train.py``: upstream LLaVA's flags, plus the token reduction.

The reduction's flags (``--token_reduction``, ``--reduction_budget``, ...) are
:data:`llava.model.token_reduction.args.ReductionArguments`, generated from the reduction's options.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import transformers

from llava.model.token_reduction import ReductionConfig


@dataclass
class ModelArguments:
    """The model to build: base LLM, vision tower, projector and token reduction."""

    model_name_or_path: str = field(
        metadata={"help": "base LLM (e.g. lmsys/vicuna-7b-v1.5) or a LLaVA checkpoint"}
    )
    version: str = field(default="v1", metadata={"help": "conversation template: v1 (vicuna_v1) or plain"})
    freeze_backbone: bool = field(default=False, metadata={"help": "freeze the language model"})
    tune_mm_mlp_adapter: bool = field(
        default=False, metadata={"help": "train only the projector (pretraining)"}
    )
    vision_tower: str | None = field(default=None, metadata={"help": "CLIP Hub id or folder"})
    mm_vision_select_layer: int = field(default=-2)
    pretrain_mm_mlp_adapter: str | None = field(
        default=None, metadata={"help": "mm_projector.bin to start from"}
    )
    mm_projector_type: str = field(default="linear", metadata={"help": "linear, mlp2x_gelu, identity"})
    mm_use_im_start_end: bool = field(default=False)
    mm_use_im_patch_token: bool = field(default=False)
    mm_patch_merge_type: str = field(default="flat")
    mm_vision_select_feature: str = field(default="patch")
    # set by train.setup() from the reduction flags (ReductionArguments: --token_reduction, --reduction_*)
    reduction: ReductionConfig = field(default_factory=ReductionConfig, init=False)


@dataclass
class DataArguments:
    """Where the data is and how images are pre-processed."""

    data_path: str = field(metadata={"help": "LLaVA JSON list, JSON Lines, or a datasets folder"})
    lazy_preprocess: bool = field(
        default=False, metadata={"help": "accepted for upstream scripts; always lazy"}
    )
    is_multimodal: bool = field(default=False)
    image_folder: str | None = field(default=None)
    image_aspect_ratio: str = field(
        default="square", metadata={"help": "pad (LLaVA-1.5 finetuning) or square"}
    )
    skip_bad_samples: bool = field(
        default=False,
        metadata={"help": "skip bad samples (counted) instead of stopping with the sample named"},
    )
    skip_image_check: bool = field(
        default=False,
        metadata={
            "help": "do not check up front that every image file exists (rank 0 does it once by default)"
        },
    )


@dataclass
class TrainingArguments(transformers.TrainingArguments):
    """transformers' TrainingArguments plus upstream LLaVA's training flags."""

    cache_dir: str | None = field(default=None)
    optim: str = field(default="adamw_torch")
    remove_unused_columns: bool = field(default=False)
    freeze_mm_mlp_adapter: bool = field(default=False)
    model_max_length: int = field(
        default=512, metadata={"help": "maximum sequence length after splicing images"}
    )
    double_quant: bool = field(default=True)
    quant_type: str = field(default="nf4")
    bits: int = field(default=16)
    lora_enable: bool = field(default=False)
    lora_r: int = field(default=64)
    lora_alpha: int = field(default=16)
    lora_dropout: float = field(default=0.05)
    lora_weight_path: str = field(default="")
    lora_bias: str = field(default="none")
    mm_projector_lr: float | None = field(default=None)
    atp_lr: float | None = field(
        default=None,
        metadata={
            "help": "ATP: the learning rate of the ATP modules (None: the global one); no weight decay"
        },
    )
    atp_budget_weight: float = field(
        default=0.1,
        metadata={"help": "ATP: λ_atp, the weight of L_ATP (kept tokens, deeper layers cost more)"},
    )
    atp_target_weight: float = field(
        default=1.0, metadata={"help": "ATP: λ_target, the weight of L_target = |N̄ - target| / N_0"}
    )
    group_by_modality_length: bool = field(default=False)
    warmup_ratio: float | None = field(
        default=None,
        metadata={
            "help": "upstream's flag: warmup as a fraction of the steps (transformers 5: warmup_steps < 1)"
        },
    )
    evaluation_strategy: str | None = field(
        default=None, metadata={"help": "upstream's name of --eval_strategy"}
    )

    def __post_init__(self) -> None:
        import torch

        if self.warmup_ratio is not None:
            self.warmup_steps = self.warmup_ratio
        if self.evaluation_strategy is not None:
            self.eval_strategy = self.evaluation_strategy

        if self.tf32 and not torch.cuda.is_available():
            # The published scripts pass --tf32 True; on a machine without CUDA it has no meaning.
            warnings.warn("--tf32 ignored: no CUDA device.", stacklevel=2)
            self.tf32 = False
        if self.deepspeed and not torch.cuda.is_available():
            self.use_cpu = True  # DeepSpeed's CPU accelerator (gloo): accelerate must see a multi-CPU run
        super().__post_init__()
