#!/usr/bin/env bash
# MME (PruMerge Table 1, column "MME"): the Perception total (max 2000); Cognition is reported too.
# Data (upstream playground/data/eval/ layout):
#   MME/llava_mme.jsonl                   2,374 questions, 14 subtasks (eval.zip)
#   MME/MME_Benchmark_release_version/    images and ground truth (MME release, on request from its authors)
# Writes MME/answers/<NAME>.jsonl, MME/eval_tool/answers/<NAME>/<category>.txt (the input of MME's own
# calculation.py) and MME/answers/<NAME>.scores.json (scored here with the same rules).
# Time: not measured here.
#
# Usage: bash scripts/v1_5/eval/mme.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

DIR="$EVAL_DIR/MME"
QUESTIONS=$(limit_questions "$DIR/llava_mme.jsonl" "$DIR/answers")
run_sharded llava.eval.model_vqa_loader "$QUESTIONS" "$DIR/answers/$NAME" "$DIR/answers/$NAME.jsonl" \
    --image-folder "$DIR/MME_Benchmark_release_version"

"$PYTHON" -m llava.eval.eval_mme \
    --mme-dir "$DIR/MME_Benchmark_release_version" \
    --result-file "$DIR/answers/$NAME.jsonl" \
    --output-dir "$DIR/eval_tool/answers/$NAME"
