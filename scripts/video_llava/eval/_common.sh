# Shared by scripts/video_llava/eval/{msvd,msrvtt,activitynet}.sh; sourced, not run.
#
# Inputs: those of scripts/v1_5/eval/_common.sh (CKPT [BASE] [REDUCTION] or MODEL_PATH / TOKEN_REDUCTION,
# BATCH_SIZE, DTYPE, EVAL_DIR, MAX_QUESTIONS, CHUNKS, PYTHON, EXTRA_ARGS, RUN_NAME), plus:
#   VIDEO_TOWER           LanguageBind_Video_merge folder or Hub id, for an 'original' Video-LLaVA-7B folder
#   VIDEO_REDUCTION_FORM  fixed | adaptive (default: the checkpoint's, fixed); named in the run when set
#   IQR_SCOPE             frame | video (the adaptive form's IQR fence); named in the run when set
#   QA_ROOT               Video-LLaVA's GPT_Zero_Shot_QA folder (default $EVAL_DIR/GPT_Zero_Shot_QA)
#   JUDGE_BASE_URL        OpenAI-compatible endpoint (default https://api.openai.com/v1; key in OPENAI_API_KEY)
#   JUDGE_MODEL           the judge model (default gpt-3.5-turbo, as the paper)
#   JUDGE_ARGS            more judge flags, word-split (e.g. "--workers 16 --retries 20")
#   SKIP_JUDGE            1: stop once merge.jsonl is written
source "$(dirname "${BASH_SOURCE[0]}")/../../v1_5/eval/_common.sh"

# video_qa DATASET QA_FOLDER VIDEO_FOLDER
# Answers $QA_ROOT/QA_FOLDER/test_q.json (paired with test_a.json by position) on the videos of
# $QA_ROOT/QA_FOLDER/VIDEO_FOLDER in CHUNKS shards, merges them into $QA_ROOT/QA_FOLDER/$NAME/merge.jsonl
# (upstream's layout), judges it into judge_<model>/ and writes merge.scores.json.
video_qa() {
    local dataset=$1 dir="${QA_ROOT:-$EVAL_DIR/GPT_Zero_Shot_QA}/$2"
    local videos="$dir/$3"
    local judge_model=${JUDGE_MODEL:-gpt-3.5-turbo}
    if [[ -n "${VIDEO_REDUCTION_FORM:-}" ]]; then
        MODEL_ARGS+=(--video-reduction-form "$VIDEO_REDUCTION_FORM")
        [[ -z "${RUN_NAME:-}" ]] && NAME="$NAME-$VIDEO_REDUCTION_FORM"
    fi
    if [[ -n "${IQR_SCOPE:-}" ]]; then
        MODEL_ARGS+=(--iqr-scope "$IQR_SCOPE")
        [[ -z "${RUN_NAME:-}" ]] && NAME="$NAME-iqr$IQR_SCOPE"
    fi
    [[ -n "${VIDEO_TOWER:-}" ]] && MODEL_ARGS+=(--video-tower "$VIDEO_TOWER")
    local -a limit=()
    [[ -n "$MAX_QUESTIONS" ]] && limit=(--max-questions "$MAX_QUESTIONS")
    for file in "$dir/test_q.json" "$dir/test_a.json"; do
        if [[ ! -f "$file" ]]; then
            echo "not found: $file (see docs/VideoQA.md for Video-LLaVA's GPT_Zero_Shot_QA layout)" >&2
            exit 1
        fi
    done
    echo "[eval] $NAME: $dataset answers under $dir/$NAME" >&2

    local out="$dir/$NAME"
    run_chunks llava.eval.model_video_qa "$out" "$out/merge.jsonl" \
        --dataset "$dataset" --video-dir "$videos" \
        --gt-file-question "$dir/test_q.json" --gt-file-answers "$dir/test_a.json" \
        --temperature 0 --batch-size "$BATCH_SIZE" "${limit[@]}"

    if [[ "${SKIP_JUDGE:-}" == 1 ]]; then
        return 0
    fi
    local -a judge_extra=()
    [[ -n "${JUDGE_ARGS:-}" ]] && read -r -a judge_extra <<< "$JUDGE_ARGS"
    "$PYTHON" -m llava.eval.video_qa_judge --dataset "$dataset" \
        --pred-file "$out/merge.jsonl" \
        --output-dir "$out/judge_${judge_model//\//_}" \
        --base-url "${JUDGE_BASE_URL:-https://api.openai.com/v1}" --model "$judge_model" \
        "${judge_extra[@]}"
}
