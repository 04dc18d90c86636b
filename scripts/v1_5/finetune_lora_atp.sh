#!/usr/bin/env bash
# ATP-LLaVA with LoRA (r 128, alpha 256) on the language model: finetune_atp.sh's recipe with upstream's
# LoRA settings (lr 2e-4 for the adapters, 2e-5 for the projector, 1e-4 for the ATP modules). Output:
# adapter + non_lora_trainables.bin (projector and ATP modules); load with --model-base MODEL_BASE
# (liuhaotian/llava-v1.5-7b by default). ATP_TARGET=144 or 88.
set -euo pipefail
ATP_TARGET=${ATP_TARGET:-144}
export ATP_TARGET OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-lora-atp-$ATP_TARGET}
export LEARNING_RATE=${LEARNING_RATE:-2e-4}
export EXTRA_FLAGS="--lora_enable True --lora_r 128 --lora_alpha 256 --mm_projector_lr 2e-5 ${EXTRA_FLAGS:-}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/finetune_atp.sh" "$@"
