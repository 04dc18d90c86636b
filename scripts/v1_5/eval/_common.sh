# Shared helpers of the scripts/v1_5/eval/<benchmark>.sh scripts; sourced, not run.
#
# Inputs (positional arguments win over the environment):
#   $1 / MODEL_PATH       checkpoint folder or Hub id (required)
#   $2 / MODEL_BASE       base LLM for LoRA / projector-only checkpoints ("" = none)
#   $3 / TOKEN_REDUCTION  e.g. none, prumerge ("" = whatever the checkpoint recorded)
#   REDUCTION_VARIANT     optional --reduction-variant (reference | paper)
#   BATCH_SIZE            questions per forward (default 1, as the paper)
#   DTYPE                 optional --dtype: auto (the runners' default: float16 on CUDA, float32 on CPU),
#                         float16, bfloat16 or float32; when set, the results go under NAME-DTYPE
#   EVAL_DIR              upstream's playground/data/eval layout (default ./playground/data/eval)
#   MAX_QUESTIONS         answer only the first N questions (smoke tests); results go under NAME-firstN
#   CHUNKS                number of shards; default = number of ids in CUDA_VISIBLE_DEVICES, else 1
#   PYTHON                interpreter (default python)
#   EXTRA_ARGS            more runner flags, word-split (e.g. "--max_new_tokens 4 --device cpu"); when set,
#                         the name gets -x<checksum of EXTRA_ARGS>
#   RUN_NAME              the experiment name to use instead of the one built from the settings
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)

# Sets: MODEL_PATH MODEL_BASE NAME EVAL_DIR BATCH_SIZE CHUNKS GPULIST PYTHON.

