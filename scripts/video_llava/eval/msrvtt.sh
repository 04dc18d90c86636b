#!/usr/bin/env bash
# MSRVTT-QA (PruMerge Table 3, column "MSRVTT-QA"; Video-LLaVA-7B: 59.2 / 3.5): Video-LLaVA answers, the
# gpt-3.5-turbo judge scores (accuracy % / average score 0-5, Video-ChatGPT protocol).
# Data (Video-LLaVA's eval/GPT_Zero_Shot_QA layout, under $EVAL_DIR/GPT_Zero_Shot_QA):
#   MSRVTT_Zero_Shot_QA/test_q.json, test_a.json   ~72,821 questions and their answers (paired by position)
#   MSRVTT_Zero_Shot_QA/videos/all/NAME.{mp4,avi,mov,mkv}
# Writes MSRVTT_Zero_Shot_QA/<NAME>/{CHUNKS_IDX.jsonl,merge.jsonl,merge.scores.json,judge_<model>/}.
# Time: not measured here (73k generations for 7B: many GPU-hours; spread them with CHUNKS).
#
# Usage: bash scripts/video_llava/eval/msrvtt.sh CKPT "" [REDUCTION]   (env vars: _common.sh here and in v1_5)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"
video_qa msrvtt MSRVTT_Zero_Shot_QA videos/all
