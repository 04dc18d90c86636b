#!/usr/bin/env bash
# MMBench dev 20230712 (PruMerge Table 1, column "MMB"): scored by the OpenCompass server
# (CircularEval); this script makes the upload sheet, there is no local metric.
# Data (upstream playground/data/eval/ layout):
#   mmbench/mmbench_dev_20230712.tsv      questions with base64 images (MMBench / OpenCompass)
# Writes mmbench/answers/mmbench_dev_20230712/<NAME>.jsonl, a <NAME>.scores.json stub (fill in
# "server_score" once the server answers) and mmbench/answers_upload/mmbench_dev_20230712/<NAME>.xlsx.
# Time: not measured here.
#
# Usage: bash scripts/v1_5/eval/mmbench.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

SPLIT=mmbench_dev_20230712
DIR="$EVAL_DIR/mmbench"
ANSWERS="$DIR/answers/$SPLIT"
QUESTIONS=$(limit_questions "$DIR/$SPLIT.tsv" "$ANSWERS")
run_sharded llava.eval.model_vqa_mmbench "$QUESTIONS" "$ANSWERS/$NAME" "$ANSWERS/$NAME.jsonl" \
    --single-pred-prompt

"$PYTHON" "$REPO_ROOT"/scripts/convert_mmbench_for_submission.py \
    --annotation-file "$QUESTIONS" \
    --result-dir "$ANSWERS" \
    --upload-dir "$DIR/answers_upload/$SPLIT" \
    --experiment "$NAME"
# The score stub (<NAME>.scores.json, "server_score": null) that llava.eval.report reads.
"$PYTHON" -m llava.eval.eval_mmbench \
    --result-file "$ANSWERS/$NAME.jsonl" \
    --upload-file "$DIR/answers_upload/$SPLIT/$NAME.xlsx"
