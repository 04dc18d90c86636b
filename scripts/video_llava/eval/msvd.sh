#!/usr/bin/env bash
# MSVD-QA (PruMerge Table 3, column "MSVD-QA"; Video-LLaVA-7B: 70.7 / 3.9): Video-LLaVA answers, the
# gpt-3.5-turbo judge scores (accuracy % / average score 0-5, Video-ChatGPT protocol).
# Data (Video-LLaVA's eval/GPT_Zero_Shot_QA layout, under $EVAL_DIR/GPT_Zero_Shot_QA):
#   MSVD_Zero_Shot_QA/test_q.json, test_a.json   13,157 questions and their answers (paired by position)
#   MSVD_Zero_Shot_QA/videos/NAME.{mp4,avi,mov,mkv}
# Writes MSVD_Zero_Shot_QA/<NAME>/{CHUNKS_IDX.jsonl,merge.jsonl,merge.scores.json,judge_<model>/}.
# Time: not measured here (13k generations of up to 1024 tokens with 2056 visual tokens each, for 7B:
# hours on one A100-class GPU; the judge: one request per question).
#
# Usage: bash scripts/video_llava/eval/msvd.sh CKPT "" [REDUCTION]   (env vars: _common.sh here and in v1_5)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"
video_qa msvd MSVD_Zero_Shot_QA videos
