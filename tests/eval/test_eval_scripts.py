"""End-to-end tests of ``scripts/v1_5/eval/*.sh`` on the tiny checkpoint.

Each script runs with ``bash`` in a subprocess on the first few questions of the real LLaVA-1.5 question
files (``../shared/fixtures/upstream_eval``), copied into a temporary ``EVAL_DIR`` with upstream's
``playground/data/eval`` layout, with stand-in images named after the ``image`` fields, two CPU chunks
(``CHUNKS=2``, ``CUDA_VISIBLE_DEVICES=""``) and ``MAX_QUESTIONS``. Then ``llava.eval.report`` gathers the
score files.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from tests_support import REPO_ROOT, SHARED, needs_shared

SCRIPTS = REPO_ROOT / "scripts" / "v1_5" / "eval"
UPSTREAM = SHARED / "fixtures" / "upstream_eval"
N = 6
NEEDS_SHARED = needs_shared(UPSTREAM, "the real LLaVA-1.5 eval files")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llava.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("scripts_ckpt") / "tiny-llava"
    build_tiny_llava(out, reduction="prumerge")
    return out


def stand_in_images(folder: Path, names: list[str]) -> None:
    for seed, name in enumerate(dict.fromkeys(names)):
        pixels = np.random.default_rng(seed).integers(0, 256, (48 + 8 * seed, 64, 3), dtype=np.uint8)
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(folder / name)


def run_script(name: str, ckpt: Path, eval_dir: Path, **extra_env: str) -> subprocess.CompletedProcess:
    env = {
        **{k: v for k, v in os.environ.items() if k != "DTYPE"},  # the caller's DTYPE would rename the run
        "EVAL_DIR": str(eval_dir),
        "MAX_QUESTIONS": str(N),
        "CHUNKS": "2",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHON": sys.executable,
        "EXTRA_ARGS": "--max_new_tokens 3 --device cpu",
        "OMP_NUM_THREADS": "1",
        **extra_env,
    }
    result = subprocess.run(
        ["bash", str(SCRIPTS / name), str(ckpt), "", "prumerge"],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result


def run_name(result: subprocess.CompletedProcess) -> str:
    """The experiment name a script used (its ``[eval] NAME: ...`` line)."""
    return re.search(r"^\[eval\] (\S+): model ", result.stderr, re.M).group(1)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("name", sorted(p.name for p in SCRIPTS.glob("*.sh")))
def test_scripts_parse(name):
    assert subprocess.run(["bash", "-n", str(SCRIPTS / name)]).returncode == 0


def test_usage_error_without_checkpoint():
    env = {k: v for k, v in os.environ.items() if k != "MODEL_PATH"}
    result = subprocess.run(["bash", str(SCRIPTS / "pope.sh")], env=env, capture_output=True, text=True)
    assert result.returncode == 2 and "usage" in result.stderr


def eval_setup(**env: str) -> subprocess.CompletedProcess:
    """Sources ``_common.sh`` and runs ``eval_setup CKPT`` with ``env``; prints NAME and MODEL_ARGS."""
    script = (
        f'source "{SCRIPTS / "_common.sh"}"; eval_setup ckpt/tiny; echo "$NAME"; echo "${{MODEL_ARGS[*]}}"'
    )
    unset = ("DTYPE", "TOKEN_REDUCTION", "REDUCTION_VARIANT", "MODEL_BASE", "MAX_QUESTIONS")
    base = {k: v for k, v in os.environ.items() if k not in unset}
    return subprocess.run(["bash", "-c", script], env={**base, **env}, capture_output=True, text=True)


def test_dtype_is_passed_to_the_runners_and_named():
    unset = eval_setup()
    assert unset.returncode == 0 and unset.stdout.splitlines() == ["tiny", "--model-path ckpt/tiny"]
    forced = eval_setup(DTYPE="bfloat16", TOKEN_REDUCTION="prumerge")
    assert forced.returncode == 0, forced.stderr
    assert forced.stdout.splitlines() == [
        "tiny-prumerge-bfloat16",
        "--model-path ckpt/tiny --token-reduction prumerge --dtype bfloat16",
    ]
    bad = eval_setup(DTYPE="bf16")
    assert bad.returncode == 2
    assert "DTYPE must be auto, float16, bfloat16 or float32, got 'bf16'" in bad.stderr


@NEEDS_SHARED
def test_pope_script_end_to_end(ckpt, tmp_path):
    pope = tmp_path / "eval" / "pope"
    (pope / "coco").mkdir(parents=True)
    rows = read_jsonl(UPSTREAM / "pope" / "llava_pope_test.jsonl")[:N]
    shutil.copy(UPSTREAM / "pope" / "llava_pope_test.jsonl", pope)
    stand_in_images(pope / "val2014", [row["image"] for row in rows])
    # Labels are matched by position per category: keep as many as there are questions.
    per_category = Counter(row["category"] for row in rows)
    for label_file in (UPSTREAM / "pope" / "coco").glob("coco_pope_*.json"):
        category = label_file.stem.removeprefix("coco_pope_")
        if per_category[category]:
            lines = label_file.read_text().splitlines()[: per_category[category]]
            (pope / "coco" / label_file.name).write_text("\n".join(lines) + "\n")

    name = run_name(run_script("pope.sh", ckpt, tmp_path / "eval"))
    assert re.fullmatch(rf"tiny-llava-prumerge-x\d+-first{N}", name)
    answers = read_jsonl(pope / "answers" / f"{name}.jsonl")
    assert [a["question_id"] for a in answers] == [row["question_id"] for row in rows]
    assert (pope / "answers" / name / "2_0.jsonl").is_file() and (
        pope / "answers" / name / "2_1.jsonl"
    ).is_file()
    assert all(a["num_visual_tokens"] > 0 for a in answers)
    scores = json.loads((pope / "answers" / f"{name}.scores.json").read_text())
    assert {"categories", "mean_f1_percent", "mean_accuracy_percent"} <= set(scores)
    assert set(scores["categories"]) == set(per_category)

    from llava.eval import report

    table = report.main(
        [
            "--results",
            str(tmp_path / "eval"),
            "--out",
            str(tmp_path / "r.md"),
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    data = json.loads((tmp_path / "r.json").read_text())
    row = data[name]
    assert row["POPE"]["score"] == pytest.approx(scores["mean_f1_percent"])
    assert row["POPE"]["visual_tokens"] == pytest.approx(np.mean([a["num_visual_tokens"] for a in answers]))
    assert row["VQAv2"]["score"] is None
    assert (
        name in table
        and "| VQAv2 | SQA-IMG | TextVQA | POPE | MME | MMB |" in (tmp_path / "r.md").read_text()
    )


@NEEDS_SHARED
def test_sqa_script_end_to_end(ckpt, tmp_path):
    sqa = tmp_path / "eval" / "scienceqa"
    sqa.mkdir(parents=True)
    for name in ("llava_test_CQM-A.json", "pid_splits.json"):
        shutil.copy(UPSTREAM / "scienceqa" / name, sqa)
    items = json.loads((sqa / "llava_test_CQM-A.json").read_text())[:N]
    stand_in_images(sqa / "images" / "test", [item["image"] for item in items if item.get("image")])

    name = run_name(run_script("sqa.sh", ckpt, tmp_path / "eval"))
    answers = read_jsonl(sqa / "answers" / f"{name}.jsonl")
    assert sorted(str(a["question_id"]) for a in answers) == sorted(str(item["id"]) for item in items)
    assert [str(a["question_id"]) for a in answers] == [str(item["id"]) for item in items]
    scores = json.loads((sqa / "answers" / f"{name}.scores.json").read_text())
    assert {"accuracy_percent", "img_accuracy_percent", "img_count", "count"} <= set(scores)
    assert scores["count"] == 4241  # scored against the whole split; unanswered items count as wrong
    assert (sqa / "answers" / f"{name}_result.json").is_file()


@NEEDS_SHARED
def test_textvqa_and_mme_scripts_end_to_end(ckpt, tmp_path):
    """TextVQA and MME with ground truth made up for the first questions (the real files are not here)."""
    eval_dir = tmp_path / "eval"
    textvqa, mme = eval_dir / "textvqa", eval_dir / "MME"
    textvqa.mkdir(parents=True)
    mme.mkdir(parents=True)
    shutil.copy(UPSTREAM / "textvqa" / "llava_textvqa_val_v051_ocr.jsonl", textvqa)
    rows = read_jsonl(textvqa / "llava_textvqa_val_v051_ocr.jsonl")[:N]
    stand_in_images(textvqa / "train_images", [row["image"] for row in rows])
    data = [
        {"image_id": row["question_id"], "question": row["text"].split("\n")[0], "answers": ["yes"] * 10}
        for row in rows
    ]
    (textvqa / "TextVQA_0.5.1_val.json").write_text(json.dumps({"data": data}))

    shutil.copy(UPSTREAM / "mme" / "llava_mme.jsonl", mme)
    mme_rows = read_jsonl(mme / "llava_mme.jsonl")[:N]
    release = mme / "MME_Benchmark_release_version"
    stand_in_images(release, [row["image"] for row in mme_rows])
    for i, row in enumerate(mme_rows):
        gt = release / (str(Path(row["image"]).with_suffix(".txt")))
        question = row["text"].split("\n")[0] + " Please answer yes or no."
        with gt.open("a") as handle:
            handle.write(f"{question}\t{'Yes' if i % 2 == 0 else 'No'}\n")

    name = run_name(run_script("textvqa.sh", ckpt, eval_dir))
    assert run_name(run_script("mme.sh", ckpt, eval_dir)) == name
    answers = read_jsonl(textvqa / "answers" / f"{name}.jsonl")
    assert [a["question_id"] for a in answers] == [row["question_id"] for row in rows]
    scores = json.loads((textvqa / "answers" / f"{name}.scores.json").read_text())
    assert scores["count"] == N and "soft_accuracy_percent" in scores

    answers = read_jsonl(mme / "answers" / f"{name}.jsonl")
    assert [(a["question_id"], a["prompt"]) for a in answers] == [
        (r["question_id"], r["text"]) for r in mme_rows
    ]
    scores = json.loads((mme / "answers" / f"{name}.scores.json").read_text())
    assert {"subtasks", "perception_score", "cognition_score"} <= set(scores)
    assert (mme / "eval_tool" / "answers" / name).is_dir()

    from llava.eval import report

    report.main(["--results", str(eval_dir), "--json", str(tmp_path / "r.json")])
    row = json.loads((tmp_path / "r.json").read_text())[name]
    textvqa_scores = json.loads((textvqa / "answers" / f"{name}.scores.json").read_text())
    assert row["TextVQA"]["score"] == pytest.approx(textvqa_scores["soft_accuracy_percent"])
    assert row["MME"]["score"] == pytest.approx(scores["perception_score"])
    assert row["MMB"]["score"] is None


@NEEDS_SHARED
def test_vqav2_script_makes_the_upload_file(ckpt, tmp_path):
    # Stand-in test-dev questions: real LLaVA-format question lines (POPE's have the same fields).
    vqav2 = tmp_path / "eval" / "vqav2"
    vqav2.mkdir(parents=True)
    rows = read_jsonl(UPSTREAM / "pope" / "llava_pope_test.jsonl")[: N + 2]
    (vqav2 / "llava_vqav2_mscoco_test-dev2015.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows[:N])
    )
    (vqav2 / "llava_vqav2_mscoco_test2015.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    stand_in_images(vqav2 / "test2015", [row["image"] for row in rows])

    name = run_name(run_script("vqav2.sh", ckpt, tmp_path / "eval"))
    merged = read_jsonl(vqav2 / "answers" / "llava_vqav2_mscoco_test-dev2015" / name / "merge.jsonl")
    assert [a["question_id"] for a in merged] == [r["question_id"] for r in rows[:N]]
    upload = json.loads(
        (vqav2 / "answers_upload" / "llava_vqav2_mscoco_test-dev2015" / f"{name}.json").read_text()
    )
    assert [u["question_id"] for u in upload] == [r["question_id"] for r in rows]  # the full test split
    assert [u["answer"] for u in upload[N:]] == ["", ""]  # ids outside test-dev are filled with ""
    stub = json.loads(
        (vqav2 / "answers" / "llava_vqav2_mscoco_test-dev2015" / name / "merge.scores.json").read_text()
    )
    assert (stub["benchmark"], stub["headline"], stub["server_score"], stub["answers"]) == (
        "vqav2",
        "server_score",
        None,
        N,
    )


def test_mmbench_script_makes_the_upload_sheet(ckpt, tmp_path):
    import base64
    import io

    import pandas as pd

    mmbench = tmp_path / "eval" / "mmbench"
    mmbench.mkdir(parents=True)
    buffer = io.BytesIO()
    Image.fromarray(np.full((40, 60, 3), 128, dtype=np.uint8)).save(buffer, format="PNG")
    image = base64.b64encode(buffer.getvalue()).decode()
    rows = [
        {
            "index": i,
            "question": f"Which colour is shape {i}?",
            "hint": "A hint." if i % 2 else float("nan"),
            "A": "red",
            "B": "blue",
            "C": "green" if i < 3 else float("nan"),
            "D": "grey" if i < 2 else float("nan"),
            "answer": "A",
            "category": "attribute",
            "source": "x",
            "l2-category": "y",
            "comment": "",
            "split": "dev",
            "image": image,
        }
        for i in range(N)
    ]
    pd.DataFrame(rows).to_csv(mmbench / "mmbench_dev_20230712.tsv", sep="\t", index=False)

    result = run_script("mmbench.sh", ckpt, tmp_path / "eval", DTYPE="bfloat16")

    name = run_name(result)
    assert re.fullmatch(rf"tiny-llava-prumerge-bfloat16-x\d+-first{N}", name)
    assert result.stderr.count("token reduction prumerge/reference, dtype bfloat16") == 2  # both chunks
    answers = read_jsonl(mmbench / "answers" / "mmbench_dev_20230712" / f"{name}.jsonl")
    assert [a["question_id"] for a in answers] == list(range(N))
    sheet = pd.read_excel(mmbench / "answers_upload" / "mmbench_dev_20230712" / f"{name}.xlsx")
    assert list(sheet.columns) == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert sheet["index"].tolist() == list(range(N))
    assert sheet["prediction"].fillna("").tolist() == [a["text"] for a in answers]
    stub = json.loads((mmbench / "answers" / "mmbench_dev_20230712" / f"{name}.scores.json").read_text())
    assert (stub["benchmark"], stub["headline"], stub["server_scored"]) == ("mmbench", "server_score", True)


def test_run_names_differ_when_settings_differ():
    """EXTRA_ARGS and the run folder of a checkpoint-N are part of the name; RUN_NAME replaces it."""

    def name(path: str, **env: str) -> str:
        script = f'source "{SCRIPTS / "_common.sh"}"; eval_setup {path}; echo "$NAME"'
        unset = (
            "DTYPE",
            "TOKEN_REDUCTION",
            "REDUCTION_VARIANT",
            "MODEL_BASE",
            "MAX_QUESTIONS",
            "EXTRA_ARGS",
            "RUN_NAME",
        )
        base = {k: v for k, v in os.environ.items() if k not in unset}
        result = subprocess.run(["bash", "-c", script], env={**base, **env}, capture_output=True, text=True)
        assert result.returncode == 0, result.stderr
        return result.stdout.splitlines()[-1]

    budget8 = name("ckpt/tiny", EXTRA_ARGS="--reduction-budget 8")
    assert budget8 != name("ckpt/tiny", EXTRA_ARGS="--reduction-budget 300") and budget8.startswith("tiny-x")
    assert name("ckpt/tiny") == "tiny"
    assert name("runA/checkpoint-500") == "runA-checkpoint-500" != name("runB/checkpoint-500")
    assert name("ckpt/tiny", RUN_NAME="mine", EXTRA_ARGS="--reduction-budget 8") == "mine"


# GQA and SEED-Bench: question files in LLaVA's format, ground truth in the benchmarks' own formats, made
# here (the real files are not in the shared fixtures).
SHORT_ANSWER = "Answer the question using a single word or phrase."
OPTION_LETTER = "Answer with the option's letter from the given choices directly."


def test_gqa_script_end_to_end(ckpt, tmp_path):
    gqa = tmp_path / "eval" / "gqa"
    (gqa / "data").mkdir(parents=True)
    ids = [
        "201307251",
        "201640614",
        "202225914",
        "20968388",
        "201667567",
        "201303229",
        "201902997",
        "20567512",
    ]
    rows = [
        {
            "question_id": qid,
            "image": f"n{435808 + i}.jpg",
            "text": f"What is on the table {i}?\n{SHORT_ANSWER}",
        }
        for i, qid in enumerate(ids)
    ]
    (gqa / "llava_gqa_testdev_balanced.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    structural = ["choose", "verify", "logical", "query", "query", "compare", "verify", "query"]
    questions = {
        qid: {
            "question": rows[i]["text"].split("\n")[0],
            "imageId": rows[i]["image"][:-4],
            "answer": "yes" if i % 2 else "table",
            "isBalanced": True,
            "types": {"structural": structural[i], "semantic": "obj", "detailed": "existT"},
            "groups": {"global": None, "local": "x"},
            "semantic": [],
            "entailed": [],
            "equivalent": [],
        }
        for i, qid in enumerate(ids)
    }
    (gqa / "data" / "testdev_balanced_questions.json").write_text(json.dumps(questions))
    stand_in_images(gqa / "data" / "images", [row["image"] for row in rows])

    name = run_name(run_script("gqa.sh", ckpt, tmp_path / "eval"))
    out = gqa / "answers" / "llava_gqa_testdev_balanced" / name
    merged = read_jsonl(out / "merge.jsonl")
    assert [a["question_id"] for a in merged] == ids[:N]
    assert (out / "2_0.jsonl").is_file() and (out / "2_1.jsonl").is_file()
    predictions = json.loads((out / "testdev_balanced_predictions.json").read_text())
    assert predictions == [
        {"questionId": a["question_id"], "prediction": a["text"].rstrip(".").lower()} for a in merged
    ]
    scores = json.loads((out / "merge.scores.json").read_text())
    assert (scores["benchmark"], scores["headline"]) == ("gqa", "accuracy_percent")
    right = sum(p["prediction"] == questions[p["questionId"]]["answer"] for p in predictions)
    assert (scores["count"], scores["unanswered"], scores["correct"]) == (len(ids), len(ids) - N, right)
    assert scores["accuracy_percent"] == pytest.approx(100 * right / len(ids))

    from llava.eval import report

    report.main(
        [
            "--results",
            str(tmp_path / "eval"),
            "--out",
            str(tmp_path / "r.md"),
            "--json",
            str(tmp_path / "r.json"),
        ]
    )
    row = json.loads((tmp_path / "r.json").read_text())[name]
    assert row["GQA"]["score"] == pytest.approx(scores["accuracy_percent"])
    assert row["GQA"]["visual_tokens"] == pytest.approx(np.mean([a["num_visual_tokens"] for a in merged]))
    assert "| VQAv2 | SQA-IMG | TextVQA | POPE | MME | MMB | GQA |" in (tmp_path / "r.md").read_text()


def test_seed_script_end_to_end(ckpt, tmp_path):
    seed = tmp_path / "eval" / "seed_bench"
    seed.mkdir(parents=True)
    options = "\nA. One\nB. Two\nC. Three\nD. Four\n" + OPTION_LETTER
    image_ids = [str(101669 + i) for i in range(N + 1)]
    rows = [
        {
            "image": f"SEED-Bench-image/{qid}_{i}.jpg",
            "text": f"How many towels are in the image?{options}",
            "category": "Instances Counting",
            "question_id": int(qid),
        }
        for i, qid in enumerate(image_ids)
    ]
    # Two video questions (middle frames that are not here): seed.sh must not ask them.
    for position, qid in ((1, "1000"), (5, "1001")):
        rows.insert(
            position,
            {
                "image": f"SEED-Bench-video-image/10_{qid}.png",
                "text": f"What is the action?{options}",
                "category": "Action Recognition",
                "question_id": int(qid),
            },
        )
    (seed / "llava-seed-bench.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    annotation = [
        {
            "answer": "ABCD"[i % 4],
            "choice_a": "One",
            "choice_b": "Two",
            "choice_c": "Three",
            "choice_d": "Four",
            "data_id": f"{qid}_{i}.jpg",
            "data_type": "image",
            "question": "How many towels are in the image?",
            "question_id": qid,
            "question_type_id": 5 if i % 2 else 1,
        }
        for i, qid in enumerate(image_ids)
    ]
    annotation += [
        {**annotation[0], "data_type": "video", "question_id": qid, "question_type_id": 10, "answer": "B"}
        for qid in ("1000", "1001")
    ]
    types = {"Scene Understanding": 1, "Instances Counting": 5, "Action Recognition": 10}
    (seed / "SEED-Bench.json").write_text(json.dumps({"question_type": types, "questions": annotation}))
    stand_in_images(seed, [row["image"] for row in rows if row["image"].startswith("SEED-Bench-image/")])

    name = run_name(run_script("seed.sh", ckpt, tmp_path / "eval"))
    out = seed / "answers" / name
    merged = read_jsonl(out / "merge.jsonl")
    assert [str(a["question_id"]) for a in merged] == image_ids[:N]
    assert all(a["prompt"].endswith(options) for a in merged)
    scores = json.loads((out / "merge.scores.json").read_text())
    assert (scores["benchmark"], scores["headline"]) == ("seed", "image_accuracy_percent")
    gold = {q["question_id"]: q["answer"] for q in annotation}
    right = sum(a["text"] == gold[str(a["question_id"])] for a in merged)
    assert (scores["image_count"], scores["unanswered"], scores["image_correct"]) == (N + 1, 1, right)
    assert scores["video_accuracy_percent"] is None
    assert set(scores["dimensions"]) == {"1", "5"}
    upload = read_jsonl(seed / "answers_upload" / f"{name}.jsonl")
    assert [u["question_id"] for u in upload] == image_ids
    assert [u["prediction"] for u in upload] == [a["text"] for a in merged] + [""]

    from llava.eval import report

    report.main(["--results", str(tmp_path / "eval"), "--json", str(tmp_path / "r.json")])
    row = json.loads((tmp_path / "r.json").read_text())[name]
    assert row["SEED"]["score"] == pytest.approx(scores["image_accuracy_percent"])
    assert set(row) == {"VQAv2", "SQA-IMG", "TextVQA", "POPE", "MME", "MMB", "SEED"}