eval_setup() {
    MODEL_PATH=${1:-${MODEL_PATH:-}}
    MODEL_BASE=${2:-${MODEL_BASE:-}}
    TOKEN_REDUCTION=${3:-${TOKEN_REDUCTION:-}}
    REDUCTION_VARIANT=${REDUCTION_VARIANT:-}
    DTYPE=${DTYPE:-}
    if [[ -z "$MODEL_PATH" ]]; then
        echo "usage: bash $0 CKPT [BASE] [REDUCTION]   (or MODEL_PATH=... MODEL_BASE=... TOKEN_REDUCTION=...)" >&2
        exit 2
    fi
    BATCH_SIZE=${BATCH_SIZE:-1}
    EVAL_DIR=${EVAL_DIR:-./playground/data/eval}
    PYTHON=${PYTHON:-python}
    MAX_QUESTIONS=${MAX_QUESTIONS:-}
    if [[ -n "$MAX_QUESTIONS" && ! "$MAX_QUESTIONS" =~ ^[1-9][0-9]*$ ]]; then
        echo "MAX_QUESTIONS must be a positive integer, got '$MAX_QUESTIONS'" >&2
        exit 2
    fi

    case "$DTYPE" in
        "" | auto | float16 | bfloat16 | float32) ;;
        *)
            echo "DTYPE must be auto, float16, bfloat16 or float32, got '$DTYPE'" >&2
            exit 2
            ;;
    esac

    # Experiment name: checkpoint folder name (with its run folder for a checkpoint-N), plus the reduction
    # and dtype when forced, and a checksum of EXTRA_ARGS when given, so that other settings never share
    # an answers file. (The runners also record the settings beside each answers file and refuse to
    # resume one made with others.) RUN_NAME replaces the whole name.
    local trimmed=${MODEL_PATH%/}
    NAME=${trimmed##*/}
    if [[ "$NAME" =~ ^checkpoint-[0-9]+$ && "$trimmed" == */* ]]; then
        local run=${trimmed%/*}
        NAME="${run##*/}-$NAME"
    fi
    [[ -n "$TOKEN_REDUCTION" ]] && NAME="$NAME-$TOKEN_REDUCTION"
    [[ -n "$REDUCTION_VARIANT" ]] && NAME="$NAME-$REDUCTION_VARIANT"
    [[ -n "$DTYPE" ]] && NAME="$NAME-$DTYPE"
    [[ -n "${EXTRA_ARGS:-}" ]] && NAME="$NAME-x$(printf '%s' "$EXTRA_ARGS" | cksum | cut -d' ' -f1)"
    [[ -n "$MAX_QUESTIONS" ]] && NAME="$NAME-first$MAX_QUESTIONS"
    NAME=${RUN_NAME:-$NAME}

    MODEL_ARGS=(--model-path "$MODEL_PATH")
    [[ -n "$MODEL_BASE" ]] && MODEL_ARGS+=(--model-base "$MODEL_BASE")
    [[ -n "$TOKEN_REDUCTION" ]] && MODEL_ARGS+=(--token-reduction "$TOKEN_REDUCTION")
    [[ -n "$REDUCTION_VARIANT" ]] && MODEL_ARGS+=(--reduction-variant "$REDUCTION_VARIANT")
    [[ -n "$DTYPE" ]] && MODEL_ARGS+=(--dtype "$DTYPE")
    EXTRA=()
    [[ -n "${EXTRA_ARGS:-}" ]] && read -r -a EXTRA <<< "$EXTRA_ARGS"

    # One shard per GPU id; on a machine without GPUs, CHUNKS CPU processes (default 1).
    GPULIST=()
    [[ -n "${CUDA_VISIBLE_DEVICES:-}" ]] && IFS=',' read -r -a GPULIST <<< "$CUDA_VISIBLE_DEVICES"
    if ((${#GPULIST[@]})); then
        CHUNKS=${CHUNKS:-${#GPULIST[@]}}
    else
        CHUNKS=${CHUNKS:-1}
    fi
    if [[ ! "$CHUNKS" =~ ^[1-9][0-9]*$ ]]; then
        echo "CHUNKS must be a positive integer, got '$CHUNKS'" >&2
        exit 2
    fi
    echo "[eval] $NAME: model $MODEL_PATH${MODEL_BASE:+ (base $MODEL_BASE)}, $CHUNKS chunk(s), batch $BATCH_SIZE, dtype ${DTYPE:-auto}, data $EVAL_DIR" >&2
}

# limit_questions FILE OUT_DIR -> prints the question file to use: FILE itself, or (MAX_QUESTIONS set)
# a copy of its first MAX_QUESTIONS questions written into OUT_DIR (.jsonl, .json list or .tsv).
limit_questions() {
    local file=$1 out_dir=$2
    if [[ ! -f "$file" ]]; then
        echo "question file not found: $file (see docs/Evaluation.md for where it comes from)" >&2
        return 1
    fi
    if [[ -z "$MAX_QUESTIONS" ]]; then
        printf '%s\n' "$file"
        return 0
    fi
    mkdir -p "$out_dir"
    local base=${file##*/}
    local out="$out_dir/${base%.*}.first$MAX_QUESTIONS.${base##*.}"
    "$PYTHON" - "$file" "$out" "$MAX_QUESTIONS" <<'PY'
import json, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
if src.endswith(".json"):
    with open(src, encoding="utf-8") as f:
        items = json.load(f)[:n]
    with open(dst, "w", encoding="utf-8") as f:
        json.dump(items, f)
elif src.endswith(".tsv"):
    import pandas as pd
    pd.read_table(src).head(n).to_csv(dst, sep="\t", index=False)
else:
    kept = []
    with open(src, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                kept.append(line if line.endswith("\n") else line + "\n")
                if len(kept) == n:
                    break
    with open(dst, "w", encoding="utf-8") as f:
        f.writelines(kept)
PY
    printf '%s\n' "$out"
}

# run_sharded MODULE QUESTIONS CHUNK_DIR MERGED [runner flags...]
# The image runners' run_chunks: greedy, vicuna_v1, BATCH_SIZE, on the question file QUESTIONS.
run_sharded() {
    local module=$1 questions=$2 chunk_dir=$3 merged=$4
    shift 4
    run_chunks "$module" "$chunk_dir" "$merged" --question-file "$questions" \
        --temperature 0 --conv-mode vicuna_v1 --batch-size "$BATCH_SIZE" "$@"
}

# run_chunks MODULE CHUNK_DIR MERGED [runner flags...]
# Runs CHUNKS background processes of `python -m MODULE` (chunk i on GPU GPULIST[i]; answers
# CHUNK_DIR/${CHUNKS}_${i}.jsonl, resumed by the runner when present), waits for all, fails if any
# failed, then concatenates the chunk files in index order into MERGED.
run_chunks() {
    local module=$1 chunk_dir=$2 merged=$3
    shift 3
    mkdir -p "$chunk_dir" "$(dirname "$merged")"
    local -a pids=()
    local idx gpu
    for ((idx = 0; idx < CHUNKS; idx++)); do
        gpu=""
        ((${#GPULIST[@]})) && gpu=${GPULIST[idx % ${#GPULIST[@]}]}
        CUDA_VISIBLE_DEVICES=$gpu "$PYTHON" -m "$module" "${MODEL_ARGS[@]}" \
            --answers-file "$chunk_dir/${CHUNKS}_${idx}.jsonl" \
            --num-chunks "$CHUNKS" --chunk-idx "$idx" \
            "$@" "${EXTRA[@]}" &
        pids+=($!)
    done
    local failed=()
    for idx in "${!pids[@]}"; do
        wait "${pids[idx]}" || failed+=("$idx")
    done
    if ((${#failed[@]})); then
        echo "[eval] chunk(s) ${failed[*]} of $CHUNKS failed; finished chunks are kept and resumed on the next run" >&2
        exit 1
    fi
    local tmp="$merged.tmp.$$"
    : > "$tmp"
    for ((idx = 0; idx < CHUNKS; idx++)); do
        # A chunk with no questions (fewer questions than chunks) may leave no file.
        if [[ -f "$chunk_dir/${CHUNKS}_${idx}.jsonl" ]]; then
            cat "$chunk_dir/${CHUNKS}_${idx}.jsonl" >> "$tmp"
        fi
    done
    mv "$tmp" "$merged"
    echo "[eval] merged $(wc -l < "$merged") answers into $merged" >&2
}
