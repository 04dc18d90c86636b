"""Build the VQAv2 EvalAI upload file from merged answers (see docs/Evaluation.md).

There is no local VQAv2 metric: the published number is the EvalAI server's test-dev accuracy.
:func:`convert_vqav2_for_submission` iterates the **full** test question file
(``llava_vqav2_mscoco_test2015.jsonl``, which contains test-dev), normalises each answer with
:class:`~llava.eval.m4c_evaluator.EvalAIAnswerProcessor` and writes ``""`` for question ids that have
no answer (EvalAI expects an entry for every test question). Output: a JSON list of
``{"question_id", "answer"}``. The command-line front end is ``scripts/convert_vqav2_for_submission.py``.
"""

from __future__ import annotations

from pathlib import Path

from llava.eval.io import read_jsonl, write_json
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor

TEST_SPLIT_FILE = "llava_vqav2_mscoco_test2015.jsonl"


def build_submission(answers: list[dict], test_questions: list[dict]) -> tuple[list[dict], int]:
    """Upload entries for every test question (normalised answer or ``""``) and how many were missing."""
    processor = EvalAIAnswerProcessor()
    texts = {answer["question_id"]: answer["text"] for answer in answers}
    submission, missing = [], 0
    for question in test_questions:
        question_id = question["question_id"]
        if question_id in texts:
            submission.append({"question_id": question_id, "answer": processor(texts[question_id])})
        else:
            submission.append({"question_id": question_id, "answer": ""})
            missing += 1
    return submission, missing


def convert_vqav2_for_submission(
    merge_file: str | Path, test_split_file: str | Path, upload_file: str | Path
) -> dict[str, int]:
    """Write the EvalAI upload JSON for ``merge_file``; return counts (answers, questions, missing)."""
    answers = read_jsonl(merge_file)
    test_questions = read_jsonl(test_split_file)
    submission, missing = build_submission(answers, test_questions)
    write_json(upload_file, submission, indent=None)
    test_ids = {question["question_id"] for question in test_questions}
    return {
        "answers": len(answers),
        "test_questions": len(test_questions),
        "missing_answers": missing,
        "answers_not_in_test_split": sum(answer["question_id"] not in test_ids for answer in answers),
    }


def submission_paths(eval_dir: str | Path, split: str, ckpt: str) -> tuple[Path, Path, Path]:
    """``(merge.jsonl, full test question file, upload JSON)`` in the upstream folder layout."""
    eval_dir = Path(eval_dir)
    return (
        eval_dir / "answers" / split / ckpt / "merge.jsonl",
        eval_dir / TEST_SPLIT_FILE,
        eval_dir / "answers_upload" / split / f"{ckpt}.json",
    )
