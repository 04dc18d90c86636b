"""Answer zero-shot video-QA questions with Video-LLaVA (upstream's ``run_inference_video_qa.py``; PruMerge Table 3).

Used for MSVD-QA, MSRVTT-QA and ActivityNet-QA in Video-LLaVA's ``GPT_Zero_Shot_QA`` layout::

    python -m llava.eval.model_video_qa --model-path Video-LLaVA-7B --video-tower LanguageBind_Video_merge \\
        --video-dir MSVD_Zero_Shot_QA/videos --gt-file-question MSVD_Zero_Shot_QA/test_q.json \\
        --gt-file-answers MSVD_Zero_Shot_QA/test_a.json --answers-file OUT/8_0.jsonl \\
        [--dataset msvd] [--token-reduction prumerge] [--batch-size 4] [--num-chunks 8 --chunk-idx 0]

Upstream's underscore spellings (``--model_path``, ``--video_dir``, ``--gt_file_question``,
``--gt_file_answers``, ``--num_chunks``, ``--chunk_idx``, and ``--output_dir`` + ``--output_name`` for
the answers file ``OUTPUT_DIR/OUTPUT_NAME.json``) are accepted too.

Questions and answers. ``test_q.json`` is a JSON list of ``{"video_name", "question", "question_id"}`` and
``test_a.json`` a list of ``{"answer", ...}`` of the same length; question i is paired with answer i of the
**full** lists, before sharding (upstream indexes the answers from 0 in every shard, which misaligns every
shard after the first). Question ids must be unique (the judge stores items by id).

Videos. ``VIDEO_DIR/NAME.ext`` for the first of ``.mp4 .avi .mov .mkv`` that exists (upstream's lookup),
then ``NAME.npy`` or a folder ``NAME/`` of frames; ActivityNet (``--dataset activitynet``) names are
``v_NAME``. A missing video stops the run before the model is loaded, and an unreadable or empty one when it
is reached, naming the file and the question; with ``--skip-missing-videos`` (upstream skips missing ones
silently) each such question is logged and counted instead, and has no answer line.

Each answer line is upstream's ``{"id", "question", "answer", "pred"}`` plus ``num_visual_tokens`` (the
visual tokens spliced into the prompt: 2056 for 8 frames without reduction), ``kept_fraction`` (the kept
patch-derived tokens over the ``T x N`` patches, frame CLS tokens not counted) and ``video`` (the name
looked up); no value is JSON ``true``/``false``/``null``. Sharding, batching (left padding; greedy answers
equal batch-1 answers), resume and the recorded settings are :mod:`llava.eval.runner`'s. Errors print
``error: ...`` and exit with status 2. See docs/VideoQA.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from llava.dtypes import resolve_dtype
from llava.eval.io import read_json
from llava.eval.runner import (
    NOT_SETTINGS,
    Loaded,
    Question,
    add_model_args,
    add_run_args,
    check_args,
    generate_batch,
    model_source,
    open_for_append,
    plan_shard,
    prefetched,
    record_settings,
    require_fields,
    run_main,
)
from llava.model.token_reduction.args import reduction_changes
from llava.model.video_args import (
    add_video_input_args,
    add_video_model_args,
    check_video_args,
    video_load_kwargs,
)
from llava.prompting import generation_kwargs, video_prompt
from llava.video import VIDEO_EXTENSIONS, find_video, languagebind_video_transform, load_video

#: Video name prefix per dataset (ActivityNet's files are ``v_NAME.mp4``, as upstream's ``_act.py``).
DATASET_PREFIX = {"msvd": "", "msrvtt": "", "activitynet": "v_"}
#: Upstream's extensions in its order, then a ``.npy`` frame array (a folder ``NAME/`` is tried last).
LOOKUP_EXTENSIONS = (*VIDEO_EXTENSIONS, ".npy")
ID_FIELD = "id"
#: Options that say where things are, not what the answers are.
VIDEO_NOT_SETTINGS = NOT_SETTINGS | {
    "gt_file_question",
    "gt_file_answers",
    "video_dir",
    "output_dir",
    "output_name",
    "dataset",
    "max_questions",
    "skip_missing_videos",
}


# ---------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoFile:
    """A question's video: ``path`` when it was found in the video folder, else None.

    ``index`` (the question's position in the full list) seeds its flip draw, so that a flipped run does not
    depend on sharding or batching.
    """

    name: str
    video_dir: Path
    path: Path | None
    index: int = 0

    @classmethod
    def find(cls, video_dir: Path, name: str, index: int = 0) -> VideoFile:
        path = find_video(video_dir, name, LOOKUP_EXTENSIONS)
        if path is None and (video_dir / name).is_dir():
            path = video_dir / name
        return cls(name, video_dir, path, index)

    def exists(self) -> bool:
        return self.path is not None

    def load(self, num_frames: int, size: int, decoder: str, flip_prob: float, seed: int) -> torch.Tensor:
        """``[3, T, size, size]`` float32 (``languagebind_video_transform``); flips drawn from ``seed + index``."""
        if self.path is None:
            raise FileNotFoundError(f"Video not found: {self.describe()}")
        frames = load_video(self.path, num_frames=num_frames, decoder=decoder)
        generator = torch.Generator().manual_seed(seed + self.index) if flip_prob > 0 else None
        return languagebind_video_transform(frames, size=size, flip_prob=flip_prob, generator=generator)

    def describe(self) -> str:
        if self.path is not None:
            return str(self.path)
        tried = ", ".join(LOOKUP_EXTENSIONS)
        return f"{self.video_dir / self.name}{{{tried}}} or folder {self.video_dir / self.name}/"


def _question_id(value: Any, where: str) -> str | int:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"{where}: question_id must be a string or an integer, got {value!r}.")
    return value


def _json_list(path: str, what: str) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of {what}, got {type(data).__name__}.")
    return data


def load_questions(args: argparse.Namespace) -> list[Question]:
    """The questions of ``--gt-file-question``, each paired with the answer at its position in
    ``--gt-file-answers`` (the full lists, before any sharding), first ``--max-questions`` only when set.

    Raises:
        ValueError: not JSON lists, lists of different lengths, a missing field, a repeated question id.
    """
    questions = _json_list(args.gt_file_question, "questions")
    answers = _json_list(args.gt_file_answers, "answers")
    if len(questions) != len(answers):
        raise ValueError(
            f"{args.gt_file_question} has {len(questions)} questions but {args.gt_file_answers} has "
            f"{len(answers)} answers; they are paired by position, so they must be the same length."
        )
    limit = len(questions) if args.max_questions is None else args.max_questions
    folder, prefix = Path(args.video_dir).expanduser(), DATASET_PREFIX[args.dataset]
    out: list[Question] = []
    seen: dict[str | int, int] = {}
    for index, (row, gold) in enumerate(zip(questions[:limit], answers[:limit])):
        where = f"{args.gt_file_question} item {index}"
        require_fields(row, ("video_name", "question", "question_id"), where)
        require_fields(gold, ("answer",), f"{args.gt_file_answers} item {index}")
        qid = _question_id(row["question_id"], where)
        if qid in seen:
            raise ValueError(f"{where}: question_id {qid!r} repeats item {seen[qid]}; ids must be unique.")
        seen[qid] = index
        name = f"{prefix}{row['video_name']}"
        out.append(
            Question(
                question_id=qid,
                text=str(row["question"]),
                image=VideoFile.find(folder, name, index),
                head={ID_FIELD: qid, "question": str(row["question"]), "answer": str(gold["answer"])},
                tail={"video": name},
                where=where,
            )
        )
    return out


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def parser() -> argparse.ArgumentParser:
    """Upstream Video-LLaVA's options (both spellings), the runners' shared ones and the video options."""
    p = argparse.ArgumentParser(
        prog="python -m llava.eval.model_video_qa",
        description="Answer zero-shot video-QA questions (MSVD / MSRVTT / ActivityNet-QA) with Video-LLaVA.",
    )
    add_model_args(p)
    p.add_argument("--video-dir", "--video_dir", dest="video_dir", required=True, help="folder of the videos")
    p.add_argument(
        "--gt-file-question",
        "--gt_file_question",
        "--question-file",
        dest="gt_file_question",
        required=True,
        help="test_q.json: a list of {video_name, question, question_id}",
    )
    p.add_argument(
        "--gt-file-answers",
        "--gt_file_answers",
        dest="gt_file_answers",
        required=True,
        help="test_a.json: a list of {answer, ...} paired with the questions by position",
    )
    p.add_argument("--answers-file", default=None, help="JSON lines; resumed when it exists")
    p.add_argument("--output-dir", "--output_dir", dest="output_dir", default=None, help="upstream: folder")
    p.add_argument(
        "--output-name",
        "--output_name",
        dest="output_name",
        default=None,
        help="upstream: OUTPUT_DIR/NAME.json",
    )
    p.add_argument(
        "--dataset",
        default="msvd",
        choices=sorted(DATASET_PREFIX),
        help="activitynet: video files are v_NAME (as upstream's _act.py)",
    )
    p.add_argument("--max-questions", type=int, default=None, help="answer only the first N questions")
    p.add_argument(
        "--skip-missing-videos",
        action="store_true",
        help="log and count questions whose video is missing, unreadable or empty instead of stopping",
    )
    add_run_args(p, max_new_tokens=1024)
    add_video_model_args(p)
    add_video_input_args(p)
    return p


def resolve_answers_file(args: argparse.Namespace) -> None:
    """Sets ``args.answers_file`` from ``--output-dir`` + ``--output-name`` when given that way."""
    upstream = args.output_dir is not None or args.output_name is not None
    if args.answers_file is not None and upstream:
        raise ValueError("Give --answers-file or --output-dir with --output-name, not both.")
    if upstream:
        if args.output_dir is None or args.output_name is None:
            raise ValueError(
                "--output-dir and --output-name go together (the answers are OUTPUT_DIR/NAME.json)."
            )
        args.answers_file = str(Path(args.output_dir) / f"{args.output_name}.json")
    if args.answers_file is None:
        raise ValueError("Give --answers-file (or upstream's --output-dir and --output-name).")


def check_video_qa_args(args: argparse.Namespace) -> str:
    """Fails on option values that are wrong whatever the checkpoint; returns the device to use."""
    resolve_answers_file(args)
    if args.model_base is not None:
        raise ValueError("--model-base is not supported for Video-LLaVA checkpoints (no LoRA video weights).")
    if args.num_beams != 1:
        raise ValueError("--num_beams must be 1 for video QA (upstream decodes greedily).")
    if args.max_questions is not None and args.max_questions < 1:
        raise ValueError(f"--max-questions must be at least 1, got {args.max_questions}.")
    check_video_args(args)
    return check_args(args)


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------


def load_model(args: argparse.Namespace, device: str) -> Loaded:
    """Loads ``--model-path`` in ``--dtype`` with the video options, then applies the reduction flags."""
    from llava.model.video_loader import load_video_llava

    dtype = resolve_dtype(args.dtype, device)
    tokenizer, model, _, _ = load_video_llava(
        args.model_path,
        device=device,
        dtype=dtype,
        reduction_changes=reduction_changes(args),
        **video_load_kwargs(args),
    )
    if args.num_frames is not None and args.num_frames != model.config.video_num_frames:
        raise ValueError(
            f"--num-frames {args.num_frames}, but the checkpoint takes {model.config.video_num_frames} frames."
        )
    name = Path(args.model_path.rstrip("/")).name
    print(
        f"[llava] {name}: per-frame token reduction {model.video_reduction.describe()}, tower "
        f"{model.config.mm_video_tower_impl}, dtype {str(dtype).removeprefix('torch.')}",
        file=sys.stderr,
        flush=True,
    )
    return Loaded(tokenizer, model, None, name)


def video_settings(model: Any) -> dict[str, Any]:
    """What the loaded model runs on videos (recorded beside the answers)."""
    config = model.config
    return {
        "reduction": dict(config.mm_token_reduction or {"method": "none"}),
        "video": {
            "tower": model_source(config.mm_video_tower),
            "impl": config.mm_video_tower_impl,
            "num_frames": config.video_num_frames,
            "keep_cls": config.video_keep_cls,
            "reduction_form": config.video_reduction_form,
            "iqr_scope": config.video_iqr_scope,
            "per_frame_reduction": model.video_reduction.to_dict(),
        },
    }


def kept_fraction(num_visual_tokens: int, model: Any) -> float:
    """The kept patch-derived tokens (centres and extra tokens) over all ``T x N`` patches of a video."""
    tower = model.get_video_tower()
    frames = model.config.video_num_frames
    patch_tokens = num_visual_tokens - (frames if tower.keep_cls else 0)
    return round(patch_tokens / (frames * tower.num_patches), 6)


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class VideoBatch:
    """Questions whose videos were read, their prompts and pixels ``[V, 3, T, 224, 224]``, and the
    questions skipped with the reason."""

    questions: list[Question]
    prompts: list[str]
    pixels: torch.Tensor
    skipped: list[tuple[Question, str]]


def prepare_videos(
    questions: Sequence[Question], args: argparse.Namespace, num_frames: int, size: int
) -> VideoBatch:
    """Reads and transforms the batch's videos to ``size`` pixels (the tower's; in a worker thread).

    Raises:
        ValueError: a video cannot be read or has no frames (without ``--skip-missing-videos``).
    """
    kept, pixels, skipped = [], [], []
    for question in questions:
        try:
            pixels.append(
                question.image.load(num_frames, size, args.video_decoder, args.video_flip_prob, args.seed)
            )
        except (OSError, ValueError) as err:
            if not args.skip_missing_videos:
                raise ValueError(f"{err} (question_id {question.question_id!r}, {question.where})") from err
            skipped.append((question, str(err)))
            continue
        kept.append(question)
    prompts = [video_prompt(q.text, num_frames) for q in kept]
    stacked = torch.stack(pixels) if pixels else torch.zeros(0, 3, num_frames, size, size)
    return VideoBatch(kept, prompts, stacked, skipped)


def answer_line(question: Question, pred: str, num_visual_tokens: int, fraction: float) -> dict[str, Any]:
    """``{"id", "question", "answer", "pred", "num_visual_tokens", "kept_fraction", "video"}``."""
    return {
        **question.head,
        "pred": pred,
        "num_visual_tokens": int(num_visual_tokens),
        "kept_fraction": fraction,
        "video": question.tail["video"],
    }


def split_missing(pending: list[Question], skip: bool) -> tuple[list[Question], list[Question]]:
    """``(questions whose video was found, the others)``; without ``skip`` a missing video raises.

    Raises:
        FileNotFoundError: a video is missing (names the first, and how many more are).
    """
    missing = [q for q in pending if not q.image.exists()]
    if missing and not skip:
        first = missing[0]
        more = f" ({len(missing) - 1} more questions have no video)" if len(missing) > 1 else ""
        raise FileNotFoundError(
            f"Video not found: {first.image.describe()} (question_id {first.question_id!r}, {first.where})"
            f"{more}. Check --video-dir and --dataset, or pass --skip-missing-videos to skip them."
        )
    return [q for q in pending if q.image.exists()], missing


def log_skipped(question: Question, reason: str) -> None:
    """One stderr line per skipped question (through tqdm, so that a progress bar stays intact)."""
    from tqdm import tqdm

    tqdm.write(f"skipped: question_id {question.question_id!r} ({question.where}): {reason}", file=sys.stderr)


def run_video_questions(
    args: argparse.Namespace, questions: list[Question], device: str, loaded: Loaded | None = None
) -> int:
    """Answers this shard's questions that the answers file does not hold yet; returns how many.

    A foreign answers file, other settings, or a missing video (unless skipped) fail before the model is
    loaded; the answers file is only changed once generation starts.
    """
    from tqdm import tqdm

    plan = plan_shard(args, questions, device, id_field=ID_FIELD, not_settings=VIDEO_NOT_SETTINGS)
    pending, missing = split_missing(plan.pending, args.skip_missing_videos)
    for question in missing:
        log_skipped(question, f"video not found: {question.image.describe()}")
    if not pending:
        done = len(plan.shard) - len(plan.pending)
        print(
            f"[llava] {plan.path}: {done} of {len(plan.shard)} questions answered, {len(missing)} skipped.",
            file=sys.stderr,
        )
        return 0
    loaded = loaded or load_model(args, device)
    model = loaded.model
    record_settings(plan, **video_settings(model))
    num_frames, size = model.config.video_num_frames, model.get_video_tower().config.image_size
    kwargs = generation_kwargs(loaded.tokenizer, args.max_new_tokens, args.temperature, args.top_p, 1)
    batches = [pending[i : i + args.batch_size] for i in range(0, len(pending), args.batch_size)]
    initial = len(plan.shard) - len(plan.pending)
    bar = tqdm(total=len(plan.shard), initial=initial, unit="q", desc=plan.path.name)
    start, answered, skipped = time.perf_counter(), 0, len(missing)
    with open_for_append(plan.path, plan.state) as handle, bar:
        for batch in prefetched(batches, lambda b: prepare_videos(b, args, num_frames, size)):
            for question, reason in batch.skipped:
                log_skipped(question, reason)
            if batch.questions:
                texts, counts, cut = generate_batch(loaded, batch.prompts, batch.pixels, kwargs, videos=True)
                for question, text, count, was_cut in zip(batch.questions, texts, counts, cut):
                    if was_cut:
                        bar.write(
                            f"warning: question_id {question.question_id!r} was cut at the context length"
                        )
                    line = answer_line(question, text, count, kept_fraction(count, model))
                    handle.write(json.dumps(line) + "\n")
                handle.flush()
            answered += len(batch.questions)
            skipped += len(batch.skipped)
            bar.update(len(batch.questions) + len(batch.skipped))
            bar.set_postfix(
                videos_s=f"{answered / max(time.perf_counter() - start, 1e-9):.2f}", skipped=skipped
            )
    if skipped:
        print(
            f"[llava] {plan.path}: skipped {skipped} question(s) without a readable video.", file=sys.stderr
        )
    return answered


def main(argv: list[str] | None = None) -> int:
    """Runs the video-QA runner; returns the exit status (0 ok, 2 user error)."""
    return run_main(argv, parser(), load_questions, check=check_video_qa_args, run=run_video_questions)


if __name__ == "__main__":
    sys.exit(main())
