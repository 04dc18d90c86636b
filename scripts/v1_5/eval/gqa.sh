#!/usr/bin/env bash
# GQA testdev-balanced (LLaVA-1.5 MODEL_ZOO "GQA": 62.0 for 7B, 63.3 for 13B; not a PruMerge Table 1
# column): GQA's official accuracy, scored locally as GQA's eval.py does (see llava/eval/eval_gqa.py).
# Sharded over the GPUs in CUDA_VISIBLE_DEVICES like upstream's gqa.sh.
# Data (upstream playground/data/eval/ layout):
#   gqa/llava_gqa_testdev_balanced.jsonl        12,578 questions, suffix already in "text" (eval.zip)
#   gqa/data/testdev_balanced_questions.json    GQA's questions with answers (GQA v1.2 questions)
#   gqa/data/images/                            GQA images
# Writes gqa/answers/llava_gqa_testdev_balanced/<NAME>/{CHUNKS_IDX.jsonl,merge.jsonl,merge.scores.json}
# and testdev_balanced_predictions.json there (upstream's converted file; GQA's eval.py reads it with
# --predictions).
# Time: not measured here for a 7B/13B checkpoint; only run end to end on the tiny random checkpoint
# on CPU (tests/eval/test_eval_scripts.py, 6 questions, well under a minute).
#
# Usage: bash scripts/v1_5/eval/gqa.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

SPLIT=llava_gqa_testdev_balanced
DIR="$EVAL_DIR/gqa"
OUT="$DIR/answers/$SPLIT/$NAME"
QUESTIONS=$(limit_questions "$DIR/$SPLIT.jsonl" "$OUT")
run_sharded llava.eval.model_vqa_loader "$QUESTIONS" "$OUT" "$OUT/merge.jsonl" \
    --image-folder "$DIR/data/images"

"$PYTHON" -m llava.eval.eval_gqa \
    --question-file "$DIR/data/testdev_balanced_questions.json" \
    --result-file "$OUT/merge.jsonl" \
    --predictions-file "$OUT/testdev_balanced_predictions.json"
