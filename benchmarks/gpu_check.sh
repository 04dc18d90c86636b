#!/usr/bin/env bash
# The project's GPU check (see benchmarks/gpu_check.py): fp16/bf16 inference with every reducer
# (batched = batch-1), FastV with SDPA, LoRA steps in bf16 with ZeRO-2 on one GPU, bench_e2e.py at 7B
# shapes (images and the 8-frame video case) and bench_atp.py at 7B shapes (ATP module overhead, prefill at
# equal N̄ against FastV and PruMerge). Estimated under 9 minutes on one H100/H200 (not yet run on a GPU);
# JSON under benchmarks/results/.
#
#   bash benchmarks/gpu_check.sh            # on a GPU machine
#   bash benchmarks/gpu_check.sh --smoke    # the same code on the CPU at tiny sizes (the test suite runs it)
#
# Afterwards, re-render the README's efficiency table: python benchmarks/render_efficiency.py
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec "${PYTHON:-python}" benchmarks/gpu_check.py "$@"
