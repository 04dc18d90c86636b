"""Score SEED-Bench answers the way LLaVA-1.5 reports them: the image part (see docs/Evaluation.md).

Usage (``seed.sh`` runs both steps)::

    # the image questions of LLaVA's question file (seed.sh answers only those)
    python -m llava.eval.eval_seed --annotation-file playground/data/eval/seed_bench/SEED-Bench.json \\
        --select-image-questions playground/data/eval/seed_bench/llava-seed-bench.jsonl OUT.jsonl
    # scoring and the leaderboard upload file
    python -m llava.eval.eval_seed --annotation-file playground/data/eval/seed_bench/SEED-Bench.json \\
        --result-file playground/data/eval/seed_bench/answers/CKPT/merge.jsonl \\
        --upload-file playground/data/eval/seed_bench/answers_upload/CKPT.jsonl

``--annotation-file`` is SEED-Bench's ``SEED-Bench.json``: ``{"question_type": {name: id},
"questions": [{"question_id", "question_type_id", "data_type": "image" | "video", "answer": "A".."D",
...}]}``. LLaVA's question file ``llava-seed-bench.jsonl`` holds the image questions (``image``
``SEED-Bench-image/...``) and the video ones (the middle frame, ``SEED-Bench-video-image/...``), with the
options and the option-letter suffix already in ``text``.

Scoring follows upstream's ``scripts/convert_seed_for_submission.py``: answers are matched to the
annotation by question id (compared as strings here; upstream converts the annotation's id to ``int``
when it can), and an answer is right when its ``text`` *is* the gold letter: no letter is read out of a
longer answer (``"A."`` or ``"A. red"`` are wrong), see :func:`parse_option_letter`. An annotation
question without an answer counts as wrong (upstream does the same when scoring; its upload step would
stop). ``image_accuracy_percent`` = right / all image questions ×100 (questions pooled, not a mean over
dimensions), the SEED number of LLaVA-1.5's MODEL_ZOO (58.6 for 7B, 61.6 for 13B). ``dimensions`` gives
``{question_type_id: {"name", "data_type", "accuracy_percent", "correct", "count"}}`` for the nine image
dimensions (and the three video ones when any video question was answered); ``video_accuracy_percent``
and ``overall_accuracy_percent`` are ``null`` unless video questions were answered. ``unanswered`` and
``not_a_letter`` count image questions with no answer / with an answer that is not a bare letter A-D.

Upload file (SEED-Bench leaderboard, upstream's format): one JSON line ``{"question_id", "prediction"}``
per annotation question in annotation order, ``question_id`` as the annotation writes it and
``prediction`` the raw answer text; image questions always, video questions only when some were
answered; an unanswered question gets ``""``. The figures are printed and written beside the result
file as ``<result stem>.scores.json``, headed by ``"benchmark": "seed"`` and ``"headline":
"image_accuracy_percent"`` (see :data:`BENCHMARK`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from llava.eval.benchmarks import OPTION_LETTER_SUFFIX, Benchmark, register
from llava.eval.io import iter_numbered_jsonl, read_json, write_scores

OPTION_LETTERS = ("A", "B", "C", "D")
IMAGE, VIDEO = "image", "video"


def parse_option_letter(text: str) -> str:
    """The option letter an answer gives: the answer itself when it is exactly ``A``-``D``, else ``""``
    (upstream compares the raw text with the gold letter, so nothing else can be right)."""
    return text if text in OPTION_LETTERS else ""


def load_annotation(annotation_file: str | Path) -> tuple[dict[int, str], list[dict]]:
    """``({question_type_id: dimension name}, questions)`` of ``SEED-Bench.json``."""
    data = read_json(annotation_file)
    names = {int(type_id): name for name, type_id in data["question_type"].items()}
    return names, data["questions"]


def read_answers(result_file: str | Path) -> dict[str, str]:
    """``{str(question_id): text}`` of ``result_file`` (the last answer wins for a repeated id)."""
    answers = {}
    for line_number, answer in iter_numbered_jsonl(result_file):
        if "question_id" not in answer or "text" not in answer:
            raise ValueError(f"{result_file}:{line_number}: an answer line needs question_id and text")
        answers[str(answer["question_id"])] = answer["text"]
    return answers


def _percent(correct: int, count: int) -> float:
    return 100 * correct / count if count else 0.0


def score_answers(names: dict[int, str], questions: list[dict], answers: dict[str, str]) -> dict[str, Any]:
    """Accuracy per part and per dimension (see the module docstring)."""
    known = {str(q["question_id"]) for q in questions}
    unknown = [qid for qid in answers if qid not in known]
    if unknown:
        raise KeyError(f"{len(unknown)} answered question ids are not in the annotation, e.g. {unknown[:5]}")
    video_answered = any(str(q["question_id"]) in answers for q in questions if q["data_type"] == VIDEO)
    parts = (IMAGE, VIDEO) if video_answered else (IMAGE,)
    dimensions: dict[int, dict[str, Any]] = {}
    totals = {part: [0, 0] for part in parts}
    unanswered = not_a_letter = 0
    for question in questions:
        part = question["data_type"]
        if part not in parts:
            continue
        qid = str(question["question_id"])
        text = answers.get(qid)
        right = text is not None and parse_option_letter(text) == question["answer"]
        if part == IMAGE:
            unanswered += text is None
            not_a_letter += text is not None and not parse_option_letter(text)
        type_id = int(question["question_type_id"])
        cell = dimensions.setdefault(
            type_id, {"name": names.get(type_id, str(type_id)), "data_type": part, "correct": 0, "count": 0}
        )
        cell["correct"] += right
        cell["count"] += 1
        totals[part][0] += right
        totals[part][1] += 1
    for cell in dimensions.values():
        cell["accuracy_percent"] = _percent(cell["correct"], cell["count"])
    image_correct, image_count = totals[IMAGE]
    scores: dict[str, Any] = {
        "image_accuracy_percent": _percent(image_correct, image_count),
        "image_correct": image_correct,
        "image_count": image_count,
        "unanswered": unanswered,
        "not_a_letter": not_a_letter,
        "video_accuracy_percent": None,
        "overall_accuracy_percent": None,
    }
    if video_answered:
        video_correct, video_count = totals[VIDEO]
        scores["video_accuracy_percent"] = _percent(video_correct, video_count)
        scores["video_count"] = video_count
        scores["overall_accuracy_percent"] = _percent(
            image_correct + video_correct, image_count + video_count
        )
    scores["dimensions"] = {str(type_id): dimensions[type_id] for type_id in sorted(dimensions)}
    return scores


def upload_lines(questions: list[dict], answers: dict[str, str], with_video: bool) -> list[dict[str, Any]]:
    """The leaderboard file's lines: ``{"question_id", "prediction"}`` in annotation order."""
    parts = (IMAGE, VIDEO) if with_video else (IMAGE,)
    return [
        {"question_id": q["question_id"], "prediction": answers.get(str(q["question_id"]), "")}
        for q in questions
        if q["data_type"] in parts
    ]


