#!/usr/bin/env bash
# ScienceQA-IMG (PruMerge Table 1, column "SQA-IMG"): accuracy on the 2,017 test items with an image.
# Data (upstream playground/data/eval/ layout):
#   scienceqa/llava_test_CQM-A.json      4,241 test items, LLaVA conversation form (eval.zip)
#   scienceqa/pid_splits.json, problems.json   from the ScienceQA repo (data/scienceqa/)
#   scienceqa/images/test/               ScienceQA test images
# Writes scienceqa/answers/<NAME>.jsonl, <NAME>_output.jsonl, <NAME>_result.json, <NAME>.scores.json.
# Time: not measured here (answers are short; expect minutes to tens of minutes for 7B on one GPU).
#
# Usage: bash scripts/v1_5/eval/sqa.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

DIR="$EVAL_DIR/scienceqa"
QUESTIONS=$(limit_questions "$DIR/llava_test_CQM-A.json" "$DIR/answers")
run_sharded llava.eval.model_vqa_science "$QUESTIONS" "$DIR/answers/$NAME" "$DIR/answers/$NAME.jsonl" \
    --image-folder "$DIR/images/test" --single-pred-prompt

# Scored against the whole test split: with MAX_QUESTIONS the unanswered items count as wrong.
"$PYTHON" -m llava.eval.eval_science_qa \
    --base-dir "$DIR" \
    --question-file "$DIR/llava_test_CQM-A.json" \
    --result-file "$DIR/answers/$NAME.jsonl" \
    --output-file "$DIR/answers/${NAME}_output.jsonl" \
    --output-result "$DIR/answers/${NAME}_result.json"
