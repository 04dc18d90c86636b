#!/usr/bin/env bash
# LLaVA-1.5 stage 1: projector pretraining on LLaVA-Pretrain (blip_laion_cc_sbu_558k), LLM and CLIP frozen.
# Published recipe: global batch 256, lr 1e-3, 1 epoch, ZeRO-2; upstream reports ~3.5 h (7B) / ~5.5 h (13B)
# on 8x A100-80G (not measured here). Output: $OUTPUT_DIR/mm_projector.bin for the finetuning scripts.
# Paths are environment variables; extra flags are appended (e.g. --max_steps 2).
set -euo pipefail
MODEL_BASE=${MODEL_BASE:-lmsys/vicuna-7b-v1.5}
VISION_TOWER=${VISION_TOWER:-openai/clip-vit-large-patch14-336}
DATA_PATH=${DATA_PATH:-./playground/data/LLaVA-Pretrain/blip_laion_cc_sbu_558k.json}
IMAGE_FOLDER=${IMAGE_FOLDER:-./playground/data/LLaVA-Pretrain/images}
OUTPUT_DIR=${OUTPUT_DIR:-./checkpoints/llava-v1.5-7b-pretrain}
GLOBAL_BATCH=256
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-32}
source "$(dirname "${BASH_SOURCE[0]}")/_train_common.sh"

launch llava/train/train_mem.py \
    --deepspeed "$REPO_ROOT/scripts/zero2.json" \
    --model_name_or_path "$MODEL_BASE" \
    --version plain \
    --data_path "$DATA_PATH" \
    --image_folder "$IMAGE_FOLDER" \
    --vision_tower "$VISION_TOWER" \
    --mm_projector_type mlp2x_gelu \
    --tune_mm_mlp_adapter True \
    --mm_vision_select_layer -2 \
    --mm_use_im_start_end False \
    --mm_use_im_patch_token False \
    --bf16 True \
    --output_dir "$OUTPUT_DIR" \
    --num_train_epochs 1 \
    --per_device_train_batch_size "$PER_DEVICE_BATCH" \
    --per_device_eval_batch_size 4 \
    --gradient_accumulation_steps "$GRAD_ACCUM" \
    --eval_strategy no \
    --save_strategy steps \
    --save_steps 24000 \
    --save_total_limit 1 \
    --learning_rate 1e-3 \
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
