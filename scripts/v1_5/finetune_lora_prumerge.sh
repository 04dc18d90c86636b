#!/usr/bin/env bash
# PruMerge (Table 1, "+ PruMerge (5.5 %)"): LLaVA-1.5-7B LoRA finetuning with the PruMerge reducer
# (reference variant, as the released yuzhang/llava-prumerge-vicuna-7b-v1.5-lora) in the loop.
# Same recipe as finetune_lora.sh (global batch 128; the authors used 4x20x2 = 160), 1 epoch on
# llava_v1_5_mix665k from the stage-1 projector. Hardware: as finetune_lora.sh (not measured here).
set -euo pipefail
export TOKEN_REDUCTION=prumerge REDUCTION_VARIANT=${REDUCTION_VARIANT:-reference}
export OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-lora-prumerge}
exec bash "$(dirname "${BASH_SOURCE[0]}")/finetune_lora.sh" "$@"
