#!/usr/bin/env bash
# POPE (PruMerge Table 1, column "POPE"; LLaVA-1.5 MODEL_ZOO "POPE"): mean F1 x100 over the
# adversarial / popular / random splits.
# Data (upstream playground/data/eval/ layout, from eval.zip plus POPE and COCO):
#   pope/llava_pope_test.jsonl            8,910 questions (eval.zip)
#   pope/coco/coco_pope_{adversarial,popular,random}.json   labels, POPE repo commit e3e39262
#   pope/val2014/                         COCO val2014 images
# Writes pope/answers/<NAME>.jsonl (chunks under pope/answers/<NAME>/) and <NAME>.scores.json.
# Time: not measured here (expect on the order of tens of minutes for 7B on one A100-class GPU).
#
# Usage: bash scripts/v1_5/eval/pope.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

DIR="$EVAL_DIR/pope"
QUESTIONS=$(limit_questions "$DIR/llava_pope_test.jsonl" "$DIR/answers")
run_sharded llava.eval.model_vqa_loader "$QUESTIONS" "$DIR/answers/$NAME" "$DIR/answers/$NAME.jsonl" \
    --image-folder "$DIR/val2014"

"$PYTHON" -m llava.eval.eval_pope \
    --annotation-dir "$DIR/coco" \
    --question-file "$QUESTIONS" \
    --result-file "$DIR/answers/$NAME.jsonl"
