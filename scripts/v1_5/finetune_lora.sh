#!/usr/bin/env bash
# LLaVA-1.5 stage 2 with LoRA (r 128, alpha 256; projector trained in full at 2e-5) on llava_v1_5_mix665k:
# upstream's llava-v1.5-7b-lora recipe, global batch 128, lr 2e-4, 1 epoch, ZeRO-3. Upstream says 7B LoRA
# fits 8x RTX 3090 and 13B 8x A100-40G (timings not measured here). Output: adapter + non_lora_trainables.bin;
# load with --model-base lmsys/vicuna-7b-v1.5. TOKEN_REDUCTION selects a reducer (see the prumerge scripts).
set -euo pipefail
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-lora}
export OUTPUT_DIR LEARNING_RATE=${LEARNING_RATE:-2e-4}
export EXTRA_FLAGS="--lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5 ${EXTRA_FLAGS:-}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/finetune.sh" "$@"
