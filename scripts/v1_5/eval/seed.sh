#!/usr/bin/env bash
# SEED-Bench, image part (LLaVA-1.5 MODEL_ZOO "SEED": 58.6 for 7B, 61.6 for 13B; not a PruMerge Table 1
# column): accuracy over the image questions (dimensions 1-9), scored as upstream's
# convert_seed_for_submission.py (see llava/eval/eval_seed.py). Sharded over the GPUs in
# CUDA_VISIBLE_DEVICES like upstream's seed.sh. Unlike upstream, only the image questions are answered
# (upstream also answers the video questions' middle frames, which its image accuracy does not use).
# Data (upstream playground/data/eval/ layout):
#   seed_bench/llava-seed-bench.jsonl   questions with options and the option-letter suffix in "text"
#   seed_bench/SEED-Bench.json          SEED-Bench's annotation (answers, data_type, question_type_id)
#   seed_bench/SEED-Bench-image/        SEED-Bench images (the "image" fields are relative to seed_bench/)
# Writes seed_bench/answers/<NAME>/{CHUNKS_IDX.jsonl,merge.jsonl,merge.scores.json} and the leaderboard
# file seed_bench/answers_upload/<NAME>.jsonl.
# Time: not measured here for a 7B/13B checkpoint; only run end to end on the tiny random checkpoint
# on CPU (tests/eval/test_eval_scripts.py, 6 questions, well under a minute).
#
# Usage: bash scripts/v1_5/eval/seed.sh CKPT [BASE] [REDUCTION]   (see _common.sh for the env vars)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"

DIR="$EVAL_DIR/seed_bench"
OUT="$DIR/answers/$NAME"
ANNOTATION="$DIR/SEED-Bench.json"
for file in "$DIR/llava-seed-bench.jsonl" "$ANNOTATION"; do
    if [[ ! -f "$file" ]]; then
        echo "file not found: $file (see docs/Evaluation.md for where it comes from)" >&2
        exit 1
    fi
done
mkdir -p "$OUT"
"$PYTHON" -m llava.eval.eval_seed --annotation-file "$ANNOTATION" \
    --select-image-questions "$DIR/llava-seed-bench.jsonl" "$OUT/llava-seed-bench-image.jsonl" >&2
QUESTIONS=$(limit_questions "$OUT/llava-seed-bench-image.jsonl" "$OUT")
run_sharded llava.eval.model_vqa_loader "$QUESTIONS" "$OUT" "$OUT/merge.jsonl" \
    --image-folder "$DIR"

"$PYTHON" -m llava.eval.eval_seed \
    --annotation-file "$ANNOTATION" \
    --result-file "$OUT/merge.jsonl" \
    --upload-file "$DIR/answers_upload/$NAME.jsonl"
