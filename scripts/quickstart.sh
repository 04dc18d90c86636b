#!/usr/bin/env bash
# The quickstart on a CPU: synthetic shapes data, a small vision tower, projector pretraining and LoRA
# finetuning with PruMerge+ (through scripts/v1_5/pretrain.sh and finetune_lora_prumerge_plus.sh), then
# the benchmark runners and scorers for none / prumerge / prumerge_plus / sequential / spatial.
#   bash scripts/quickstart.sh [--output-dir DIR] [--preset full|reduced]
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
exec "${PYTHON:-python}" -m llava.quickstart "$@"
