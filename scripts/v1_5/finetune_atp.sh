#!/usr/bin/env bash
# ATP-LLaVA (learned, instance- and layer-wise pruning inside the LLM; docs/ATP.md): full finetuning of
# LLaVA-1.5-7B with ATP modules before decoder layers 4, 14 and 24 (ATP_LAYERS), trained toward an average
# of ATP_TARGET visual tokens over all layers (N̄): 144 ("ATP-LLaVA 144*") or 88 ("88*").
# Recipe (the paper publishes none; docs/ATP.md says what was chosen): finetune.sh's (global batch 128,
# lr 2e-5, cosine, warm-up 0.03, bf16, ZeRO-3, activation checkpointing, 1 epoch on llava_v1_5_mix665k)
# from the released liuhaotian/llava-v1.5-7b and its projector, the ATP modules at ATP_LR 1e-4 without
# weight decay; λ_atp 0.1, λ_target 1.0, τ 0.1, λ_sample 3. Set PRETRAIN_MM_MLP_ADAPTER (and MODEL_BASE a
# base LLM) to start from a stage-1 projector instead.
set -euo pipefail
ATP_TARGET=${ATP_TARGET:-144}
export MODEL_BASE=${MODEL_BASE:-liuhaotian/llava-v1.5-7b}
export PRETRAIN_MM_MLP_ADAPTER=${PRETRAIN_MM_MLP_ADAPTER-}
export OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-atp-$ATP_TARGET}
export TOKEN_REDUCTION=atp
export EXTRA_FLAGS="--reduction_atp_layers ${ATP_LAYERS:-4,14,24} --reduction_atp_target_tokens $ATP_TARGET \
--atp_lr ${ATP_LR:-1e-4} --atp_budget_weight 0.1 --atp_target_weight 1.0 ${EXTRA_FLAGS:-}"
exec bash "$(dirname "${BASH_SOURCE[0]}")/finetune.sh" "$@"
