"""Score ScienceQA answers the way LLaVA-1.5 reports them (see docs/Evaluation.md).

Usage::

    python -m llava.eval.eval_science_qa --base-dir playground/data/eval/scienceqa \\
        --result-file answers/llava-v1.5-13b.jsonl --output-file answers/llava-v1.5-13b_output.json \\
        --output-result answers/llava-v1.5-13b_result.json [--question-file Q] [--split test]

``--base-dir`` holds ``pid_splits.json`` (the question ids of ``--split``, in order) and, optionally,
ScienceQA's ``problems.json``. The question file (default ``<base-dir>/llava_test_CQM-A.json``, a JSON
list in LLaVA's conversation form) supplies, per id, whether the prompt has an ``<image>`` and,
when ``problems.json`` is absent, the gold letter (the ``gpt`` turn) and the number of options
(the trailing ``A. ...``/``B. ...`` lines of the ``human`` turn). With ``problems.json`` the gold
index and the number of options come from its ``answer`` and ``choices``.

Parsing of an answer: the whole answer is a letter A–E; else it has at least 3 characters and
starts with such a letter followed by ``". "``; else the regex ``The answer is ([A-Z]).`` (dot
unescaped, as upstream) matches exactly once; otherwise it is ``FAILED`` (so is a missing answer).
A letter beyond the item's number of options is wrong (parsed index -1).

Outputs: ``--output-file`` gets the per-question records (a JSON list in split order);
``--output-result`` gets ``{"acc", "correct", "count", "results": {id: parsed option index or -1},
"outputs": {id: raw answer}}``, the layout of the official ``*_result.json``. The figures (overall
accuracy and IMG accuracy, i.e. over items whose prompt has an image — the number LLaVA-1.5
publishes) are printed and written beside the result file as ``<result stem>.scores.json``, headed by
``"benchmark": "sqa"`` and ``"headline": "img_accuracy_percent"`` (see :data:`BENCHMARK`).
``failed_to_parse`` counts the items from which no option letter was read, *including* the
unanswered ones (upstream scores a missing answer as the text ``FAILED``); ``unanswered`` counts
those alone.
"""

from __future__ import annotations

import argparse
import re
from dataclasses import dataclass
from pathlib import Path

from llava.eval.benchmarks import OPTION_LETTER_SUFFIX, Benchmark, register
from llava.eval.io import read_json, read_jsonl, write_json, write_scores

OPTION_LETTERS = ("A", "B", "C", "D", "E")
FAILED = "FAILED"
ANSWER_IS = re.compile(r"The answer is ([A-Z]).")
IMAGE_TOKEN = "<image>"


@dataclass(frozen=True)
class SQAItem:
    """What scoring needs to know about one question."""

    gold_index: int
    num_options: int
    has_image: bool


def parse_option_letter(text: str, options: tuple[str, ...] = OPTION_LETTERS) -> str:
    """Return the option letter an answer commits to, or ``"FAILED"``."""
    if text in options:
        return text
    if len(text) >= 3 and text[0] in options and text[1:3] == ". ":
        return text[0]
    found = ANSWER_IS.findall(text)
    return found[0] if len(found) == 1 else FAILED


def option_index(letter: str, num_options: int, options: tuple[str, ...] = OPTION_LETTERS) -> int:
    """Index of ``letter`` among the item's first ``num_options`` letters, else -1."""
    allowed = options[:num_options]
    return allowed.index(letter) if letter in allowed else -1


def count_listed_options(human_text: str) -> int:
    """Number of options listed at the end of a prompt as ``A. ...``, ``B. ...`` lines.

    The options start at the last line beginning with ``"A. "``; the following letters are counted
    while each next letter starts a later line (an option may itself span several lines).
    """
    lines = human_text.split("\n")
    starts = [i for i, line in enumerate(lines) if line.startswith("A. ")]
    if not starts:
        return 0
    count, position = 1, starts[-1]
    for letter in OPTION_LETTERS[1:]:
        following = [i for i in range(position + 1, len(lines)) if lines[i].startswith(f"{letter}. ")]
        if not following:
            break
        count, position = count + 1, following[0]
    return count


def items_from_question_file(question_file: str | Path) -> dict[str, SQAItem]:
    """Read LLaVA's ScienceQA question list: gold letter, option count and image flag per id."""
    items = {}
    for entry in read_json(question_file):
        turns = {turn["from"]: turn["value"] for turn in entry["conversations"]}
        num_options = count_listed_options(turns["human"])
        gold = turns["gpt"].strip()
        if num_options == 0 or gold not in OPTION_LETTERS[:num_options]:
            raise ValueError(
                f"{question_file}: item {entry['id']!r}: cannot read the options or the gold letter {gold!r}"
            )
        items[str(entry["id"])] = SQAItem(
            OPTION_LETTERS.index(gold), num_options, IMAGE_TOKEN in turns["human"]
        )
    return items


def apply_problems(items: dict[str, SQAItem], problems_file: Path) -> dict[str, SQAItem]:
    """Take the gold index and the number of choices from ScienceQA's ``problems.json``."""
    problems = read_json(problems_file)
    updated = {}
    for pid, item in items.items():
        problem = problems.get(pid)
        if problem is not None:
            item = SQAItem(problem["answer"], len(problem["choices"]), item.has_image)
        updated[pid] = item
    return updated


