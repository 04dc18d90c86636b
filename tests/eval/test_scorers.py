"""Tests of the evaluation scorers (POPE, ScienceQA, TextVQA, MME, MMBench and VQAv2 converters).

Golden tests re-score the official ``llava-v1.5-13b`` answers shipped in
``/work/shared/fixtures/upstream_eval`` and skip when that folder is absent; the other tests use
small hand-checked inputs.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import REPO_ROOT, SHARED, needs_shared

from llava.eval import benchmarks, eval_mme, eval_pope, eval_science_qa, eval_textvqa
from llava.eval.benchmarks import Benchmark
from llava.eval.io import JSONLError, read_jsonl, scores_path, write_scores
from llava.eval.m4c_evaluator import EvalAIAnswerProcessor, TextVQAAccuracyEvaluator
from llava.eval.vqav2 import build_submission

FIXTURES = SHARED / "fixtures" / "upstream_eval"

needs_fixtures = needs_shared(FIXTURES, "the official LLaVA-1.5-13B answers")


def write_lines(path: Path, records: list[dict]) -> Path:
    """Write ``records`` as JSON Lines."""
    path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return path


# ---------------------------------------------------------------- golden tests (official 13B answers)


@needs_fixtures
def test_pope_golden_f1_per_split_and_mean(tmp_path: Path) -> None:
    pope = FIXTURES / "pope"
    result_file = tmp_path / "llava-v1.5-13b.jsonl"
    result_file.write_bytes((pope / "answers" / "llava-v1.5-13b.jsonl").read_bytes())
    scores = eval_pope.main(
        [
            "--annotation-dir",
            str(pope / "coco"),
            "--question-file",
            str(pope / "llava_pope_test.jsonl"),
            "--result-file",
            str(result_file),
        ]
    )
    f1 = {category: round(figures["f1"], 4) for category, figures in scores["categories"].items()}
    assert f1 == {"adversarial": 0.8446, "popular": 0.8625, "random": 0.8714}
    counts = {category: figures["count"] for category, figures in scores["categories"].items()}
    assert counts == {"adversarial": 3000, "popular": 3000, "random": 2910}
    assert round(scores["mean_f1_percent"], 2) == 85.95
    assert round(scores["mean_f1_percent"], 1) == 85.9
    assert round(scores["mean_accuracy_percent"], 2) == 86.98
    assert json.loads((tmp_path / "llava-v1.5-13b.scores.json").read_text()) == scores


@needs_fixtures
def test_science_qa_golden_img_and_overall_accuracy(tmp_path: Path) -> None:
    sqa = FIXTURES / "scienceqa"
    result_file = tmp_path / "llava-v1.5-13b.jsonl"
    result_file.write_bytes((sqa / "answers" / "llava-v1.5-13b.jsonl").read_bytes())
    output_file, output_result = tmp_path / "output.json", tmp_path / "result.json"
    scores = eval_science_qa.main(
        [
            "--base-dir",
            str(sqa),
            "--result-file",
            str(result_file),
            "--output-file",
            str(output_file),
            "--output-result",
            str(output_result),
        ]
    )
    assert (scores["img_correct"], scores["img_count"]) == (1445, 2017)
    assert round(scores["img_accuracy_percent"], 2) == 71.64
    assert (scores["correct"], scores["count"]) == (3155, 4241)
    assert round(scores["accuracy_percent"], 2) == 74.39
    official = json.loads((sqa / "answers" / "llava-v1.5-13b_result.json").read_text())
    ours = json.loads(output_result.read_text())
    assert list(ours) == list(official)
    assert ours["results"] == official["results"]
    assert list(ours["results"]) == list(official["results"])  # same (split) order
    assert ours == official
    records = json.loads(output_file.read_text())
    assert len(records) == 4241 and sum(record["correct"] for record in records) == 3155


def _cells(path: Path) -> list[tuple]:
    """Every cell of the first sheet as ``(value, type name)``, row by row."""
    openpyxl = pytest.importorskip("openpyxl")
    sheet = openpyxl.load_workbook(path).active
    return [tuple((cell.value, type(cell.value).__name__) for cell in row) for row in sheet.iter_rows()]


@needs_fixtures
def test_mmbench_upload_sheet_equals_official_cell_for_cell(tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("openpyxl")
    mmbench = FIXTURES / "mmbench"
    official = mmbench / "answers_upload" / "llava-v1.5-13b.xlsx"
    # Stand-in question TSV from the official sheet's own columns plus the columns that get dropped.
    questions = pd.read_excel(official).drop(columns=["prediction"])
    questions.insert(2, "hint", None)
    questions["category"] = "stand-in"
    questions["source"] = "stand-in"
    questions["image"] = (
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="
    )
    questions["comment"] = None
    questions["l2-category"] = "stand-in"
    tsv = tmp_path / "mmbench_dev_20230712.tsv"
    questions.to_csv(tsv, sep="\t", index=False)
    upload_dir = tmp_path / "upload"
    subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "convert_mmbench_for_submission.py"),
            "--annotation-file",
            str(tsv),
            "--result-dir",
            str(mmbench / "answers"),
            "--upload-dir",
            str(upload_dir),
            "--experiment",
            "llava-v1.5-13b",
        ],
        check=True,
        cwd=REPO_ROOT,
    )
    ours = _cells(upload_dir / "llava-v1.5-13b.xlsx")
    expected = _cells(official)
    assert [value for value, _ in ours[0]] == [
        "index",
        "question",
        "A",
        "B",
        "C",
        "D",
        "prediction",
        "answer",
        "split",
    ]
    assert len(ours) == len(expected) == 4378
    assert ours == expected


@needs_fixtures
def test_textvqa_real_prompts_parse_to_their_questions() -> None:
    textvqa = FIXTURES / "textvqa"
    questions = read_jsonl(textvqa / "llava_textvqa_val_v051_ocr.jsonl")
    answers = read_jsonl(textvqa / "answers" / "llava-v1.5-13b.jsonl")
    assert len(answers) == len(questions) == 5000
    # question_id is the image id (several questions per image); the answer file keeps question order.
    for question, answer in zip(questions, answers, strict=True):
        assert answer["question_id"] == question["question_id"]
        expected = question["text"].split("\n")[0].lower()
        assert eval_textvqa.question_from_prompt(answer["prompt"]) == expected
    keys = {(a["question_id"], eval_textvqa.question_from_prompt(a["prompt"])) for a in answers}
    assert len(keys) == 5000  # the annotation key is unique per question


@needs_fixtures
def test_mme_converter_handles_the_real_question_ids(tmp_path: Path) -> None:
    """A stand-in ground truth in MME's two folder layouts, answering "Yes" then "No" per image."""
    mme_dir = tmp_path / "MME_Benchmark_release_version"
    answers = read_jsonl(FIXTURES / "mme" / "answers" / "llava-v1.5-13b.jsonl")
    per_file: dict[Path, list[str]] = {}
    for answer in answers:
        category, *middle, image = answer["question_id"].split("/")
        qa_folder = mme_dir / category / ("questions_answers_YN" if middle == ["images"] else "")
        gt_file = qa_folder / (Path(image).stem + ".txt")
        question = answer["prompt"].replace(eval_mme.LLAVA_SUFFIX, "").strip()
        gt = "Yes" if gt_file not in per_file else "No"
        per_file.setdefault(gt_file, []).append(f"{question} Please answer yes or no.\t{gt}\n")
    for gt_file, lines in per_file.items():
        gt_file.parent.mkdir(parents=True, exist_ok=True)
        gt_file.write_text("".join(lines), encoding="utf-8")
    assert (mme_dir / "artwork" / "questions_answers_YN").is_dir()
    assert (mme_dir / "code_reasoning" / "0020.txt").is_file()
    result_file = tmp_path / "llava-v1.5-13b.jsonl"
    result_file.write_bytes((FIXTURES / "mme" / "answers" / "llava-v1.5-13b.jsonl").read_bytes())
    scores = eval_mme.eval_mme(mme_dir, result_file)
    assert len(scores["subtasks"]) == 14
    assert sum(figures["questions"] for figures in scores["subtasks"].values()) == 2374
    assert scores["perception_missing_subtasks"] == scores["cognition_missing_subtasks"] == []
    assert all(figures["questions"] == 2 * figures["images"] for figures in scores["subtasks"].values())
    assert (tmp_path / "llava-v1.5-13b_mme" / "artwork.txt").read_text().count("\n") == 400


