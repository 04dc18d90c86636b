#!/usr/bin/env bash
# VQAv2 test-dev (PruMerge Table 1, column "VQAv2"): scored by the EvalAI server (challenge 830);
# this script makes the upload JSON, there is no local metric.
# Data (upstream playground/data/eval/ layout):
#   vqav2/llava_vqav2_mscoco_test-dev2015.jsonl   test-dev questions (eval.zip)
#   vqav2/llava_vqav2_mscoco_test2015.jsonl       full test questions, for the upload file (eval.zip)
#   vqav2/test2015/                               COCO test2015 images
# Writes vqav2/answers/llava_vqav2_mscoco_test-dev2015/<NAME>/{CHUNKS_IDX.jsonl,merge.jsonl},
# a merge.scores.json stub (fill in "server_score") and vqav2/answers_upload/<split>/<NAME>.json.
# Time: not measured here (107k questions: hours even on 8 GPUs for 7B).
#
# Usage: bash scripts/v1_5/eval/vqav2.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

SPLIT=llava_vqav2_mscoco_test-dev2015
DIR="$EVAL_DIR/vqav2"
OUT="$DIR/answers/$SPLIT/$NAME"
QUESTIONS=$(limit_questions "$DIR/$SPLIT.jsonl" "$OUT")
run_sharded llava.eval.model_vqa_loader "$QUESTIONS" "$OUT" "$OUT/merge.jsonl" \
    --image-folder "$DIR/test2015"

"$PYTHON" "$REPO_ROOT"/scripts/convert_vqav2_for_submission.py --dir "$DIR" --split "$SPLIT" --ckpt "$NAME"
# The score stub (merge.scores.json, "server_score": null) that llava.eval.report reads.
"$PYTHON" -m llava.eval.eval_vqav2 \
    --result-file "$OUT/merge.jsonl" \
    --upload-file "$DIR/answers_upload/$SPLIT/$NAME.json"
