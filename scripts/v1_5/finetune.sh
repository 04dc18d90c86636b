#!/usr/bin/env bash
# LLaVA-1.5 stage 2, full finetuning (LLM + projector) on llava_v1_5_mix665k, starting from the stage-1
# projector. Published recipe: global batch 128, lr 2e-5, 1 epoch, ZeRO-3; upstream reports ~10 h (7B,
# 8x A100-40G) / ~20 h (13B, 8x A100-80G) (not measured here). TOKEN_REDUCTION=prumerge trains with a reducer.
# Paths are environment variables; extra flags are appended (e.g. --max_steps 2). PRETRAIN_MM_MLP_ADAPTER=
# (empty) starts from a LLaVA checkpoint's own projector (MODEL_BASE a LLaVA checkpoint, as finetune_atp.sh).
set -euo pipefail
MODEL_BASE=${MODEL_BASE:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/llava_v1_5_mix665k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data}
PRETRAIN_MM_MLP_ADAPTER=${PRETRAIN_MM_MLP_ADAPTER-./checkpoints/llava-v1.5-7b-pretrain/mm_projector.bin}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b}
TOKEN_REDUCTION=${TOKEN_REDUCTION:-none}
REDUCTION_VARIANT=${REDUCTION_VARIANT:-reference}
GLOBAL_BATCH=128
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-16}
LEARNING_RATE=${LEARNING_RATE:-2e-5}
EXTRA_FLAGS=(${EXTRA_FLAGS:-})
if [ -n "$PRETRAIN_MM_MLP_ADAPTER" ]; then
    EXTRA_FLAGS+=(--pretrain_mm_mlp_adapter "$PRETRAIN_MM_MLP_ADAPTER")
fi
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"

launch llava/train/train_mem.py \
    --deepspeed "$REPO_ROOT/scripts/zero3.json" \
    "${EXTRA_FLAGS[@]}" \
    --model_name_or_path "$MODEL_BASE" \
    --version v1 \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --vision_tower "$VISION_TOWER" \
    --mm_projector_type mlp2x_gelu \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --image_aspect_ratio pad \
    --group_by_modality_length True \
    --token_reduction "$TOKEN_REDUCTION" \
    --reduction_variant "$REDUCTION_VARIANT" \
    --bf16 True \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE_BATCH" \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps 50000 \
    --save_total_limit 1 \
    --learning_rate "$LEARNING_RATE" \
    --weight_decay 0. \
    --warmup_ratio 0.03 \
    --lr_scheduler_type cosine \
    --logging_steps 1 \
    --tf32 True \
    --model_max_length 2048 \
    --gradient_checkpointing True \
    --dataloader_num_workers 4 \
    --lazy_preprocess True \
    --report_to "$REPORT_TO" \
    "$@"