# ---------------------------------------------------------------- EvalAI normaliser


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),
        ("none", "0"),
        ("ten dogs", "10 dogs"),
        ("The dog", "dog"),
        ("a cat and an owl", "cat and owl"),
        ("Yes, two?", "yes 2"),
        ("red\nand\tblue", "red and blue"),
        ("1,000", "1000"),  # the comma is deleted before the punctuation step
        ("black-and-white", "black and white"),  # '-' never next to a space: replaced by a space
        ("x - y-z", "x yz"),  # '- ' occurs in the input: every '-' is deleted
        ("(t-shirt)", "t shirt"),
        # Decided on the input: '/' becomes a space, and so does '-' although the rewritten text
        # "x -y-z" has it next to a space (a scorer deciding on the rewritten text gives "x yz").
        ("x/-y-z", "x y z"),
        ("t-shirt / jeans", "t shirt jeans"),
        ("hello!", "hello"),
        ("3.5", "3.5"),  # a period followed by a digit stays
        ("1.", "1"),  # the broken look-behind: a period after a digit is still deleted
        ("e.g.", "eg"),
        ("mr. smith", "mr smith"),
        ("dont", "don't"),
        ("cant", "can't"),
        ("couldnt've", "couldn't've"),
        ("couldn'tve", "couldn't've"),
        ("yall", "y'all"),
        ("somebody'd", "somebodyd"),  # reversed entry of the standard table
        ("it's", "it 's"),
        ("Im", "im"),  # the table's capitalised keys never match lower-cased text
    ],
)
def test_evalai_answer_processor(raw: str, expected: str) -> None:
    assert EvalAIAnswerProcessor()(raw) == expected


def test_evalai_period_strip_removes_at_most_32_periods() -> None:
    # re.UNICODE (= 32) lands in re.sub's count argument: of 40 periods, 8 survive.
    assert EvalAIAnswerProcessor()("." * 40) == "." * 8
    # 33 periods, each after an "x": the first 32 go, the last one stays.
    assert EvalAIAnswerProcessor()("x." * 33) == "x" * 33 + "."


def test_contraction_table_entries() -> None:
    table = EvalAIAnswerProcessor.CONTRACTIONS
    assert table["dont"] == "don't" and table["wont"] == "won't" and table["oclock"] == "o'clock"
    assert table["hed've"] == table["he'dve"] == "he'd've"
    assert table["twas"] == "'twas"
    assert "hedve" not in table  # only one apostrophe of a double contraction may be missing
    assert "well" not in table and "its" not in table and "wed" not in table


# ---------------------------------------------------------------- TextVQA soft accuracy


def test_textvqa_soft_accuracy_by_hand() -> None:
    evaluator = TextVQAAccuracyEvaluator()
    gt = ["cat", "cat"] + ["dog"] * 8
    # "cat": leaving out one of the 2 "cat" answers leaves 1 match -> min(1, 1/3) = 1/3 (2 subsets);
    # leaving out one of the 8 "dog" answers leaves 2 matches -> 2/3 (8 subsets).
    # Mean = (2 * 1/3 + 8 * 2/3) / 10 = (2/3 + 16/3) / 10 = 6/10 = 0.6.
    assert evaluator.score_prediction("cat", gt) == pytest.approx(0.6)
    # "dog": every subset keeps at least 7 matches -> 1.
    assert evaluator.score_prediction("Dog.", gt) == pytest.approx(1.0)
    # 3 matches: 3 subsets keep 2 (2/3 each), 7 keep 3 (1 each): (3 * 2/3 + 7) / 10 = 0.9.
    assert evaluator.score_prediction("two", ["2"] * 3 + ["x"] * 7) == pytest.approx(0.9)
    # 1 match: 1 subset keeps 0, 9 keep 1 (1/3 each): 9 * 1/3 / 10 = 0.3.
    assert evaluator.score_prediction("a sign", ["sign"] + ["x"] * 9) == pytest.approx(0.3)
    assert evaluator.score_prediction("bird", gt) == 0.0
    pred_list = [{"pred_answer": "cat", "gt_answers": gt}, {"pred_answer": "bird", "gt_answers": gt}]
    assert evaluator.eval_pred_list(pred_list) == pytest.approx(0.3)


def test_textvqa_prompt_parser() -> None:
    assert (
        eval_textvqa.question_from_prompt("What Brand?\nReference OCR token: A, B\nAnswer briefly.")
        == "what brand?"
    )
    assert (
        eval_textvqa.question_from_prompt("Reference OCR token: A\nWhat Brand?\nAnswer briefly.")
        == "what brand?"
    )
    assert eval_textvqa.question_from_prompt("What Brand?\nAnswer briefly.") == "what brand?"
    with pytest.raises(ValueError, match="4 lines"):
        eval_textvqa.question_from_prompt("a\nb\nc\nd")
    with pytest.raises(ValueError, match="3 lines"):
        eval_textvqa.question_from_prompt("What?\nno ocr here\nAnswer briefly.")


