#!/usr/bin/env bash
# Shared by the LLaVA-1.5 training scripts: the launcher, the number of processes and the gradient
# accumulation that keeps the published global batch size on any number of GPUs and nodes.
#
#   GLOBAL_BATCH, PER_DEVICE_BATCH   set by the calling script (the published recipe)
#   HOSTFILE                         a DeepSpeed hostfile ("host slots=N" per line) for several nodes
#                                    reached over ssh; the world size is the sum of its slots
#   NNODES, NODE_RANK, MASTER_ADDR   one node at a time, without ssh between nodes (SLURM: run the script
#                                    once per node with NODE_RANK=$SLURM_NODEID, NNODES=$SLURM_NNODES and
#                                    MASTER_ADDR = node 0's address); each node runs NUM_GPUS processes
#   NUM_GPUS                         GPUs per node; default: the ids in CUDA_VISIBLE_DEVICES, else
#                                    `nvidia-smi -L`, else 1 process on the CPU
#   MASTER_PORT                      default 29500
#   REPORT_TO                        default: wandb when it is installed, else none
#   DRY_RUN=1                        print the launch command and the batch arithmetic, launch nothing

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

hostfile_slots() {  # the sum of a DeepSpeed hostfile's slots=N (DeepSpeed starts N ranks on that host)
    sed -e 's/#.*//' "$1" | grep -o 'slots=[0-9]*' | cut -d= -f2 | awk '{ n += $1 } END { print n + 0 }'
}

NUM_GPUS=${NUM_GPUS:-$(count_gpus)}
if [ -n "${NNODES:-}" ] || [ -n "${NODE_RANK:-}" ]; then
    : "${NNODES:?NNODES is required with NODE_RANK}" "${NODE_RANK:?NODE_RANK is required with NNODES}"
    : "${MASTER_ADDR:?MASTER_ADDR, the address of node 0, is required to launch one node at a time}"
    if (( NODE_RANK < 0 || NODE_RANK >= NNODES )); then
        echo "error: NODE_RANK=$NODE_RANK is outside 0..$((NNODES - 1)) (NNODES=$NNODES)." >&2
        exit 2
    fi
    # The launcher reads every node's slots from a hostfile; with --no_ssh it starts only this node's.
    NODES_FILE=$(mktemp)
    for ((i = 0; i < NNODES; i++)); do echo "node$i slots=$NUM_GPUS"; done > "$NODES_FILE"
    WORLD=$((NUM_GPUS * NNODES))
    LAUNCH_ARGS=(--hostfile "$NODES_FILE" --no_ssh --node_rank "$NODE_RANK" --master_addr "$MASTER_ADDR")
elif [ -n "${HOSTFILE:-}" ]; then
    WORLD=$(hostfile_slots "$HOSTFILE")
    if (( WORLD < 1 )); then
        echo "error: $HOSTFILE lists no 'host slots=N' line." >&2
        exit 2
    fi
    LAUNCH_ARGS=(--hostfile "$HOSTFILE")
else
    WORLD=$NUM_GPUS
    LAUNCH_ARGS=(--num_gpus "$NUM_GPUS")
fi
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
    local command=("$PYTHON" -m deepspeed.launcher.runner "${LAUNCH_ARGS[@]}" --master_port "${MASTER_PORT:-29500}"
                   "$REPO_ROOT/$1" "${@:2}")
    if [ -n "${DRY_RUN:-}" ]; then
        printf '%q ' "${command[@]}" >&2
        echo >&2
        return 0
    fi
    "${command[@]}"
}
