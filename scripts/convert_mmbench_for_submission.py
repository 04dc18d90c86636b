"""Make the MMBench upload sheet (OpenCompass server) from ``model_vqa_mmbench`` answers.

Usage::

    python scripts/convert_mmbench_for_submission.py \\
        --annotation-file playground/data/eval/mmbench/mmbench_dev_20230712.tsv \\
        --result-dir playground/data/eval/mmbench/answers/mmbench_dev_20230712 \\
        --upload-dir playground/data/eval/mmbench/answers_upload/mmbench_dev_20230712 \\
        --experiment llava-v1.5-13b

Reads the question TSV with pandas and the answers ``<result-dir>/<experiment>.jsonl`` (matched by
``question_id`` == TSV ``index``), drops the columns ``hint, category, source, image, comment,
l2-category`` (those present), inserts ``prediction`` (the raw answer text; empty where a row has
no answer) right after column ``D`` and writes ``<upload-dir>/<experiment>.xlsx``. Scoring and
CircularEval happen on the server; there is no local metric.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from llava.eval.io import read_jsonl

DROPPED_COLUMNS = ("hint", "category", "source", "image", "comment", "l2-category")


def build_upload_sheet(questions: pd.DataFrame, answers: list[dict]) -> pd.DataFrame:
    """The upload table: questions without the dropped columns, ``prediction`` inserted after ``D``."""
    predictions = {answer["question_id"]: answer["text"] for answer in answers}
    sheet = questions.drop(columns=[name for name in DROPPED_COLUMNS if name in questions.columns])
    column = [predictions.get(index) for index in questions["index"]]
    sheet.insert(
        sheet.columns.get_loc("D") + 1, "prediction", pd.Series(column, index=sheet.index, dtype=object)
    )
    return sheet


def convert_mmbench_for_submission(
    annotation_file: str | Path, result_dir: str | Path, upload_dir: str | Path, experiment: str
) -> Path:
    """Write ``<upload_dir>/<experiment>.xlsx`` and return its path."""
    questions = pd.read_table(annotation_file)
    answers = read_jsonl(Path(result_dir) / f"{experiment}.jsonl")
    sheet = build_upload_sheet(questions, answers)
    missing = int(sheet["prediction"].isna().sum())
    if missing:
        print(f"warning: {missing} of {len(sheet)} questions have no answer")
    upload_file = Path(upload_dir) / f"{experiment}.xlsx"
    upload_file.parent.mkdir(parents=True, exist_ok=True)
    sheet.to_excel(upload_file, index=False, engine="openpyxl")
    return upload_file


def main(argv: list[str] | None = None) -> Path:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-file", required=True, help="the MMBench question TSV")
    parser.add_argument("--result-dir", required=True, help="folder holding <experiment>.jsonl")
    parser.add_argument("--upload-dir", required=True, help="where <experiment>.xlsx goes")
    parser.add_argument("--experiment", required=True, help="answer file stem, e.g. llava-v1.5-13b")
    args = parser.parse_args(argv)
    upload_file = convert_mmbench_for_submission(
        args.annotation_file, args.result_dir, args.upload_dir, args.experiment
    )
    print(f"upload sheet written to {upload_file}")
    return upload_file


if __name__ == "__main__":
    main()