def test_textvqa_end_to_end(tmp_path: Path) -> None:
    annotation = tmp_path / "TextVQA_0.5.1_val.json"
    data = [
        {"image_id": "img1", "question": "What Brand?", "answers": ["nike"] * 10},
        {"image_id": "img2", "question": "What number?", "answers": ["2", "2"] + ["3"] * 8},
    ]
    annotation.write_text(json.dumps({"data": data}))
    suffix = "Answer the question using a single word or phrase."
    result_file = write_lines(
        tmp_path / "answers.jsonl",
        [
            {
                "question_id": "img1",
                "prompt": f"What brand?\nReference OCR token: NIKE\n{suffix}",
                "text": "Nike",
            },
            {"question_id": "img2", "prompt": f"what number?\n{suffix}", "text": "two"},
        ],
    )
    scores = eval_textvqa.main(["--annotation-file", str(annotation), "--result-file", str(result_file)])
    assert scores["count"] == 2
    assert scores["soft_accuracy_percent"] == pytest.approx(100 * (1.0 + 0.6) / 2)
    assert json.loads(scores_path(result_file).read_text()) == scores

    bad = write_lines(
        tmp_path / "bad.jsonl",
        [
            {"question_id": "img1", "prompt": f"What brand?\n{suffix}", "text": "x"},
            {"question_id": "img1", "prompt": "one line", "text": "x"},
        ],
    )
    with pytest.raises(ValueError, match=r"bad\.jsonl:2: prompt has 1 lines"):
        eval_textvqa.eval_textvqa(annotation, bad)


# ---------------------------------------------------------------- POPE


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes", "yes"),
        ("No", "no"),
        ("No, there is not.", "no"),
        ("There is no dog in the image.", "no"),
        ("Yes. There is no cat.", "yes"),  # only the first sentence counts
        ("It is not.", "no"),
        ("NO", "yes"),  # only "No", "no" and "not" are negative words
        ("Nope", "yes"),
    ],
)
def test_pope_answer_parsing(text: str, expected: str) -> None:
    assert eval_pope.parse_yes_no(text) == expected


def test_pope_positional_matching_and_figures(tmp_path: Path) -> None:
    annotation_dir = tmp_path / "coco"
    annotation_dir.mkdir()
    write_lines(
        annotation_dir / "coco_pope_random.json", [{"label": lab} for lab in ("yes", "yes", "no", "no")]
    )
    write_lines(annotation_dir / "coco_pope_popular.json", [{"label": "yes"}, {"label": "no"}])
    questions = [{"question_id": qid, "category": "random"} for qid in (10, 11, 12, 13)]
    questions += [{"question_id": qid, "category": "popular"} for qid in (20, 21)]
    question_file = write_lines(tmp_path / "questions.jsonl", questions)
    # Answer-file order decides which label an answer meets, not the question id.
    answers = [
        {"question_id": 13, "text": "Yes"},  # label yes -> TP
        {"question_id": 20, "text": "No"},  # popular label yes -> FN
        {"question_id": 12, "text": "No"},  # label yes -> FN
        {"question_id": 11, "text": "Yes"},  # label no -> FP
        {"question_id": 21, "text": "No"},  # popular label no -> TN
        {"question_id": 10, "text": "No, not."},  # label no -> TN
    ]
    scores = eval_pope.eval_pope(annotation_dir, question_file, write_lines(tmp_path / "a.jsonl", answers))
    random = scores["categories"]["random"]
    assert (random["tp"], random["fp"], random["tn"], random["fn"]) == (1, 1, 1, 1)
    assert random["precision"] == random["recall"] == random["f1"] == random["accuracy"] == 0.5
    assert random["yes_ratio"] == 0.5
    popular = scores["categories"]["popular"]
    assert (popular["tp"], popular["fp"], popular["tn"], popular["fn"]) == (0, 0, 1, 1)
    assert popular["f1"] == 0.0 and popular["yes_ratio"] == 0.0
    assert scores["mean_f1_percent"] == pytest.approx(25.0)

    short = write_lines(tmp_path / "short.jsonl", answers[:-1])
    with pytest.raises(ValueError, match="'random': 3 answers .* but 4 labels"):
        eval_pope.eval_pope(annotation_dir, question_file, short)


# ---------------------------------------------------------------- ScienceQA


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("C. increased", "C"),
        ("C.", "FAILED"),  # shorter than 3 characters after the letter check
        ("Because... The answer is D.", "D"),
        ("The answer is A. The answer is B.", "FAILED"),  # more than one match
        ("F", "FAILED"),
        ("I am not sure", "FAILED"),
    ],
)
def test_science_qa_letter_parsing(text: str, expected: str) -> None:
    assert eval_science_qa.parse_option_letter(text) == expected


def test_science_qa_option_counting_and_range() -> None:
    prompt = "Which closing is correct?\nA. See you soon,\nJanet\nB. See You Soon,\nJanet"
    assert eval_science_qa.count_listed_options(prompt) == 2
    assert eval_science_qa.count_listed_options("<image>\nContext: A. x\nQ?\nA. a\nB. b\nC. c") == 3
    assert eval_science_qa.option_index("C", 2) == -1
    assert eval_science_qa.option_index("FAILED", 4) == -1
    assert eval_science_qa.option_index("B", 2) == 1


def test_science_qa_small_split(tmp_path: Path) -> None:
    items = [
        {
            "id": "1",
            "image": "1/image.png",
            "conversations": [
                {"from": "human", "value": "<image>\nQ1?\nA. x\nB. y"},
                {"from": "gpt", "value": "B"},
            ],
        },
        {
            "id": "2",
            "conversations": [
                {"from": "human", "value": "Q2?\nA. x\nB. y\nC. z"},
                {"from": "gpt", "value": "A"},
            ],
        },
        {
            "id": "3",
            "image": "3/image.png",
            "conversations": [
                {"from": "human", "value": "<image>\nQ3?\nA. x\nB. y"},
                {"from": "gpt", "value": "A"},
            ],
        },
    ]
    (tmp_path / "llava_test_CQM-A.json").write_text(json.dumps(items))
    (tmp_path / "pid_splits.json").write_text(json.dumps({"test": ["3", "1", "2"]}))
    answers = [
        {"question_id": "1", "prompt": "<image>\nQ1?", "text": "B. y"},
        {"question_id": "2", "prompt": "Q2?", "text": "The answer is A."},
    ]  # item 3 has no answer: FAILED
    evaluation = eval_science_qa.eval_science_qa(tmp_path, write_lines(tmp_path / "a.jsonl", answers))
    assert evaluation["result"]["results"] == {"3": -1, "1": 1, "2": 0}
    assert list(evaluation["result"]["results"]) == ["3", "1", "2"]
    scores = evaluation["scores"]
    assert (scores["correct"], scores["count"], scores["img_correct"], scores["img_count"]) == (2, 3, 1, 2)
    assert scores["img_accuracy_percent"] == 50.0
    assert scores["failed_to_parse"] == 1
    assert scores["unanswered"] == 1  # failed_to_parse counts the unanswered item too

    (tmp_path / "problems.json").write_text(
        json.dumps({pid: {"answer": 0, "choices": ["x", "y"]} for pid in ("1", "2", "3")})
    )
    with_problems = eval_science_qa.eval_science_qa(tmp_path, tmp_path / "a.jsonl")["scores"]
    assert (with_problems["correct"], with_problems["img_correct"]) == (1, 0)  # gold index 0 everywhere


