"""Score GQA testdev-balanced answers the way LLaVA-1.5 reports them (see docs/Evaluation.md).

Usage (``gqa.sh`` runs it on the merged chunks)::

    python -m llava.eval.eval_gqa \\
        --question-file playground/data/eval/gqa/data/testdev_balanced_questions.json \\
        --result-file playground/data/eval/gqa/answers/llava_gqa_testdev_balanced/CKPT/merge.jsonl \\
        [--predictions-file .../CKPT/testdev_balanced_predictions.json]

Upstream LLaVA converts the merged answers with ``scripts/convert_gqa_for_eval.py`` and runs GQA's own
``eval.py --tier testdev_balanced``. Both steps are done here:

* Conversion. Each answer's ``text`` has every trailing ``.`` removed and is then lower-cased (no other
  normalisation: no whitespace stripping, no articles, no number words); the list
  ``[{"questionId", "prediction"}]`` is written in answer-file order to ``--predictions-file`` (default:
  ``testdev_balanced_predictions.json`` beside the result file, the name GQA's ``eval.py`` expects;
  ``questionId`` is written as a string, the type of GQA's ids). Feed it to the official script with
  ``python eval/eval.py --tier testdev_balanced --predictions PATH`` to cross-check.
* Accuracy, as GQA's ``eval.py``: every question of ``--question-file`` (GQA's
  ``testdev_balanced_questions.json``: ``{questionId: {"answer", "isBalanced", "types": {"structural",
  "semantic", ...}, ...}}``) whose ``isBalanced`` is true is scored 1 when its prediction equals its
  ``answer`` exactly, else 0. Answers are matched by ``str(question_id)``; for a repeated id the last
  answer wins (as ``eval.py``'s dictionary). ``accuracy_percent`` is the mean ×100 (``eval.py``'s
  "Accuracy", the number LLaVA-1.5 publishes as GQA: 62.0 for 7B, 63.3 for 13B); ``binary_percent`` /
  ``open_percent`` split it by structural type (``query`` is open, every other type binary), and
  ``structural_types`` / ``semantic_types`` give ``{type: {"accuracy_percent", "count"}}``. Not
  computed: validity and plausibility (they need ``testdev_balanced_choices.json``, absent from the GQA
  v1.2 release, so ``eval.py`` prints 0 for them), consistency (off in upstream's run), grounding,
  distribution and the per-length / per-steps tables.

Where ``eval.py`` stops ("missing predictions") because a balanced question has no answer, this scorer
counts it as wrong and reports ``unanswered`` (so a ``MAX_QUESTIONS`` smoke run scores against the whole
split); the official accuracy is the figure with ``unanswered == 0``. An answer whose id is not in the
question file is an error (wrong question file). Printed and written beside the result file as
``<result stem>.scores.json``, headed by ``"benchmark": "gqa"`` and ``"headline": "accuracy_percent"``
(see :data:`BENCHMARK`).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path
from typing import Any

from llava.eval.benchmarks import SHORT_ANSWER_SUFFIX, Benchmark, register
from llava.eval.io import iter_numbered_jsonl, read_json, write_json, write_scores

TIER = "testdev_balanced"
PREDICTIONS_NAME = f"{TIER}_predictions.json"
OPEN_STRUCTURAL_TYPE = "query"


def normalize_prediction(text: str) -> str:
    """Upstream's ``convert_gqa_for_eval.py`` rule: drop every trailing period, then lower-case."""
    return text.rstrip(".").lower()


def read_predictions(result_file: str | Path) -> list[dict[str, str]]:
    """``[{"questionId", "prediction"}]`` of the answers in ``result_file``, in file order."""
    predictions = []
    for line_number, answer in iter_numbered_jsonl(result_file):
        if "question_id" not in answer or "text" not in answer:
            raise ValueError(f"{result_file}:{line_number}: an answer line needs question_id and text")
        predictions.append(
            {"questionId": str(answer["question_id"]), "prediction": normalize_prediction(answer["text"])}
        )
    return predictions


def _percent(values: list[int]) -> float:
    return 100 * sum(values) / len(values) if values else 0.0


def _by_type(groups: dict[str, list[int]]) -> dict[str, dict[str, Any]]:
    return {
        name: {"accuracy_percent": _percent(values), "count": len(values)}
        for name, values in sorted(groups.items())
    }


