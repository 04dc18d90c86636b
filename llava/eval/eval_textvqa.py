"""Score TextVQA val answers the way LLaVA-1.5 reports them (see docs/Evaluation.md).

Usage::

    python -m llava.eval.eval_textvqa --annotation-file playground/data/eval/textvqa/TextVQA_0.5.1_val.json \\
        --result-file playground/data/eval/textvqa/answers/llava-v1.5-13b.jsonl

Each answer is matched to its annotation by ``(image_id, question.lower())``: ``question_id`` of
the answer holds the image id, and the question is recovered from the answer's ``prompt`` by the
strict parser :func:`question_from_prompt` (an answer whose prompt has another layout is an
error naming the result file and line). The prediction and the 10 ground-truth answers are
normalised with :class:`~llava.eval.m4c_evaluator.EvalAIAnswerProcessor` and scored with the VQA
soft accuracy (:class:`~llava.eval.m4c_evaluator.TextVQAAccuracyEvaluator`).

Printed and written beside the result file as ``<result stem>.scores.json``:
``soft_accuracy_percent`` (mean soft accuracy ×100, the published TextVQA number) and ``count``,
headed by ``"benchmark": "textvqa"`` and ``"headline": "soft_accuracy_percent"`` (see :data:`BENCHMARK`).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from llava.eval.benchmarks import SHORT_ANSWER_SUFFIX, Benchmark, register
from llava.eval.io import iter_numbered_jsonl, read_json, write_scores
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor, TextVQAAccuracyEvaluator

OCR_MARKER = "Reference OCR token: "


def question_from_prompt(prompt: str) -> str:
    """Recover the lower-cased question from a TextVQA prompt.

    * 3 lines, one holding ``"Reference OCR token: "``: line 1, or line 2 when the prompt starts
      with the OCR line;
    * 2 lines: line 1;
    * anything else raises ``ValueError``.
    """
    lines = prompt.split("\n")
    if len(lines) == 3 and OCR_MARKER in prompt:
        question = lines[1] if prompt.startswith(OCR_MARKER.rstrip()) else lines[0]
    elif len(lines) == 2:
        question = lines[0]
    else:
        raise ValueError(
            f"prompt has {len(lines)} lines; expected 'question\\n{OCR_MARKER}...\\nsuffix' or 'question\\nsuffix'"
        )
    return question.lower()


def load_annotations(annotation_file: str | Path) -> dict[tuple[str, str], dict]:
    """``{(image_id, lower-cased question): annotation}`` from ``TextVQA_0.5.1_val.json``."""
    data = read_json(annotation_file)["data"]
    return {(entry["image_id"], entry["question"].lower()): entry for entry in data}


def build_pred_list(annotation_file: str | Path, result_file: str | Path) -> list[dict]:
    """Pair every answer with its ground-truth answers (``pred_answer`` / ``gt_answers`` entries)."""
    annotations = load_annotations(annotation_file)
    pred_list = []
    for line_number, answer in iter_numbered_jsonl(result_file):
        try:
            key = (answer["question_id"], question_from_prompt(answer["prompt"]))
        except ValueError as err:
            raise ValueError(f"{result_file}:{line_number}: {err}") from err
        if key not in annotations:
            raise KeyError(f"{result_file}:{line_number}: no annotation for {key!r}")
        pred_list.append({"pred_answer": answer["text"], "gt_answers": annotations[key]["answers"]})
    return pred_list


def eval_textvqa(annotation_file: str | Path, result_file: str | Path) -> dict:
    """Mean VQA soft accuracy ×100 of ``result_file`` against the TextVQA annotations."""
    pred_list = build_pred_list(annotation_file, result_file)
    accuracy = TextVQAAccuracyEvaluator().eval_pred_list(pred_list)
    return {"count": len(pred_list), "soft_accuracy_percent": 100 * accuracy}


BENCHMARK = register(
    Benchmark(
        name="textvqa",
        column="TextVQA",
        metric="soft_accuracy_percent",
        metric_name="mean VQA soft accuracy x100 over the val questions (prompts with the OCR tokens)",
        runner="llava.eval.model_vqa_loader",
        scorer="llava.eval.eval_textvqa",
        script="textvqa.sh",
        table1=2,
        prompt_suffix=SHORT_ANSWER_SUFFIX,
        parse_answer=EvalAIAnswerProcessor(),
        legacy_keys=("soft_accuracy_percent",),
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--annotation-file", required=True, help="TextVQA_0.5.1_val.json")
    parser.add_argument("--result-file", required=True, help="the model's answers (JSONL)")
    args = parser.parse_args(argv)
    scores = BENCHMARK.stamp(eval_textvqa(args.annotation_file, args.result_file))
    print(f"Samples: {scores['count']}\nAccuracy: {scores['soft_accuracy_percent']:.2f}%")
    print(f"scores written to {write_scores(args.result_file, scores)}")
    return scores


if __name__ == "__main__":
    main()
