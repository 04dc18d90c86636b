"""Answer ScienceQA in LLaVA's conversation form (upstream's ``llava.eval.model_vqa_science``).

The question file is a JSON list of ``{"id", "image"?, "conversations": [{"from": "human", "value"}, ...]}``
(e.g. ``llava_test_CQM-A.json``, 4,241 items). The human turn's ``<image>`` is removed and the text
stripped; items with an image get ``<image>\\n`` back in front, text-only items are answered by the
language model alone (no visual tokens). ``--single-pred-prompt`` appends "\\nAnswer with the option's
letter from the given choices directly." Answer lines are upstream's ``{"question_id", "prompt", "text",
"answer_id", "model_id", "metadata"}``, where ``prompt`` is what the model was asked (with ``<image>\\n``
for image items, which the scorer uses to pick the IMG subset), plus ``num_visual_tokens`` (0 for
text-only items)::

    python -m llava.eval.model_vqa_science --model-path CKPT --question-file llava_test_CQM-A.json \\
        --image-folder scienceqa/images/test --answers-file answers/ckpt.jsonl \\
        --single-pred-prompt --temperature 0 --conv-mode vicuna_v1

``--max_new_tokens`` defaults to 1024 (hard-coded upstream). The suffix and that default come from the
benchmark's declaration, :data:`llava.eval.eval_science_qa.BENCHMARK`. Not ported: upstream's ``--answer-prompter``
(a second pass for chain-of-thought answers), unused by the LLaVA-1.5 scripts. ``--conv-mode`` defaults
to ``vicuna_v1`` (what ``sqa.sh`` passes) rather than upstream's ``llava_v0``, which is not shipped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from llava.eval.eval_science_qa import BENCHMARK
from llava.eval.runner import ImageFile, Question, build_parser, prompt_with_image, run_main


def read_items(path: str) -> list[dict]:
    """The JSON list of ``path`` (a parse error names the file and line)."""
    from llava.eval.io import read_json

    items = read_json(path)
    if not isinstance(items, list):
        raise ValueError(f"{path}: expected a JSON list of ScienceQA items, got {type(items).__name__}.")
    return items


def to_question(item: dict, index: int, args: argparse.Namespace) -> Question:
    """One ScienceQA item as a :class:`Question`."""
    where = f"{args.question_file} item {index} (0-based)"
    try:
        qid, human = item["id"], item["conversations"][0]["value"]
    except (KeyError, IndexError, TypeError) as err:
        raise ValueError(f"{where}: expected 'id' and a first 'conversations' turn with 'value'.") from err
    image = ImageFile(Path(args.image_folder).expanduser() / item["image"]) if item.get("image") else None
    text = prompt_with_image(human, image is not None)
    if args.single_pred_prompt:
        text = f"{text}\n{BENCHMARK.prompt_suffix}"
    return Question(qid, text, image, head={"question_id": qid, "prompt": text}, where=where)


def load_questions(args: argparse.Namespace) -> list[Question]:
    """The items of ``--question-file`` in file order."""
    return [to_question(item, i, args) for i, item in enumerate(read_items(args.question_file))]


def parser() -> argparse.ArgumentParser:
    """Upstream's options plus ``--batch-size``, ``--device``, ``--dtype`` and the token-reduction flags."""
    result = build_parser(
        "python -m llava.eval.model_vqa_science",
        "Answer ScienceQA (LLaVA conversation-form JSON list) with a LLaVA-1.5 checkpoint.",
        max_new_tokens=BENCHMARK.max_new_tokens,
    )
    result.add_argument("--image-folder", default="", help="folder the items' image paths are relative to")
    result.add_argument(
        "--single-pred-prompt", action="store_true", help="append the option-letter instruction"
    )
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the ScienceQA runner; returns the exit status (0 ok, 2 user error)."""
    return run_main(argv, parser(), load_questions)


if __name__ == "__main__":
    sys.exit(main())
