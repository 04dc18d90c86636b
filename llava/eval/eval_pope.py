"""Score POPE answers the way LLaVA-1.5 reports them (see docs/Evaluation.md).

Usage::

    python -m llava.eval.eval_pope --annotation-dir playground/data/eval/pope/coco \\
        --question-file playground/data/eval/pope/llava_pope_test.jsonl \\
        --result-file playground/data/eval/pope/answers/llava-v1.5-13b.jsonl

``--annotation-dir`` holds ``coco_pope_<category>.json`` label files (one JSON object per line,
POPE commit e3e39262: adversarial, popular, random). Each answer's category comes from the
question file (by ``question_id``); the labels of a category are matched **by position** with the
answers of that category in answer-file order, as upstream does.

An answer is parsed as: keep the text before the first ``.``; delete commas; split on single
spaces; it is "no" when a word equals ``No``, ``no`` or ``not``, else "yes". A label "no" is
negative, any other label positive.

Per category the scorer prints TP/FP/TN/FN, accuracy, precision, recall, F1 and yes-ratio (all
fractions), then ``mean_f1_percent`` = mean F1 over the categories ×100, the number LLaVA-1.5
publishes as POPE. The figures are also written beside the result file as
``<result stem>.scores.json`` (see :mod:`llava.eval.io`), headed by ``"benchmark": "pope"`` and
``"headline": "mean_f1_percent"`` (see :data:`BENCHMARK`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llava.eval.benchmarks import SHORT_ANSWER_SUFFIX, Benchmark, register
from llava.eval.io import read_jsonl, write_scores

LABEL_PREFIX = "coco_pope_"
LABEL_SUFFIX = ".json"
NEGATIVE_WORDS = frozenset({"No", "no", "not"})


def parse_yes_no(text: str) -> str:
    """Map a free-form answer to "yes" or "no" with POPE's rule (first sentence, negation words)."""
    first_sentence = text.split(".")[0]
    words = first_sentence.replace(",", "").split(" ")
    return "no" if NEGATIVE_WORDS.intersection(words) else "yes"


def _ratio(numerator: int, denominator: int) -> float:
    return numerator / denominator if denominator else 0.0


def binary_scores(predictions: list[bool], labels: list[bool]) -> dict[str, float | int]:
    """Confusion counts and accuracy / precision / recall / F1 / yes-ratio for yes(True)/no(False)."""
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    tp = sum(p and g for p, g in zip(predictions, labels))
    fp = sum(p and not g for p, g in zip(predictions, labels))
    tn = sum(not p and not g for p, g in zip(predictions, labels))
    fn = sum(not p and g for p, g in zip(predictions, labels))
    precision = _ratio(tp, tp + fp)
    recall = _ratio(tp, tp + fn)
    return {
        "count": len(labels),
        "tp": tp,
        "fp": fp,
        "tn": tn,
        "fn": fn,
        "accuracy": _ratio(tp + tn, len(labels)),
        "precision": precision,
        "recall": recall,
        "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
        "yes_ratio": _ratio(sum(predictions), len(predictions)),
    }


def find_label_files(annotation_dir: str | Path) -> dict[str, Path]:
    """``{category: label file}`` for every ``coco_pope_<category>.json`` in ``annotation_dir``."""
    files = sorted(Path(annotation_dir).glob(f"{LABEL_PREFIX}*{LABEL_SUFFIX}"))
    if not files:
        raise FileNotFoundError(f"no {LABEL_PREFIX}<category>{LABEL_SUFFIX} files in {annotation_dir}")
    return {path.name[len(LABEL_PREFIX) : -len(LABEL_SUFFIX)]: path for path in files}


def answers_by_category(question_file: str | Path, result_file: str | Path) -> dict[str, list[dict]]:
    """Group the answers of ``result_file`` by their question's category, keeping file order."""
    categories = {q["question_id"]: q["category"] for q in read_jsonl(question_file)}
    grouped: dict[str, list[dict]] = {}
    for answer in read_jsonl(result_file):
        question_id = answer["question_id"]
        if question_id not in categories:
            raise KeyError(f"{result_file}: question_id {question_id!r} is not in {question_file}")
        grouped.setdefault(categories[question_id], []).append(answer)
    return grouped


def eval_pope(annotation_dir: str | Path, question_file: str | Path, result_file: str | Path) -> dict:
    """Score every category that has a label file; return per-category figures and the mean F1."""
    grouped = answers_by_category(question_file, result_file)
    per_category = {}
    for category, label_file in find_label_files(annotation_dir).items():
        labels = [record["label"] != "no" for record in read_jsonl(label_file)]
        answers = grouped.get(category, [])
        if len(answers) != len(labels):
            raise ValueError(
                f"category {category!r}: {len(answers)} answers in {result_file} but "
                f"{len(labels)} labels in {label_file} (labels are matched by position)"
            )
        predictions = [parse_yes_no(answer["text"]) == "yes" for answer in answers]
        per_category[category] = binary_scores(predictions, labels)
    unscored = sorted(set(grouped) - set(per_category))
    if unscored:
        print(f"warning: no label file for categories {unscored}; their answers are not scored")
    mean_f1 = sum(scores["f1"] for scores in per_category.values()) / len(per_category)
    return {
        "categories": per_category,
        "mean_f1_percent": 100 * mean_f1,
        "mean_accuracy_percent": 100
        * sum(scores["accuracy"] for scores in per_category.values())
        / len(per_category),
    }


def print_scores(scores: dict) -> None:
    """Print the figures in a human-readable layout."""
    for category, figures in scores["categories"].items():
        print(f"Category: {category}, # samples: {figures['count']}")
        print("TP\tFP\tTN\tFN")
        print(f"{figures['tp']}\t{figures['fp']}\t{figures['tn']}\t{figures['fn']}")
        for name in ("accuracy", "precision", "recall", "f1", "yes_ratio"):
            print(f"{name}: {figures[name]:.4f}")
        print("=" * 40)
    print(f"POPE mean F1 x100 over {len(scores['categories'])} categories: {scores['mean_f1_percent']:.2f}")
    print(f"mean accuracy x100: {scores['mean_accuracy_percent']:.2f}")


BENCHMARK = register(
    Benchmark(
        name="pope",
        column="POPE",
        metric="mean_f1_percent",
        metric_name="mean over the label files' categories (adversarial, popular, random) of the F1 "
        "score with 'yes' as the positive class, x100",
        runner="llava.eval.model_vqa_loader",
        scorer="llava.eval.eval_pope",
        script="pope.sh",
        table1=3,
        prompt_suffix=SHORT_ANSWER_SUFFIX,
        parse_answer=parse_yes_no,
        legacy_keys=("mean_f1_percent",),
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-dir", required=True, help="folder with coco_pope_<category>.json")
    parser.add_argument("--question-file", required=True, help="llava_pope_test.jsonl")
    parser.add_argument("--result-file", required=True, help="the model's answers (JSONL)")
    args = parser.parse_args(argv)
    scores = BENCHMARK.stamp(eval_pope(args.annotation_dir, args.question_file, args.result_file))
    print_scores(scores)
    print(f"scores written to {write_scores(args.result_file, scores)}")
    return scores


if __name__ == "__main__":
    main()
