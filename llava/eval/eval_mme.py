"""Convert LLaVA's MME answers to MME's result layout and score them (see docs/Evaluation.md).

Usage::

    python -m llava.eval.eval_mme --mme-dir playground/data/eval/MME/MME_Benchmark_release_version \\
        --result-file playground/data/eval/MME/answers/llava-v1.5-13b.jsonl [--output-dir O]

Conversion. ``--result-file`` holds ``model_vqa_loader`` answers whose ``question_id`` is
``<category>/<path of the image>`` (``artwork/images/14777.jpg``, ``code_reasoning/0020.png``).
The ground truth comes from the MME release folder ``--mme-dir``: per category either
``<category>/questions_answers_YN/<image stem>.txt`` or ``<category>/<image stem>.txt``, each line
``question<TAB>answer``. The LLaVA suffix is removed from the answer's prompt and
``" Please answer yes or no."`` appended (if that question is not in the ground truth, the
double-space variant ``"  Please answer yes or no."`` is tried). For each category the scorer
writes ``<output-dir>/<category>.txt`` with ``image<TAB>question<TAB>gt<TAB>prediction`` lines, the
input of MME's own ``eval_tool/calculation.py`` (tabs and line breaks inside a prediction become
spaces). ``--output-dir`` defaults to ``<result folder>/<result stem>_mme``.

Scoring (MME's ``calculation.py`` rules). The prediction is lower-cased; it is "yes"/"no" when it
equals one, else "yes" when its first 4 characters contain "yes", else "no" when they contain
"no", else "other". Per subtask: ``acc`` = fraction of questions right, ``acc_plus`` = fraction of
images whose questions (two per image in MME) are all right, ``score`` = 100·acc + 100·acc_plus.
``perception_score`` sums the 10 perception subtasks (max 2000; the number LLaVA-1.5 publishes
as MME) and ``cognition_score`` the 4 cognition subtasks (max 800). Printed and written beside the
result file as ``<result stem>.scores.json``, headed by ``"benchmark": "mme"`` and
``"headline": "perception_score"`` (see :data:`BENCHMARK`).
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from llava.eval.benchmarks import SHORT_ANSWER_SUFFIX, Benchmark, register
from llava.eval.io import read_jsonl, write_scores

LLAVA_SUFFIX = SHORT_ANSWER_SUFFIX
MME_SUFFIX = " Please answer yes or no."
MME_SUFFIX_DOUBLE_SPACE = "  Please answer yes or no."
PERCEPTION = (
    "existence",
    "count",
    "position",
    "color",
    "posters",
    "celebrity",
    "scene",
    "landmark",
    "artwork",
    "OCR",
)
COGNITION = ("commonsense_reasoning", "numerical_calculation", "text_translation", "code_reasoning")


def ground_truth_file(mme_dir: Path, question_id: str) -> Path:
    """The ``question<TAB>answer`` file that belongs to the image named by ``question_id``."""
    category, image_name = question_id.split("/")[0], question_id.split("/")[-1]
    qa_dir = mme_dir / category / "questions_answers_YN"
    if not qa_dir.is_dir():
        qa_dir = mme_dir / category
    return qa_dir / (Path(image_name).stem + ".txt")


def read_ground_truth(path: Path) -> dict[str, str]:
    """``{question: answer}`` from one MME ground-truth file."""
    pairs = {}
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            fields = line.strip().split("\t")
            if len(fields) != 2:
                raise ValueError(f"{path}:{line_number}: expected 'question<TAB>answer'")
            pairs[fields[0]] = fields[1]
    return pairs


def mme_question(prompt: str, ground_truth: dict[str, str]) -> str:
    """Turn a LLaVA prompt back into the MME question as the ground-truth file spells it."""
    question = prompt.replace(LLAVA_SUFFIX, "").strip()
    for candidate in (question + MME_SUFFIX, question + MME_SUFFIX_DOUBLE_SPACE):
        if candidate in ground_truth:
            return candidate
    raise KeyError(f"question {question!r} + ' Please answer yes or no.' is not in the ground truth")


def convert_answers(
    mme_dir: str | Path, result_file: str | Path
) -> dict[str, list[tuple[str, str, str, str]]]:
    """``{category: [(image, question, gt, prediction), ...]}`` in answer-file order."""
    mme_dir = Path(mme_dir)
    cache: dict[Path, dict[str, str]] = {}
    rows: dict[str, list[tuple[str, str, str, str]]] = defaultdict(list)
    for answer in read_jsonl(result_file):
        question_id = answer["question_id"]
        gt_file = ground_truth_file(mme_dir, question_id)
        if gt_file not in cache:
            cache[gt_file] = read_ground_truth(gt_file)
        try:
            question = mme_question(answer["prompt"], cache[gt_file])
        except KeyError as err:
            raise KeyError(f"{result_file}: {question_id}: {err.args[0]} ({gt_file})") from err
        prediction = " ".join(answer["text"].replace("\t", " ").splitlines())
        image = question_id.split("/")[-1]
        rows[question_id.split("/")[0]].append((image, question, cache[gt_file][question], prediction))
    return dict(rows)


def write_mme_results(rows: dict[str, list[tuple[str, str, str, str]]], output_dir: str | Path) -> Path:
    """Write one ``<category>.txt`` per category (MME ``eval_tool`` input) and return the folder."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    for category, category_rows in rows.items():
        with (output_dir / f"{category}.txt").open("w", encoding="utf-8") as handle:
            handle.writelines("\t".join(row) + "\n" for row in category_rows)
    return output_dir


