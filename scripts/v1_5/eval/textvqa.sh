#!/usr/bin/env bash
# TextVQA val (PruMerge Table 1, column "TextVQA"): VQA soft accuracy, prompts with OCR tokens.
# Data (upstream playground/data/eval/ layout):
#   textvqa/llava_textvqa_val_v051_ocr.jsonl   5,000 questions with "Reference OCR token:" (eval.zip)
#   textvqa/TextVQA_0.5.1_val.json             val annotations (textvqa.org)
#   textvqa/train_images/                      TextVQA train/val images
# Writes textvqa/answers/<NAME>.jsonl and <NAME>.scores.json.
# Time: not measured here.
#
# Usage: bash scripts/v1_5/eval/textvqa.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

DIR="$EVAL_DIR/textvqa"
QUESTIONS=$(limit_questions "$DIR/llava_textvqa_val_v051_ocr.jsonl" "$DIR/answers")
run_sharded llava.eval.model_vqa_loader "$QUESTIONS" "$DIR/answers/$NAME" "$DIR/answers/$NAME.jsonl" \
    --image-folder "$DIR/train_images"

"$PYTHON" -m llava.eval.eval_textvqa \
    --annotation-file "$DIR/TextVQA_0.5.1_val.json" \
    --result-file "$DIR/answers/$NAME.jsonl"
