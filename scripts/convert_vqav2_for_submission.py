"""Make the VQAv2 EvalAI upload file (challenge 830) from merged answers.

Usage::

    python scripts/convert_vqav2_for_submission.py --split llava_vqav2_mscoco_test-dev2015 \\
        --ckpt llava-v1.5-13b [--dir playground/data/eval/vqav2]

Reads ``<dir>/answers/<split>/<ckpt>/merge.jsonl`` and ``<dir>/llava_vqav2_mscoco_test2015.jsonl``,
writes ``<dir>/answers_upload/<split>/<ckpt>.json`` (see :mod:`llava.eval.vqav2`).
"""

from __future__ import annotations

import argparse

from llava.eval.vqav2 import convert_vqav2_for_submission, submission_paths


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", default="playground/data/eval/vqav2", help="the VQAv2 eval folder")
    parser.add_argument("--ckpt", required=True, help="answers/<split>/<ckpt>/merge.jsonl")
    parser.add_argument("--split", required=True, help="e.g. llava_vqav2_mscoco_test-dev2015")
    args = parser.parse_args(argv)
    merge_file, test_split_file, upload_file = submission_paths(args.dir, args.split, args.ckpt)
    counts = convert_vqav2_for_submission(merge_file, test_split_file, upload_file)
    print(
        f"answers: {counts['answers']}, test questions: {counts['test_questions']}, "
        f"missing (written as ''): {counts['missing_answers']}, "
        f"answers outside the test split: {counts['answers_not_in_test_split']}"
    )
    print(f"upload file written to {upload_file}")
    return counts


if __name__ == "__main__":
    main()
