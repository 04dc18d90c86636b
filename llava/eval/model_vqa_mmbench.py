"""Answer MMBench from its TSV with base64 images (upstream's ``llava.eval.model_vqa_mmbench``).

The TSV (e.g. ``mmbench_dev_20230712.tsv``) has the columns ``index``, ``question``, ``hint``, ``A``-``D``,
``image`` (base64), and ``answer``, ``category`` ... which are not used here. The prompt is
``{hint}\\n`` (only when the hint is not empty/None/NaN/"nan"/"none") + ``{question}`` + ``\\nA. ...``
for each option up to the first missing one, with ``<image>\\n`` in front; ``--single-pred-prompt``
appends the option-letter instruction (``--lang cn``: the Chinese one). Answer lines are upstream's
``{"question_id" (= index), "round_id" (0), "prompt" (hint + question + options), "text", "options",
"option_char", "answer_id", "model_id", "metadata"}`` plus ``num_visual_tokens``::

    python -m llava.eval.model_vqa_mmbench --model-path CKPT --question-file mmbench_dev_20230712.tsv \\
        --answers-file answers/mmbench_dev_20230712/ckpt.jsonl --single-pred-prompt --lang en \\
        --temperature 0 --conv-mode vicuna_v1

Not ported: ``--all-rounds`` (upstream rotates the options itself; the LLaVA-1.5 scripts do not use it
because the dev TSV already holds the circular copies at index + 1e6 / 2e6 / 3e6). Text columns are read
as strings (so an option "1" is not turned into ``1.0``); as upstream, pandas' default missing-value
words ("", "NA", "None", "nan" ...) count as missing. An ``image`` cell that holds only a row index (as in
later MMBench TSVs) uses that row's image. ``--max_new_tokens`` defaults to 1024 (hard-coded upstream).
The English suffix and that default are the benchmark's declaration,
:data:`llava.eval.eval_mmbench.BENCHMARK`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import math
import sys
from dataclasses import dataclass
from typing import Any

from llava.eval.benchmarks import OPTION_LETTER_SUFFIX
from llava.eval.eval_mmbench import BENCHMARK
from llava.eval.runner import Question, build_parser, prompt_with_image, run_main

OPTION_LETTERS = ("A", "B", "C", "D")
TEXT_COLUMNS = ("question", "hint", *OPTION_LETTERS)


def is_none(value: Any) -> bool:
    """Upstream's test for a missing cell: None, NaN, or the text "nan"/"none" (any case), or empty."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return True
    return str(value).strip().lower() in ("", "nan", "none")


@dataclass(frozen=True)
class Base64Image:
    """An image stored in the TSV as base64 text."""

    data: str
    name: str

    def exists(self) -> bool:
        return bool(self.data)

    def load(self) -> Any:
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(io.BytesIO(base64.b64decode(self.data, validate=False))) as img:
                return img.convert("RGB")
        except (binascii.Error, UnidentifiedImageError, OSError) as err:
            raise ValueError(f"{self.name} is not a readable base64 image: {err}") from err

    def describe(self) -> str:
        return self.name


def read_table(path: str) -> list[dict[str, Any]]:
    """The rows of the TSV as dicts (text columns as strings, missing cells NaN)."""
    import pandas as pd

    table = pd.read_table(path, dtype={name: str for name in TEXT_COLUMNS})
    missing = [name for name in ("index", "question", "image") if name not in table.columns]
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}; columns are {list(table.columns)}.")
    return table.to_dict("records")


def to_question(
    row: dict[str, Any], number: int, images: dict[int, str], args: argparse.Namespace
) -> Question:
    """One TSV row (``number`` counts data rows from 1) as a :class:`Question`."""
    where = f"{args.question_file} row {number}"
    qid = int(row["index"])
    options = []
    for letter in OPTION_LETTERS:
        if is_none(row.get(letter)):
            break
        options.append(str(row[letter]))
    prompt = str(row["question"])
    if not is_none(row.get("hint")):
        prompt = f"{row['hint']}\n{prompt}"
    for letter, option in zip(OPTION_LETTERS, options):
        prompt = f"{prompt}\n{letter}. {option}"
    text = prompt_with_image(prompt, True)
    if args.single_pred_prompt:
        text = f"{text}\n{OPTION_LETTER_SUFFIX[args.lang]}"
    data = "" if is_none(row["image"]) else str(row["image"])
    if len(data) < 64 and data.isdigit():  # a reference to the row that holds the image
        data = images.get(int(data), "")
    return Question(
        question_id=qid,
        text=text,
        image=Base64Image(data, f"the image of index {qid}"),
        head={"question_id": qid, "round_id": 0, "prompt": prompt},
        tail={"options": options, "option_char": list(OPTION_LETTERS[: len(options)])},
        where=where,
    )


def load_questions(args: argparse.Namespace) -> list[Question]:
    """The rows of ``--question-file`` in file order."""
    rows = read_table(args.question_file)
    images = {int(row["index"]): str(row["image"]) for row in rows if not is_none(row["image"])}
    return [to_question(row, number, images, args) for number, row in enumerate(rows, start=1)]


def parser() -> argparse.ArgumentParser:
    """Upstream's options plus ``--batch-size``, ``--device``, ``--dtype`` and the token-reduction flags."""
    result = build_parser(
        "python -m llava.eval.model_vqa_mmbench",
        "Answer MMBench (TSV with base64 images) with a LLaVA-1.5 checkpoint.",
        max_new_tokens=BENCHMARK.max_new_tokens,
    )
    result.add_argument(
        "--single-pred-prompt", action="store_true", help="append the option-letter instruction"
    )
    result.add_argument(
        "--lang", default="en", choices=sorted(OPTION_LETTER_SUFFIX), help="language of that instruction"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the MMBench runner; returns the exit status (0 ok, 2 user error)."""
    return run_main(argv, parser(), load_questions)


if __name__ == "__main__":
    sys.exit(main())