def eval_seed(
    annotation_file: str | Path, result_file: str | Path, upload_file: str | Path | None = None
) -> dict[str, Any]:
    """Score ``result_file`` and, when ``upload_file`` is given, write the upload file there."""
    names, questions = load_annotation(annotation_file)
    answers = read_answers(result_file)
    scores = score_answers(names, questions, answers)
    if upload_file is not None:
        lines = upload_lines(questions, answers, scores["video_accuracy_percent"] is not None)
        upload_file = Path(upload_file)
        upload_file.parent.mkdir(parents=True, exist_ok=True)
        upload_file.write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
        scores["upload_file"] = str(upload_file)
    return scores


def select_image_questions(
    annotation_file: str | Path, question_file: str | Path, out_file: str | Path
) -> int:
    """Copy the lines of ``question_file`` whose question is an image question of the annotation to
    ``out_file`` (the same JSON objects, in file order); returns how many."""
    _, questions = load_annotation(annotation_file)
    image_ids = {str(q["question_id"]) for q in questions if q["data_type"] == IMAGE}
    kept = []
    for _, row in iter_numbered_jsonl(question_file):
        if str(row.get("question_id")) in image_ids:
            kept.append(json.dumps(row, ensure_ascii=False) + "\n")
    out_file = Path(out_file)
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text("".join(kept), encoding="utf-8")
    return len(kept)


BENCHMARK = register(
    Benchmark(
        name="seed",
        column="SEED",
        metric="image_accuracy_percent",
        metric_name="SEED-Bench image accuracy x100: answers that are exactly the gold option letter, over "
        "all image questions of SEED-Bench.json (dimensions 1-9, pooled); an unanswered question counts "
        "as wrong",
        runner="llava.eval.model_vqa_loader",
        scorer="llava.eval.eval_seed",
        script="seed.sh",
        prompt_suffix=OPTION_LETTER_SUFFIX["en"],
        parse_answer=parse_option_letter,
        fixed_answers_stem="merge",
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-file", required=True, help="SEED-Bench.json")
    parser.add_argument("--result-file", default=None, help="the model's answers (JSONL, merge.jsonl)")
    parser.add_argument("--upload-file", default=None, help="where to write the leaderboard JSONL")
    parser.add_argument(
        "--select-image-questions",
        nargs=2,
        metavar=("QUESTIONS", "OUT"),
        default=None,
        help="instead of scoring: copy the image questions of QUESTIONS (llava-seed-bench.jsonl) to OUT",
    )
    args = parser.parse_args(argv)
    if args.select_image_questions:
        count = select_image_questions(args.annotation_file, *args.select_image_questions)
        print(f"{count} image questions written to {args.select_image_questions[1]}")
        return {"image_questions": count}
    if args.result_file is None:
        parser.error("--result-file is required (unless --select-image-questions is given)")
    scores = BENCHMARK.stamp(eval_seed(args.annotation_file, args.result_file, args.upload_file))
    for type_id, cell in scores["dimensions"].items():
        print(
            f"{cell['name']} ({type_id}): {cell['accuracy_percent']:.2f}% ({cell['correct']}/{cell['count']})"
        )
    for part in ("video", "overall"):
        if scores[f"{part}_accuracy_percent"] is not None:
            print(f"{part} accuracy: {scores[f'{part}_accuracy_percent']:.2f}%")
    print(
        f"image accuracy: {scores['image_accuracy_percent']:.2f}% "
        f"({scores['image_correct']}/{scores['image_count']}; unanswered {scores['unanswered']}, "
        f"not a bare option letter {scores['not_a_letter']})"
    )
    if "upload_file" in scores:
        print(f"upload file written to {scores['upload_file']}")
    print(f"scores written to {write_scores(args.result_file, scores)}")
    return scores


if __name__ == "__main__":
    main()
