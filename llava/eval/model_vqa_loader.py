"""Answer a JSON Lines question file with one image per question (upstream's ``llava.eval.model_vqa_loader``).

Used for VQAv2, GQA, TextVQA, POPE, MME, VizWiz and SEED. Each question line is
``{"question_id", "image", "text", "category"?}``; the answer-format suffix (e.g. "Answer the question
using a single word or phrase.") is already in ``text``, so the prompt is the ``--conv-mode`` template
(``vicuna_v1``) around ``<image>\\n{text}``. Each answer line is upstream's
``{"question_id", "prompt", "text", "answer_id", "model_id", "metadata"}`` (``prompt`` = the question
text) plus ``num_visual_tokens``, the visual tokens that question's image kept::

    python -m llava.eval.model_vqa_loader --model-path CKPT [--model-base BASE] \\
        --question-file llava_pope_test.jsonl --image-folder val2014 --answers-file answers/ckpt.jsonl \\
        --temperature 0 --conv-mode vicuna_v1 [--batch-size 8] [--num-chunks 8 --chunk-idx 0]

An existing answers file is resumed (see :mod:`llava.eval.runner`). Differences from upstream:
``--temperature`` defaults to 0 (every upstream script passes 0), ``--batch-size`` may exceed 1 (left
padding; greedy answers are the same as at 1 in float32), questions without ``image`` are answered as
text only, ``--dtype`` picks the precision (``auto``, the default: float16 on CUDA as upstream, float32
on CPU). Errors print ``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava.eval.io import iter_numbered_jsonl
from llava.eval.runner import (
    ImageFile,
    Question,
    build_parser,
    prompt_with_image,
    require_fields,
    run_main,
)


def load_questions(args: argparse.Namespace) -> list[Question]:
    """The questions of ``--question-file``, images joined to ``--image-folder``."""
    folder = Path(args.image_folder).expanduser()
    questions = []
    for lineno, row in iter_numbered_jsonl(args.question_file):
        where = f"{args.question_file} line {lineno}"
        require_fields(row, ("question_id", "text"), where)
        image = ImageFile(folder / row["image"]) if row.get("image") else None
        questions.append(
            Question(
                question_id=row["question_id"],
                text=prompt_with_image(row["text"], image is not None),
                image=image,
                head={"question_id": row["question_id"], "prompt": row["text"]},
                where=where,
            )
        )
    return questions


def parser() -> argparse.ArgumentParser:
    """Upstream's options plus ``--batch-size``, ``--device``, ``--dtype`` and the token-reduction flags."""
    result = build_parser(
        "python -m llava.eval.model_vqa_loader",
        "Answer a JSON Lines question file (one image per question) with a LLaVA-1.5 checkpoint.",
        max_new_tokens=128,
    )
    result.add_argument(
        "--image-folder", default="", help="folder the questions' image paths are relative to"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the loader; returns the exit status (0 ok, 2 user error)."""
    return run_main(argv, parser(), load_questions)


if __name__ == "__main__":
    sys.exit(main())