# ---------------------------------------------------------------- MME


def _write_gt(path: Path, lines: list[tuple[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{question}\t{answer}\n" for question, answer in lines), encoding="utf-8")


def test_mme_tiny_folder_acc_plus_and_totals(tmp_path: Path) -> None:
    mme = tmp_path / "MME"
    # existence (flat layout): 2 images x 2 questions.
    _write_gt(
        mme / "existence" / "0001.txt",
        [
            ("Is there a dog? Please answer yes or no.", "Yes"),
            ("Is there a cat? Please answer yes or no.", "No"),
        ],
    )
    _write_gt(
        mme / "existence" / "0002.txt",
        [
            ("Is there a car? Please answer yes or no.", "Yes"),
            ("Is there a bus?  Please answer yes or no.", "No"),
        ],
    )
    # artwork (questions_answers_YN layout): 1 image.
    _write_gt(
        mme / "artwork" / "questions_answers_YN" / "10.txt",
        [
            ("Is it Baroque? Please answer yes or no.", "Yes"),
            ("Is it Gothic? Please answer yes or no.", "No"),
        ],
    )
    # code_reasoning (cognition): 1 image.
    _write_gt(
        mme / "code_reasoning" / "0003.txt",
        [("Is it python? Please answer yes or no.", "Yes"), ("Is it c++? Please answer yes or no.", "No")],
    )
    suffix = "\nAnswer the question using a single word or phrase."
    answers = [
        ("existence/0001.png", "Is there a dog?", "Yes"),
        ("existence/0001.png", "Is there a cat?", "No, there is not."),  # prefix "no, " -> no
        ("existence/0002.png", "Is there a car?", "Yes"),
        ("existence/0002.png", "Is there a bus?", "Maybe"),  # other -> wrong; needs the double-space key
        ("artwork/images/10.jpg", "Is it Baroque?", "yes, it is"),
        ("artwork/images/10.jpg", "Is it Gothic?", "Nope"),  # prefix "nope" contains "no"
        ("code_reasoning/0003.png", "Is it python?", "No"),
        ("code_reasoning/0003.png", "Is it c++?", "No"),
    ]
    result_file = write_lines(
        tmp_path / "run.jsonl",
        [{"question_id": qid, "prompt": question + suffix, "text": text} for qid, question, text in answers],
    )
    scores = eval_mme.main(["--mme-dir", str(mme), "--result-file", str(result_file)])
    existence = scores["subtasks"]["existence"]
    # 3 of 4 questions right (acc 0.75), 1 of 2 images fully right (acc+ 0.5): 75 + 50 = 125.
    assert (existence["acc"], existence["acc_plus"], existence["score"]) == (0.75, 0.5, 125.0)
    assert existence["other_answers"] == 1
    assert scores["subtasks"]["artwork"]["score"] == 200.0
    # code_reasoning: 1 of 2 right, image not fully right: 50 + 0.
    assert scores["subtasks"]["code_reasoning"]["score"] == 50.0
    assert scores["perception_score"] == 325.0 and scores["cognition_score"] == 50.0
    assert "OCR" in scores["perception_missing_subtasks"]
    written = (tmp_path / "run_mme" / "existence.txt").read_text().splitlines()
    assert written[3] == "0002.png\tIs there a bus?  Please answer yes or no.\tNo\tMaybe"
    assert json.loads((tmp_path / "run.scores.json").read_text()) == scores


def test_mme_prediction_parsing() -> None:
    assert [
        eval_mme.parse_yes_no_other(p) for p in ("YES", "no", "Yes.", "Noo", "The answer is yes", "")
    ] == [
        "yes",
        "no",
        "yes",
        "no",
        "other",
        "other",
    ]


def test_mme_unknown_question_is_an_error(tmp_path: Path) -> None:
    _write_gt(tmp_path / "mme" / "count" / "0001.txt", [("Are there two? Please answer yes or no.", "Yes")])
    result_file = write_lines(
        tmp_path / "r.jsonl", [{"question_id": "count/0001.jpg", "prompt": "Are there three?", "text": "No"}]
    )
    with pytest.raises(KeyError, match="Are there three"):
        eval_mme.eval_mme(tmp_path / "mme", result_file)


# ---------------------------------------------------------------- VQAv2 submission


def test_vqav2_submission_fills_missing_ids() -> None:
    test_questions = [{"question_id": qid} for qid in (1, 2, 3, 4)]
    answers = [{"question_id": 3, "text": "Two"}, {"question_id": 1, "text": "The Dog."}]
    submission, missing = build_submission(answers, test_questions)
    assert submission == [
        {"question_id": 1, "answer": "dog"},
        {"question_id": 2, "answer": ""},
        {"question_id": 3, "answer": "2"},
        {"question_id": 4, "answer": ""},
    ]
    assert missing == 2


def test_vqav2_script_layout(tmp_path: Path) -> None:
    split, ckpt = "llava_vqav2_mscoco_test-dev2015", "tiny"
    (tmp_path / "answers" / split / ckpt).mkdir(parents=True)
    write_lines(tmp_path / "answers" / split / ckpt / "merge.jsonl", [{"question_id": 7, "text": "Yes!"}])
    write_lines(tmp_path / "llava_vqav2_mscoco_test2015.jsonl", [{"question_id": 7}, {"question_id": 8}])
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO_ROOT / "scripts" / "convert_vqav2_for_submission.py"),
            "--split",
            split,
            "--ckpt",
            ckpt,
            "--dir",
            str(tmp_path),
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    assert "missing (written as ''): 1" in completed.stdout
    upload = json.loads((tmp_path / "answers_upload" / split / f"{ckpt}.json").read_text())
    assert upload == [{"question_id": 7, "answer": "yes"}, {"question_id": 8, "answer": ""}]


# ---------------------------------------------------------------- shared I/O


def test_malformed_jsonl_line_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1}\n\n{"question_id": 2, "text": \n{"question_id": 3}\n')
    with pytest.raises(JSONLError, match=r"answers\.jsonl:3: not valid JSON"):
        read_jsonl(path)
    path.write_text('{"question_id": 1}\n[1, 2]\n')
    with pytest.raises(JSONLError, match=r"answers\.jsonl:2: expected a JSON object"):
        read_jsonl(path)


def test_scores_file_sits_beside_the_result(tmp_path: Path) -> None:
    result_file = tmp_path / "answers" / "llava-v1.5-13b.jsonl"
    assert scores_path(result_file) == tmp_path / "answers" / "llava-v1.5-13b.scores.json"
    written = write_scores(result_file, {"accuracy_percent": 12.5})
    assert json.loads(written.read_text()) == {"accuracy_percent": 12.5}


def test_report_says_server_only_for_server_benchmarks_that_were_run(tmp_path):
    """A VQAv2 stub without a score shows ``server``; a benchmark never run shows ``-``, never ``server``."""
    from llava.eval import report

    (tmp_path / "pope" / "answers").mkdir(parents=True)
    (tmp_path / "pope" / "answers" / "only-pope.scores.json").write_text(
        json.dumps({"mean_f1_percent": 85.9})
    )
    stub = tmp_path / "vqav2" / "answers" / "llava_vqav2_test" / "submitted"
    stub.mkdir(parents=True)
    (stub / "merge.scores.json").write_text(json.dumps({"server_scored": True}))
    markdown = report.main(["--results", str(tmp_path)])
    assert "| only-pope | - | - | - | 85.9 | - | - |" in markdown
    assert "| submitted | server | - | - | - | - | - |" in markdown


# ---------------------------------------------------------------- GQA and SEED-Bench (hand-computed)


def _gqa_question(answer: str, structural: str, semantic: str, balanced: bool = True) -> dict:
    """One entry of GQA's ``testdev_balanced_questions.json`` with the fields the official eval.py reads."""
    return {
        "question": "Is the woman to the left or to the right of the man?",
        "imageId": "n435808",
        "answer": answer,
        "fullAnswer": f"The answer is {answer}.",
        "isBalanced": balanced,
        "groups": {"global": None, "local": "10c-woman_man"},
        "entailed": [],
        "equivalent": [],
        "semantic": [{"operation": "select", "dependencies": [], "argument": "woman (1)"}],
        "types": {"structural": structural, "semantic": semantic, "detailed": "relS"},
        "annotations": {"answer": {}, "question": {}, "fullAnswer": {}},
    }


def _gqa_files(tmp_path: Path) -> tuple[Path, Path]:
    questions = {
        "201307251": _gqa_question("left", "choose", "rel"),
        "201640614": _gqa_question("yes", "verify", "attr"),
        "202225914": _gqa_question("no", "logical", "obj"),
        "20968388": _gqa_question("white", "query", "attr"),
        "201667567": _gqa_question("table", "query", "cat"),
        "201303229": _gqa_question("no", "compare", "attr"),
        "111111111": _gqa_question("yes", "verify", "attr", balanced=False),
    }
    question_file = tmp_path / "data" / "testdev_balanced_questions.json"
    question_file.parent.mkdir(parents=True)
    question_file.write_text(json.dumps(questions))
    suffix = "\nAnswer the question using a single word or phrase."
    answers = [
        ("201307251", "Left."),  # right: trailing period stripped, lower-cased
        (201640614, "Yes"),  # right: an int id matches GQA's string id
        ("202225914", "no.."),  # right: every trailing period goes
        ("20968388", "White color"),  # wrong: no other normalisation
        ("201303229", "No. "),  # wrong: the converter strips periods only at the very end, not spaces
        ("111111111", "no"),  # not balanced: not scored
    ]  # 201667567 is unanswered: wrong
    result_file = tmp_path / "answers" / "llava_gqa_testdev_balanced" / "ckpt" / "merge.jsonl"
    result_file.parent.mkdir(parents=True)
    write_lines(
        result_file,
        [
            {"question_id": qid, "prompt": "Q?" + suffix, "text": text, "answer_id": "x", "model_id": "m"}
            for qid, text in answers
        ],
    )
    return question_file, result_file


def test_gqa_accuracy_and_predictions_file_by_hand(tmp_path: Path) -> None:
    from llava.eval import eval_gqa

    question_file, result_file = _gqa_files(tmp_path)
    scores = eval_gqa.main(["--question-file", str(question_file), "--result-file", str(result_file)])
    # 6 balanced questions, 3 right (left, yes, no); binary = the 4 non-query ones, 3 right; open = 2 query, 0.
    assert (scores["correct"], scores["count"], scores["unanswered"]) == (3, 6, 1)
    assert scores["accuracy_percent"] == pytest.approx(50.0)
    assert scores["binary_percent"] == pytest.approx(75.0) and scores["binary_count"] == 4
    assert scores["open_percent"] == 0.0 and scores["open_count"] == 2
    assert {k: (v["accuracy_percent"], v["count"]) for k, v in scores["structural_types"].items()} == {
        "choose": (100.0, 1),
        "compare": (0.0, 1),
        "logical": (100.0, 1),
        "query": (0.0, 2),
        "verify": (100.0, 1),
    }
    semantic = scores["semantic_types"]
    assert semantic["attr"]["accuracy_percent"] == pytest.approx(100 / 3) and semantic["attr"]["count"] == 3
    assert (
        semantic["rel"]["accuracy_percent"],
        semantic["obj"]["count"],
        semantic["cat"]["accuracy_percent"],
    ) == (
        100.0,
        1,
        0.0,
    )
    # Upstream's converted file, beside the answers under GQA's name, in answer-file order.
    predictions = json.loads((result_file.parent / "testdev_balanced_predictions.json").read_text())
    assert predictions == [
        {"questionId": "201307251", "prediction": "left"},
        {"questionId": "201640614", "prediction": "yes"},
        {"questionId": "202225914", "prediction": "no"},
        {"questionId": "20968388", "prediction": "white color"},
        {"questionId": "201303229", "prediction": "no. "},
        {"questionId": "111111111", "prediction": "no"},
    ]
    written = json.loads(scores_path(result_file).read_text())
    assert (written["benchmark"], written["headline"], written["accuracy_percent"]) == (
        "gqa",
        "accuracy_percent",
        50.0,
    )


def test_gqa_unknown_question_is_an_error(tmp_path: Path) -> None:
    from llava.eval import eval_gqa

    question_file, result_file = _gqa_files(tmp_path)
    write_lines(result_file, [{"question_id": "999", "text": "yes"}])
    with pytest.raises(KeyError, match="not in the question file"):
        eval_gqa.eval_gqa(question_file, result_file, tmp_path / "p.json")


SEED_TYPES = {
    "Scene Understanding": 1,
    "Instance Identity": 2,
    "Instance Attributes": 3,
    "Instance Location": 4,
    "Instances Counting": 5,
    "Spatial Relation": 6,
    "Instance Interaction": 7,
    "Visual Reasoning": 8,
    "Text Understanding": 9,
    "Action Recognition": 10,
    "Action Prediction": 11,
    "Procedure Understanding": 12,
}


def _seed_question(qid: str, type_id: int, answer: str, data_type: str = "image") -> dict:
    """One question of SEED-Bench's ``SEED-Bench.json``."""
    return {
        "answer": answer,
        "choice_a": "One",
        "choice_b": "Two",
        "choice_c": "Three",
        "choice_d": "Four",
        "data_id": f"{qid}.jpg" if data_type == "image" else f"{qid}.mp4",
        "data_type": data_type,
        "question": "How many towels are in the image?",
        "question_id": qid,
        "question_type_id": type_id,
    }


def _seed_files(tmp_path: Path, answers: list[tuple]) -> tuple[Path, Path]:
    annotation = tmp_path / "SEED-Bench.json"
    questions = [
        _seed_question("101", 1, "A"),
        _seed_question("102", 1, "B"),
        _seed_question("103", 2, "C"),
        _seed_question("104", 2, "D"),
        _seed_question("105", 9, "A"),
        _seed_question("3001", 10, "B", "video"),
    ]
    annotation.write_text(json.dumps({"question_type": SEED_TYPES, "questions": questions}))
    result_file = tmp_path / "answers" / "ckpt" / "merge.jsonl"
    result_file.parent.mkdir(parents=True)
    write_lines(result_file, [{"question_id": qid, "prompt": "Q", "text": text} for qid, text in answers])
    return annotation, result_file


IMAGE_ANSWERS = [
    (101, "A"),  # right (LLaVA's question ids are numbers, the annotation's strings)
    (102, "B."),  # wrong: not the bare letter (upstream compares the raw text)
    (103, "C"),  # right
    (104, "A"),  # wrong
]  # 105 unanswered: wrong


def test_seed_image_accuracy_dimensions_and_upload_by_hand(tmp_path: Path) -> None:
    from llava.eval import eval_seed

    annotation, result_file = _seed_files(tmp_path, IMAGE_ANSWERS)
    upload = tmp_path / "answers_upload" / "ckpt.jsonl"
    scores = eval_seed.main(
        [
            "--annotation-file",
            str(annotation),
            "--result-file",
            str(result_file),
            "--upload-file",
            str(upload),
        ]
    )
    # Pooled over the 5 image questions: 2 right = 40.0 (the mean over dimensions would be 33.3).
    assert (scores["image_correct"], scores["image_count"]) == (2, 5)
    assert scores["image_accuracy_percent"] == pytest.approx(40.0)
    assert (scores["unanswered"], scores["not_a_letter"]) == (1, 1)
    assert scores["video_accuracy_percent"] is None and scores["overall_accuracy_percent"] is None
    assert {k: (v["name"], v["correct"], v["count"]) for k, v in scores["dimensions"].items()} == {
        "1": ("Scene Understanding", 1, 2),
        "2": ("Instance Identity", 1, 2),
        "9": ("Text Understanding", 0, 1),
    }
    assert scores["dimensions"]["1"]["accuracy_percent"] == 50.0
    assert [json.loads(line) for line in upload.read_text().splitlines()] == [
        {"question_id": "101", "prediction": "A"},
        {"question_id": "102", "prediction": "B."},
        {"question_id": "103", "prediction": "C"},
        {"question_id": "104", "prediction": "A"},
        {"question_id": "105", "prediction": ""},
    ]
    written = json.loads(scores_path(result_file).read_text())
    assert (written["benchmark"], written["headline"]) == ("seed", "image_accuracy_percent")
    assert written["image_accuracy_percent"] == pytest.approx(40.0)


def test_seed_video_answers_add_video_and_overall_but_not_to_the_headline(tmp_path: Path) -> None:
    from llava.eval import eval_seed

    annotation, result_file = _seed_files(tmp_path, [*IMAGE_ANSWERS, ("3001", "B")])
    upload = tmp_path / "up.jsonl"
    scores = eval_seed.eval_seed(annotation, result_file, upload)
    assert scores["image_accuracy_percent"] == pytest.approx(40.0)
    assert scores["video_accuracy_percent"] == 100.0 and scores["video_count"] == 1
    assert scores["overall_accuracy_percent"] == pytest.approx(50.0)  # 3 of 6
    assert scores["dimensions"]["10"] == {
        "name": "Action Recognition",
        "data_type": "video",
        "correct": 1,
        "count": 1,
        "accuracy_percent": 100.0,
    }
    assert upload.read_text().splitlines()[-1] == json.dumps({"question_id": "3001", "prediction": "B"})
    with pytest.raises(KeyError, match="not in the annotation"):
        eval_seed.score_answers({}, [], {"7": "A"})


def test_seed_image_question_selection(tmp_path: Path) -> None:
    from llava.eval import eval_seed

    annotation, _ = _seed_files(tmp_path, [])
    suffix = "\nA. One\nB. Two\nC. Three\nD. Four\nAnswer with the option's letter from the given choices directly."
    rows = [
        {"image": f"SEED-Bench-image/{qid}.jpg", "text": "How many?" + suffix, "question_id": int(qid)}
        for qid in ("101", "102", "103", "104", "105")
    ]
    rows.insert(
        2, {"image": "SEED-Bench-video-image/3001.png", "text": "What?" + suffix, "question_id": 3001}
    )
    questions = write_lines(tmp_path / "llava-seed-bench.jsonl", rows)
    out = tmp_path / "out" / "image.jsonl"
    result = eval_seed.main(
        ["--annotation-file", str(annotation), "--select-image-questions", str(questions), str(out)]
    )
    assert result == {"image_questions": 5}
    assert read_jsonl(out) == [row for row in rows if row["question_id"] != 3001]


# ---------------------------------------------------------------- benchmark declarations and the report

SCRIPTS = REPO_ROOT / "scripts" / "v1_5" / "eval"
TABLE1 = ("VQAv2", "SQA-IMG", "TextVQA", "POPE", "MME", "MMB")
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_SUFFIX = "Answer with the option's letter from the given choices directly."


def test_the_six_declarations_are_table_1_and_match_their_scripts_and_docs() -> None:
    """Each built-in declaration names a script that runs its runner and its scorer, and a docs row."""
    declared = benchmarks.benchmarks()
    assert tuple(b.column for b in declared if b.table1 is not None) == TABLE1
    assert benchmarks.table1_columns() == TABLE1
    assert [b.name for b in declared if b.server_scored] == ["vqav2", "mmbench"]
    docs = (REPO_ROOT / "docs" / "Evaluation.md").read_text()
    for benchmark in declared:
        if benchmark.table1 is None:
            continue
        script = (SCRIPTS / benchmark.script).read_text()
        assert benchmark.runner in script and f"-m {benchmark.scorer}" in script, benchmark.name
        if benchmark.suffix_flag:
            assert benchmark.suffix_flag in script, benchmark.name
        assert f"| `{benchmark.script}` |" in docs, benchmark.name
        assert benchmark.metric_name, benchmark.name


def test_gqa_and_seed_are_declared_after_table_1_with_their_scripts_and_docs() -> None:
    """GQA and SEED are not Table 1 columns: declared with ``table1=None``, after the six, in MODEL_ZOO order."""
    declared = benchmarks.benchmarks()
    extra = [b.column for b in declared if b.table1 is None]  # other modules may have registered more
    assert [column for column in extra if column in ("GQA", "SEED")] == ["GQA", "SEED"]
    assert all(b.table1 is not None for b in declared[: len(declared) - len(extra)])  # the six come first
    docs = (REPO_ROOT / "docs" / "Evaluation.md").read_text()
    for name in ("gqa", "seed"):
        benchmark = benchmarks.get(name)
        assert benchmark.table1 is None and not benchmark.server_scored
        assert benchmark.fixed_answers_stem == "merge" and benchmark.suffix_flag is None
        script = (SCRIPTS / benchmark.script).read_text()
        assert benchmark.runner in script and f"-m {benchmark.scorer}" in script, name
        assert "run_sharded" in script, name
        assert f"| `{benchmark.script}` |" in docs, name
    assert benchmarks.get("gqa").prompt_suffix == SHORT_ANSWER
    assert benchmarks.get("seed").prompt_suffix == OPTION_SUFFIX


@needs_fixtures
@pytest.mark.parametrize(
    ("name", "question_file"),
    [
        ("pope", "pope/llava_pope_test.jsonl"),
        ("textvqa", "textvqa/llava_textvqa_val_v051_ocr.jsonl"),
        ("mme", "mme/llava_mme.jsonl"),
    ],
)
def test_declared_suffix_is_in_the_real_question_files(name: str, question_file: str) -> None:
    """Benchmarks without a ``suffix_flag`` declare the suffix their question files already end with."""
    benchmark = benchmarks.get(name)
    assert benchmark.suffix_flag is None
    texts = [row["text"] for row in read_jsonl(FIXTURES / question_file)]
    assert texts and all(text.endswith("\n" + benchmark.prompt_suffix) for text in texts)


def test_declared_answer_parsers_are_the_scorers() -> None:
    assert benchmarks.get("pope").parse_answer("No, there is not.") == "no"
    assert benchmarks.get("sqa").parse_answer("The answer is C.") == "C"
    assert benchmarks.get("mme").parse_answer("Yes.") == "yes"
    assert benchmarks.get("textvqa").parse_answer("The Dog.") == "dog"
    assert benchmarks.get("mmbench").parse_answer is None  # the server reads the raw text
    assert benchmarks.get("gqa").parse_answer("Left..") == "left"
    assert benchmarks.get("seed").parse_answer("B") == "B"
    assert benchmarks.get("seed").parse_answer("B.") == ""  # only a bare letter can be right


def test_scorers_record_their_headline(tmp_path: Path) -> None:
    """Score files name their benchmark and headline; server stubs too, keeping a number written by hand."""
    annotation = tmp_path / "TextVQA_0.5.1_val.json"
    annotation.write_text(json.dumps({"data": [{"image_id": "i", "question": "Q?", "answers": ["a"] * 10}]}))
    result_file = write_lines(
        tmp_path / "run.jsonl", [{"question_id": "i", "prompt": "Q?\nSay.", "text": "a"}]
    )
    scores = eval_textvqa.main(["--annotation-file", str(annotation), "--result-file", str(result_file)])
    written = json.loads(scores_path(result_file).read_text())
    assert written == scores
    assert list(written)[:3] == ["benchmark", "headline", "headline_name"]
    assert (written["benchmark"], written["headline"]) == ("textvqa", "soft_accuracy_percent")
    assert written["headline_name"] == eval_textvqa.BENCHMARK.metric_name
    assert written[written["headline"]] == 100.0

    from llava.eval import eval_vqav2

    (tmp_path / "run-a").mkdir()
    merge = write_lines(tmp_path / "run-a" / "merge.jsonl", [{"question_id": 1, "text": "x"}] * 2)
    stub = eval_vqav2.main(["--result-file", str(merge), "--upload-file", "up.json"])
    assert stub == json.loads(scores_path(merge).read_text())
    assert (stub["benchmark"], stub["headline"], stub["server_score"]) == ("vqav2", "server_score", None)
    assert stub["server_scored"] is True and stub["answers"] == 2 and stub["upload_file"] == "up.json"
    scores_path(merge).write_text(json.dumps({**stub, "server_score": 78.5}))
    assert eval_vqav2.main(["--result-file", str(merge), "--upload-file", "up.json"])["server_score"] == 78.5

    with pytest.raises(KeyError, match="no headline 'mean_f1_percent'"):
        eval_pope.BENCHMARK.stamp({"mean_accuracy_percent": 1.0})


def _score_file(path: Path, scores: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(scores))


def test_report_reads_score_files_with_and_without_a_headline(tmp_path: Path) -> None:
    """New files are read by their ``benchmark`` / ``headline``; older ones by their keys and folders."""
    from llava.eval import eval_mmbench, eval_vqav2, report

    # Older files: no "benchmark"; classified by the score key, or by the folder for a server stub.
    _score_file(tmp_path / "pope" / "answers" / "old.scores.json", {"mean_f1_percent": 70.0})
    _score_file(tmp_path / "scienceqa" / "answers" / "old.scores.json", {"img_accuracy_percent": 66.84})
    _score_file(
        tmp_path / "vqav2" / "answers" / "split" / "old" / "merge.scores.json", {"server_scored": True}
    )
    # New files: found wherever they lie. The POPE file's headline is read from the file; the MMB stub
    # is in no "mmbench" folder, the VQAv2 stub in no "vqav2" folder.
    new_pope = eval_pope.BENCHMARK.stamp({"mean_f1_percent": 85.94, "mean_accuracy_percent": 86.98})
    stub = {"server_scored": True, "server_score": 64.3, "answers": 3, "upload_file": "x.xlsx"}
    _score_file(tmp_path / "elsewhere" / "new.scores.json", new_pope)
    _score_file(tmp_path / "stubs" / "new.scores.json", eval_mmbench.BENCHMARK.stamp(stub))
    _score_file(
        tmp_path / "stubs" / "new" / "merge.scores.json",
        eval_vqav2.BENCHMARK.stamp({**stub, "server_score": None}),
    )
    # Neither form: not a benchmark's score file.
    _score_file(tmp_path / "other" / "x.scores.json", {"accuracy": 1.0})

    markdown = report.main(["--results", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert "| Model | VQAv2 | SQA-IMG | TextVQA | POPE | MME | MMB |\n" in markdown
    assert "| old | server | 66.8 | - | 70.0 | - | - |\n" in markdown
    assert "| new | server | - | - | 85.9 | - | 64.3 |\n" in markdown
    table = json.loads((tmp_path / "r.json").read_text())
    assert set(table) == {"old", "new"}
    assert set(table["new"]) == set(TABLE1)
    assert table["new"]["POPE"]["score"] == 85.94
    assert table["new"]["VQAv2"]["file"].endswith("stubs/new/merge.scores.json")
    assert "GQA" not in markdown and "SEED" not in markdown  # shown only when some row has them


def test_report_shows_gqa_and_seed_after_the_table_1_columns(tmp_path: Path) -> None:
    """GQA / SEED score files add their columns after Table 1's six; the row is the folder of merge.jsonl."""
    from llava.eval import eval_gqa, eval_seed, report

    gqa = eval_gqa.BENCHMARK.stamp({"accuracy_percent": 61.86, "count": 12578})
    seed = eval_seed.BENCHMARK.stamp({"image_accuracy_percent": 58.6, "image_count": 14233})
    _score_file(
        tmp_path / "gqa" / "answers" / "llava_gqa_testdev_balanced" / "r7b" / "merge.scores.json", gqa
    )
    _score_file(tmp_path / "seed_bench" / "answers" / "r7b" / "merge.scores.json", seed)
    _score_file(tmp_path / "pope" / "answers" / "r7b.scores.json", {"mean_f1_percent": 85.9})
    _score_file(tmp_path / "pope" / "answers" / "only-pope.scores.json", {"mean_f1_percent": 80.0})
    markdown = report.main(["--results", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert "| Model | VQAv2 | SQA-IMG | TextVQA | POPE | MME | MMB | GQA | SEED |\n" in markdown
    assert "| r7b | - | - | - | 85.9 | - | - | 61.9 | 58.6 |\n" in markdown
    assert "| only-pope | - | - | - | 80.0 | - | - | - | - |\n" in markdown
    table = json.loads((tmp_path / "r.json").read_text())
    assert table["r7b"]["GQA"]["score"] == 61.86 and table["r7b"]["SEED"]["score"] == 58.6
    # Only GQA present: its column alone is added.
    (tmp_path / "seed_bench" / "answers" / "r7b" / "merge.scores.json").unlink()
    markdown = report.main(["--results", str(tmp_path)])
    assert "| Model | VQAv2 | SQA-IMG | TextVQA | POPE | MME | MMB | GQA |\n" in markdown


# A benchmark declared here, in a test module: its data, its scorer, and nothing else.
TOY = Benchmark(
    name="toy-colour",
    column="Colour",
    metric="exact_match_percent",
    metric_name="answers equal to the gold colour after lower-casing and stripping a final period, x100",
    runner="llava.eval.model_vqa_loader",
    scorer=__name__,
    prompt_suffix="Answer with one colour word.",
    parse_answer=lambda text: text.strip().rstrip(".").lower(),
)


def score_toy(gold_file: Path, result_file: Path) -> dict:
    """The toy benchmark's scorer: exact match against ``{question_id: colour}``, written beside the answers."""
    gold = json.loads(gold_file.read_text())
    answers = read_jsonl(result_file)
    right = sum(TOY.parse_answer(a["text"]) == gold[str(a["question_id"])] for a in answers)
    scores = TOY.stamp({"exact_match_percent": 100 * right / len(gold), "count": len(gold)})
    write_scores(result_file, scores)
    return scores


@pytest.fixture
def toy_benchmark():
    benchmarks.register(TOY)
    yield TOY
    benchmarks.unregister(TOY.name)


def _toy_run(tmp_path: Path) -> None:
    gold = tmp_path / "toy" / "gold.json"
    (gold.parent / "answers").mkdir(parents=True)
    gold.write_text(json.dumps({"1": "red", "2": "blue", "3": "green", "4": "red"}))
    answers = [
        {"question_id": 1, "text": "Red.", "num_visual_tokens": 32},
        {"question_id": 2, "text": "blue", "num_visual_tokens": 40},
        {"question_id": 3, "text": "yellow", "num_visual_tokens": 36},
        {"question_id": 4, "text": "RED", "num_visual_tokens": 36},
    ]
    scores = score_toy(gold, write_lines(tmp_path / "toy" / "answers" / "tiny-prumerge.jsonl", answers))
    assert scores["exact_match_percent"] == 75.0
    _score_file(tmp_path / "pope" / "answers" / "tiny-prumerge.scores.json", {"mean_f1_percent": 76.3})


def test_a_benchmark_declared_in_a_test_module_appears_in_the_report(toy_benchmark, tmp_path, capsys):
    from llava.eval import report

    _toy_run(tmp_path)
    markdown = report.main(["--results", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert "| Model | VQAv2 | SQA-IMG | TextVQA | POPE | MME | MMB | Colour |\n" in markdown
    assert "| tiny-prumerge | - | - | - | 76.3 | - | - | 75.0 |\n" in markdown
    assert "| tiny-prumerge | - | - | - | - | - | - | 36.0 |\n" in markdown  # mean visual tokens
    cell = json.loads((tmp_path / "r.json").read_text())["tiny-prumerge"]["Colour"]
    assert cell["score"] == 75.0 and cell["visual_tokens"] == 36.0
    # A server score for the new column is accepted too, and a benchmark's column is its own.
    assert "| other | - | - | - | - | - | - | 12.0 |" in report.main(
        ["--results", str(tmp_path), "--server-score", "other:Colour=12"]
    )
    with pytest.raises(ValueError, match="both use column 'POPE'"):
        benchmarks.register(dataclasses.replace(TOY, name="toy-2", column="POPE"))


def test_an_undeclared_benchmark_is_left_out_of_the_report(tmp_path, capsys):
    """Without the toy's declaration, its score file is skipped (with a note) and Table 1 is unchanged."""
    from llava.eval import report

    benchmarks.register(TOY)
    try:
        _toy_run(tmp_path)
    finally:
        benchmarks.unregister(TOY.name)
    markdown = report.main(["--results", str(tmp_path)])
    assert "| Model | VQAv2 | SQA-IMG | TextVQA | POPE | MME | MMB |\n" in markdown
    assert "| tiny-prumerge | - | - | - | 76.3 | - | - |\n" in markdown
    assert "Colour" not in markdown
    assert "'toy-colour', which is not declared here; skipped" in capsys.readouterr().err
