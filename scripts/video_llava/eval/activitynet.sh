#!/usr/bin/env bash
# ActivityNet-QA (PruMerge Table 3, column "ActivityNet-QA"; Video-LLaVA-7B: 45.3 / 3.3): Video-LLaVA
# answers, the gpt-3.5-turbo judge scores (accuracy % / average score 0-5, Video-ChatGPT protocol).
# Data (Video-LLaVA's eval/GPT_Zero_Shot_QA layout, under $EVAL_DIR/GPT_Zero_Shot_QA):
#   Activitynet_Zero_Shot_QA/test_q.json, test_a.json   8,000 questions on 800 videos (paired by position)
#   Activitynet_Zero_Shot_QA/all_test/v_NAME.{mp4,avi,mov,mkv}   (the runner adds the v_ prefix)
# Writes Activitynet_Zero_Shot_QA/<NAME>/{CHUNKS_IDX.jsonl,merge.jsonl,merge.scores.json,judge_<model>/}.
# Time: not measured here (8k generations for 7B, minutes-long videos to decode: hours on one GPU).
#
# Usage: bash scripts/video_llava/eval/activitynet.sh CKPT "" [REDUCTION]   (env vars: _common.sh here and in v1_5)
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/_common.sh"
eval_setup "$@"
video_qa activitynet Activitynet_Zero_Shot_QA all_test
