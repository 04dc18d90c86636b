#!/usr/bin/env bash
# Shared by the LLaVA-1.5 training scripts: the launcher, the number of processes and the gradient
# accumulation that keeps the published global batch size on any number of GPUs and nodes.
#
#   GLOBAL_BATCH, PER_DEVICE_BATCH   set by the calling script (the published recipe)
#   HOSTFILE                         a DeepSpeed hostfile ("host slots=N" per line) for several nodes
#   NUM_GPUS                         GPUs per node; default: the ids in CUDA_VISIBLE_DEVICES, else
#                                    `nvidia-smi -L`, else 1 process on the CPU
#   MASTER_PORT                      default 29500
#   REPORT_TO                        default: wandb when it is installed, else none

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
PYTHON=${PYTHON:-python}

count_gpus() {
    if [ -n "${CUDA_VISIBLE_DEVICES:-}" ]; then
        echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | grep -c .
    elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        nvidia-smi -L | grep -c "^GPU"
    else
        echo 1
    fi
}

NUM_GPUS=${NUM_GPUS:-$(count_gpus)}
if [ -n "${HOSTFILE:-}" ]; then
    NUM_NODES=$(grep -v '^\s*#' "$HOSTFILE" | grep -c 'slots=')
    LAUNCH_ARGS=(--hostfile "$HOSTFILE")
else
    NUM_NODES=1
    LAUNCH_ARGS=(--num_gpus "$NUM_GPUS")
fi
WORLD=$((NUM_GPUS * NUM_NODES))
if (( GLOBAL_BATCH % (PER_DEVICE_BATCH * WORLD) != 0 )); then
    echo "error: global batch $GLOBAL_BATCH is not a multiple of $PER_DEVICE_BATCH per device x $WORLD processes;" \
         "set PER_DEVICE_BATCH to a divisor." >&2
    exit 2
fi
GRAD_ACCUM=$((GLOBAL_BATCH / (PER_DEVICE_BATCH * WORLD)))
if [ -z "${REPORT_TO:-}" ]; then
    if "$PYTHON" -c "import wandb" >/dev/null 2>&1; then REPORT_TO=wandb; else REPORT_TO=none; fi
fi
echo "[llava] $WORLD process(es) x $PER_DEVICE_BATCH per device x $GRAD_ACCUM accumulation = global batch $GLOBAL_BATCH" >&2

launch() {  # launch ENTRY_POINT ARGS...
    "$PYTHON" -m deepspeed.launcher.runner "${LAUNCH_ARGS[@]}" --master_port "${MASTER_PORT:-29500}" \
        "$REPO_ROOT/$1" "${@:2}"
}