def load_items(base_dir: Path, question_file: Path, split: str) -> tuple[list[str], dict[str, SQAItem]]:
    """The ids of ``split`` (in ``pid_splits.json`` order) and their :class:`SQAItem`."""
    split_ids = [str(pid) for pid in read_json(base_dir / "pid_splits.json")[split]]
    items = items_from_question_file(question_file)
    missing = [pid for pid in split_ids if pid not in items]
    if missing:
        raise KeyError(
            f"{len(missing)} ids of split {split!r} are not in {question_file}, e.g. {missing[:5]}"
        )
    if (base_dir / "problems.json").exists():
        items = apply_problems(items, base_dir / "problems.json")
    return split_ids, items


def score_answers(split_ids: list[str], items: dict[str, SQAItem], answers: dict[str, dict]) -> dict:
    """Parse and score every question of the split; return records, results and counts."""
    records, results, outputs = [], {}, {}
    for pid in split_ids:
        item = items[pid]
        answer = answers.get(pid)
        text = answer["text"] if answer is not None else FAILED
        letter = parse_option_letter(text)
        parsed = option_index(letter, item.num_options)
        results[pid], outputs[pid] = parsed, text
        records.append(
            {
                "question_id": pid,
                "prediction": text,
                "parsed_answer": letter,
                "parsed_index": parsed,
                "ground_truth": OPTION_LETTERS[item.gold_index],
                "has_image": item.has_image,
                "correct": parsed == item.gold_index,
            }
        )
    return {"records": records, "results": results, "outputs": outputs}


def summarise(records: list[dict]) -> dict:
    """Overall and IMG (prompt has an image) accuracy in percent, with their counts."""
    img = [record for record in records if record["has_image"]]
    correct = sum(record["correct"] for record in records)
    img_correct = sum(record["correct"] for record in img)
    return {
        "accuracy_percent": 100 * correct / len(records) if records else 0.0,
        "correct": correct,
        "count": len(records),
        "img_accuracy_percent": 100 * img_correct / len(img) if img else 0.0,
        "img_correct": img_correct,
        "img_count": len(img),
        "failed_to_parse": sum(record["parsed_answer"] == FAILED for record in records),
    }


def eval_science_qa(
    base_dir: str | Path,
    result_file: str | Path,
    question_file: str | Path | None = None,
    split: str = "test",
) -> dict:
    """Score ``result_file``; return ``{"scores", "records", "result"}`` (see the module docstring)."""
    base_dir = Path(base_dir)
    question_file = Path(question_file) if question_file else base_dir / "llava_test_CQM-A.json"
    split_ids, items = load_items(base_dir, question_file, split)
    answers = {str(answer["question_id"]): answer for answer in read_jsonl(result_file)}
    scored = score_answers(split_ids, items, answers)
    scores = summarise(scored["records"])
    scores["unanswered"] = sum(pid not in answers for pid in split_ids)
    result = {
        "acc": scores["accuracy_percent"],
        "correct": scores["correct"],
        "count": scores["count"],
        "results": scored["results"],
        "outputs": scored["outputs"],
    }
    return {"scores": scores, "records": scored["records"], "result": result}


BENCHMARK = register(
    Benchmark(
        name="sqa",
        column="SQA-IMG",
        metric="img_accuracy_percent",
        metric_name="accuracy x100 on the test items whose prompt has an image (2,017 of 4,241); "
        "an unanswered item counts as wrong",
        runner="llava.eval.model_vqa_science",
        scorer="llava.eval.eval_science_qa",
        script="sqa.sh",
        table1=1,
        prompt_suffix=OPTION_LETTER_SUFFIX["en"],
        suffix_flag="--single-pred-prompt",
        max_new_tokens=1024,
        parse_answer=parse_option_letter,
        legacy_keys=("img_accuracy_percent",),
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--base-dir", required=True, help="folder with pid_splits.json [and problems.json]")
    parser.add_argument("--result-file", required=True, help="the model's answers (JSONL)")
    parser.add_argument("--output-file", required=True, help="per-question records (JSON)")
    parser.add_argument(
        "--output-result", required=True, help="official-style {acc, correct, count, results}"
    )
    parser.add_argument("--question-file", default=None, help="default: <base-dir>/llava_test_CQM-A.json")
    parser.add_argument("--split", default="test", help="key of pid_splits.json (default: test)")
    args = parser.parse_args(argv)
    evaluation = eval_science_qa(args.base_dir, args.result_file, args.question_file, args.split)
    scores = BENCHMARK.stamp(evaluation["scores"])
    write_json(args.output_file, evaluation["records"])
    write_json(args.output_result, evaluation["result"])
    print(
        f"Total: {scores['count']}, Correct: {scores['correct']}, Accuracy: {scores['accuracy_percent']:.2f}%, "
        f"IMG-Accuracy: {scores['img_accuracy_percent']:.2f}% ({scores['img_correct']}/{scores['img_count']}), "
        f"no option letter read: {scores['failed_to_parse']} (unanswered: {scores['unanswered']})"
    )
    print(f"scores written to {write_scores(args.result_file, scores)}")
    return scores


if __name__ == "__main__":
    main()