def score_predictions(questions: dict[str, dict], predictions: list[dict[str, str]]) -> dict[str, Any]:
    """GQA's accuracy figures of ``predictions`` over the balanced questions of ``questions``."""
    by_id = {p["questionId"]: p["prediction"] for p in predictions}
    unknown = [qid for qid in by_id if qid not in questions]
    if unknown:
        raise KeyError(
            f"{len(unknown)} answered question ids are not in the question file, e.g. {unknown[:5]}"
        )
    overall: list[int] = []
    binary: list[int] = []
    open_: list[int] = []
    structural: dict[str, list[int]] = defaultdict(list)
    semantic: dict[str, list[int]] = defaultdict(list)
    unanswered = 0
    for qid, question in questions.items():
        if not question.get("isBalanced", True):
            continue
        if qid not in by_id:
            unanswered += 1
        score = int(by_id.get(qid) == question["answer"])
        types = question.get("types") or {}
        overall.append(score)
        if "structural" in types:
            structural[types["structural"]].append(score)
            (open_ if types["structural"] == OPEN_STRUCTURAL_TYPE else binary).append(score)
        if "semantic" in types:
            semantic[types["semantic"]].append(score)
    return {
        "accuracy_percent": _percent(overall),
        "correct": sum(overall),
        "count": len(overall),
        "unanswered": unanswered,
        "binary_percent": _percent(binary),
        "binary_count": len(binary),
        "open_percent": _percent(open_),
        "open_count": len(open_),
        "structural_types": _by_type(structural),
        "semantic_types": _by_type(semantic),
    }


def eval_gqa(
    question_file: str | Path, result_file: str | Path, predictions_file: str | Path | None = None
) -> dict[str, Any]:
    """Write the predictions file and return the figures (see the module docstring)."""
    predictions = read_predictions(result_file)
    predictions_file = Path(predictions_file or Path(result_file).with_name(PREDICTIONS_NAME))
    write_json(predictions_file, predictions, indent=None)
    scores = score_predictions(read_json(question_file), predictions)
    scores["predictions_file"] = str(predictions_file)
    return scores


BENCHMARK = register(
    Benchmark(
        name="gqa",
        column="GQA",
        metric="accuracy_percent",
        metric_name="GQA's official accuracy x100 on testdev-balanced (eval.py 'Accuracy'): exact match of "
        "the prediction (trailing periods stripped, lower-cased) with the answer of each balanced question "
        "(12,578); an unanswered question counts as wrong",
        runner="llava.eval.model_vqa_loader",
        scorer="llava.eval.eval_gqa",
        script="gqa.sh",
        prompt_suffix=SHORT_ANSWER_SUFFIX,
        parse_answer=normalize_prediction,
        fixed_answers_stem="merge",
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--question-file", required=True, help="GQA's testdev_balanced_questions.json")
    parser.add_argument("--result-file", required=True, help="the model's answers (JSONL, merge.jsonl)")
    parser.add_argument(
        "--predictions-file",
        default=None,
        help=f"where to write GQA's predictions list (default: {PREDICTIONS_NAME} beside the result file)",
    )
    args = parser.parse_args(argv)
    scores = BENCHMARK.stamp(eval_gqa(args.question_file, args.result_file, args.predictions_file))
    print(f"Binary: {scores['binary_percent']:.2f}%\nOpen: {scores['open_percent']:.2f}%")
    print(f"Accuracy: {scores['accuracy_percent']:.2f}% ({scores['correct']}/{scores['count']})")
    for title, key in (("structural type", "structural_types"), ("semantic type", "semantic_types")):
        print(f"Accuracy / {title}:")
        for name, figures in scores[key].items():
            print(f"  {name}: {figures['accuracy_percent']:.2f}% ({figures['count']} questions)")
    if scores["unanswered"]:
        print(
            f"warning: {scores['unanswered']} balanced questions have no answer and count as wrong "
            "(GQA's eval.py refuses such a predictions file)"
        )
    print(f"predictions written to {scores['predictions_file']}")
    print(f"scores written to {write_scores(args.result_file, scores)}")
    return scores


if __name__ == "__main__":
    main()
