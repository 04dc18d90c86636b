#!/usr/bin/env bash
# PruMerge+ (Table 1, "+ PruMerge+ (25 %)"): LLaVA-1.5-7B LoRA finetuning with PruMerge+ (reference
# variant, adaptive form) in the loop, as yuzhang/llava-prumerge-plus-vicuna-7b-v1.5-lora.
# Same recipe as finetune_lora.sh, 1 epoch on llava_v1_5_mix665k. Hardware: as finetune_lora.sh.
set -euo pipefail
export TOKEN_REDUCTION=prumerge_plus REDUCTION_VARIANT=${REDUCTION_VARIANT:-reference}
export OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-lora-prumerge-plus}
exec bash "$(dirname "${BASH_SOURCE[0]}")/finetune_lora.sh" "$@"