def read_mme_results(
    results_dir: str | Path, categories: Iterable[str] | None = None
) -> dict[str, list[tuple[str, str, str, str]]]:
    """Read back ``<category>.txt`` of an MME results folder (every one, or those of ``categories``)."""
    results_dir = Path(results_dir)
    if categories is None:
        paths = sorted(results_dir.glob("*.txt"))
    else:
        paths = [results_dir / f"{category}.txt" for category in categories]
    rows = {}
    for path in paths:
        category_rows = []
        with path.open(encoding="utf-8") as handle:
            for line_number, line in enumerate(handle, start=1):
                fields = line.rstrip("\n").split("\t")
                if len(fields) != 4:
                    raise ValueError(f"{path}:{line_number}: expected image, question, gt, prediction")
                category_rows.append(tuple(fields))
        rows[path.stem] = category_rows
    return rows


def parse_yes_no_other(prediction: str) -> str:
    """MME's reading of a prediction: "yes", "no" or "other"."""
    prediction = prediction.lower()
    if prediction in ("yes", "no"):
        return prediction
    prefix = prediction[:4]
    if "yes" in prefix:
        return "yes"
    if "no" in prefix:
        return "no"
    return "other"


def score_subtask(rows: list[tuple[str, str, str, str]]) -> dict[str, float | int]:
    """``acc``, ``acc_plus`` and ``score`` = 100·acc + 100·acc_plus of one subtask."""
    right_by_image: dict[str, list[bool]] = defaultdict(list)
    for image, _question, gt, prediction in rows:
        gt = gt.lower()
        if gt not in ("yes", "no"):
            raise ValueError(f"ground truth {gt!r} for {image} is neither yes nor no")
        right_by_image[image].append(parse_yes_no_other(prediction) == gt)
    right = [ok for answers in right_by_image.values() for ok in answers]
    acc = sum(right) / len(right)
    acc_plus = sum(all(answers) for answers in right_by_image.values()) / len(right_by_image)
    return {
        "questions": len(right),
        "images": len(right_by_image),
        "other_answers": sum(parse_yes_no_other(row[3]) == "other" for row in rows),
        "acc": acc,
        "acc_plus": acc_plus,
        "score": 100 * acc + 100 * acc_plus,
    }


def score_mme(rows: dict[str, list[tuple[str, str, str, str]]]) -> dict:
    """Per-subtask figures and the Perception / Cognition totals."""
    unknown = sorted(set(rows) - set(PERCEPTION) - set(COGNITION))
    if unknown:
        raise ValueError(f"unknown MME subtasks {unknown}")
    subtasks = {name: score_subtask(rows[name]) for name in PERCEPTION + COGNITION if rows.get(name)}
    scores: dict = {"subtasks": subtasks}
    for group, names in (("perception", PERCEPTION), ("cognition", COGNITION)):
        scores[f"{group}_score"] = sum(subtasks[name]["score"] for name in names if name in subtasks)
        scores[f"{group}_missing_subtasks"] = [name for name in names if name not in subtasks]
    return scores


def print_scores(scores: dict) -> None:
    """Print the figures like MME's ``calculation.py``."""
    for group, names in (("Perception", PERCEPTION), ("Cognition", COGNITION)):
        print(f"=========== {group} ===========")
        print(f"total score: {scores[f'{group.lower()}_score']:.2f}")
        for name in names:
            if name in scores["subtasks"]:
                figures = scores["subtasks"][name]
                print(
                    f"\t {name}  score: {figures['score']:.2f} (acc {figures['acc']:.4f}, acc+ {figures['acc_plus']:.4f})"
                )
        missing = scores[f"{group.lower()}_missing_subtasks"]
        if missing:
            print(f"\t missing subtasks (not in the total): {', '.join(missing)}")


def default_output_dir(result_file: str | Path) -> Path:
    """``<result folder>/<result stem>_mme``."""
    result_file = Path(result_file)
    return result_file.with_name(result_file.stem + "_mme")


def eval_mme(mme_dir: str | Path, result_file: str | Path, output_dir: str | Path | None = None) -> dict:
    """Convert ``result_file`` into MME result files, then score what was written."""
    output_dir = Path(output_dir) if output_dir else default_output_dir(result_file)
    converted = convert_answers(mme_dir, result_file)
    write_mme_results(converted, output_dir)
    return score_mme(read_mme_results(output_dir, converted))


BENCHMARK = register(
    Benchmark(
        name="mme",
        column="MME",
        metric="perception_score",
        metric_name="Perception total: sum over the 10 perception subtasks of 100*acc + 100*acc+ "
        "(max 2000; a missing subtask adds 0)",
        runner="llava.eval.model_vqa_loader",
        scorer="llava.eval.eval_mme",
        script="mme.sh",
        table1=4,
        prompt_suffix=SHORT_ANSWER_SUFFIX,
        parse_answer=parse_yes_no_other,
        legacy_keys=("perception_score",),
    )
)


def main(argv: list[str] | None = None) -> dict:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--mme-dir", required=True, help="MME_Benchmark_release_version folder (ground truth)"
    )
    parser.add_argument("--result-file", required=True, help="the model's answers (JSONL)")
    parser.add_argument("--output-dir", default=None, help="where <category>.txt go (default: <stem>_mme)")
    args = parser.parse_args(argv)
    scores = BENCHMARK.stamp(eval_mme(args.mme_dir, args.result_file, args.output_dir))
    print_scores(scores)
    print(f"scores written to {write_scores(args.result_file, scores)}")
    return scores


if __name__ == "__main__":
    main()
