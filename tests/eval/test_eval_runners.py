"""Tests of the generation runners (``llava.eval.model_vqa_loader`` / ``_science`` / ``_mmbench``).

All run on one tiny random checkpoint with PruMerge (CPU, float32, greedy), with stand-in images made
here and named after the question files' ``image`` fields. Where the real LLaVA-1.5 evaluation files
are present (``../shared/fixtures/upstream_eval``), their first questions are used as well.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tests_support import REPO_ROOT, SHARED, shared_reason

from llava.eval import model_vqa_loader, model_vqa_mmbench, model_vqa_science
from llava.eval.runner import get_chunk, open_for_append, read_answer_file, split_list
from llava.mm_utils import load_image, process_images

UPSTREAM = SHARED / "fixtures" / "upstream_eval"
POPE_QUESTIONS = UPSTREAM / "pope" / "llava_pope_test.jsonl"
POPE_ANSWERS = UPSTREAM / "pope" / "answers" / "llava-v1.5-13b.jsonl"
SQA_QUESTIONS = UPSTREAM / "scienceqa" / "llava_test_CQM-A.json"
SQA_ANSWERS = UPSTREAM / "scienceqa" / "answers" / "llava-v1.5-13b.jsonl"
MMBENCH_ANSWERS = UPSTREAM / "mmbench" / "answers" / "llava-v1.5-13b.jsonl"
UPSTREAM_FIELDS = ["question_id", "prompt", "text", "answer_id", "model_id", "metadata"]
OPTION_SUFFIX = "Answer with the option's letter from the given choices directly."
SIZES = [(200, 120), (336, 336), (90, 300), (500, 400), (64, 64), (300, 100), (250, 250)]
QUESTIONS = [
    "What is this?",
    "Describe the image in detail, with every object you see and where it is in the picture.",
    "Is there a cat?\nAnswer the question using a single word or phrase.",
    "How many objects are there? Answer the question using a single word or phrase.",
    "Color?",
    "What is in the image? Describe it in detail. What is next to the cup of coffee on the mat?",
    "Is there a red circle in the image? yes no",
]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One full tiny checkpoint recording PruMerge (reference) for the whole module."""
    from llava.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("eval_ckpt")
    build_tiny_llava(out, reduction="prumerge")
    return out


@pytest.fixture(scope="module")
def loaded(ckpt: Path):
    """``(tokenizer, model, image_processor)`` loaded independently of the runners."""
    from llava.model.loader import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(ckpt), device="cpu")
    return tokenizer, model, processor


def make_image(seed: int) -> Image.Image:
    """A stand-in image whose size and content depend on ``seed`` (noise, or flat with a rectangle)."""
    rng = np.random.default_rng(seed)
    width, height = SIZES[seed % len(SIZES)]
    pixels = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
    if seed % 2:
        pixels[:] = rng.integers(0, 256, 3, dtype=np.uint8)
    image = Image.fromarray(pixels)
    ImageDraw.Draw(image).rectangle((5, 5, 15 + 9 * seed, 12 + 7 * seed), fill=(255, 0, 0))
    return image


def write_questions(folder: Path, rows: list[dict], name: str = "questions.jsonl") -> Path:
    """Writes ``rows`` as JSON lines and a stand-in image for each distinct ``image`` field."""
    images = folder / "images"
    for seed, image in enumerate(dict.fromkeys(row["image"] for row in rows if row.get("image"))):
        (images / image).parent.mkdir(parents=True, exist_ok=True)
        make_image(seed).save(images / image)
    path = folder / name
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def generated_rows(count: int, prefix: str = "q") -> list[dict]:
    """``count`` questions of varied lengths, each with its own image."""
    return [
        {"question_id": f"{prefix}{i}", "image": f"{prefix}{i}.png", "text": QUESTIONS[i % len(QUESTIONS)]}
        for i in range(count)
    ]


def run_loader(ckpt: Path, questions: Path, answers: Path, *extra: str) -> int:
    """``model_vqa_loader.main`` in-process (greedy, 6 new tokens, images beside the question file)."""
    argv = ["--model-path", str(ckpt), "--question-file", str(questions), "--answers-file", str(answers)]
    argv += ["--image-folder", str(questions.parent / "images"), "--temperature", "0"]
    return model_vqa_loader.main([*argv, "--max_new_tokens", "6", "--device", "cpu", *extra])


def read_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def tower_counts(loaded, images: list[Image.Image]) -> list[int]:
    """Visual tokens the checkpoint's tower keeps for each image."""
    _, model, processor = loaded
    with torch.no_grad():
        return model.get_vision_tower()(process_images(images, processor, "pad")).lengths.tolist()


# ---------------------------------------------------------------------------------------------
# model_vqa_loader
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("source", ["pope", "generated"])
def test_batch_size_does_not_change_greedy_answers(source, ckpt, loaded, tmp_path):
    """Batch 3 (left padding, varied prompt and visual-token lengths) answers exactly as batch 1."""
    if source == "pope":
        if not POPE_QUESTIONS.is_file():
            pytest.skip(
                shared_reason(POPE_QUESTIONS.parent, "the real POPE questions; the generated variant ran")
            )
        rows = [json.loads(line) for line in POPE_QUESTIONS.read_text().splitlines()[:8]]
    else:
        rows = generated_rows(7)
    questions = write_questions(tmp_path, rows)
    assert run_loader(ckpt, questions, tmp_path / "b1.jsonl", "--batch-size", "1") == 0
    assert run_loader(ckpt, questions, tmp_path / "b3.jsonl", "--batch-size", "3") == 0
    single, batched = read_lines(tmp_path / "b1.jsonl"), read_lines(tmp_path / "b3.jsonl")

    assert [a["question_id"] for a in single] == [row["question_id"] for row in rows]
    assert [a["text"] for a in batched] == [a["text"] for a in single]
    images = [load_image(tmp_path / "images" / row["image"]) for row in rows]
    assert [a["num_visual_tokens"] for a in single] == tower_counts(loaded, images)
    assert [a["num_visual_tokens"] for a in batched] == tower_counts(loaded, images)
    for answer, row in zip(batched, rows):
        assert list(answer) == [*UPSTREAM_FIELDS, "num_visual_tokens"]
        assert answer["prompt"] == row["text"] and "<image>" not in answer["prompt"]
        assert answer["model_id"] == ckpt.name and answer["metadata"] == {}
        assert re.fullmatch(r"[0-9a-f]{32}", answer["answer_id"])
    assert len({a["answer_id"] for a in single + batched}) == 2 * len(rows)
    if source == "pope" and POPE_ANSWERS.is_file():
        upstream = json.loads(POPE_ANSWERS.read_text().splitlines()[0])
        assert list(upstream) == UPSTREAM_FIELDS
        assert single[0]["prompt"] == upstream["prompt"]


def test_resume_rewrites_a_truncated_line_and_keeps_the_rest(ckpt, tmp_path):
    """A run killed mid-line resumes: complete lines are kept byte for byte, nothing is duplicated."""
    questions = write_questions(tmp_path, generated_rows(5))
    answers = tmp_path / "answers.jsonl"
    assert run_loader(ckpt, questions, answers, "--batch-size", "2") == 0
    full = answers.read_text().splitlines(keepends=True)
    assert len(full) == 5
    answers.write_text(full[0] + full[1] + full[2][: len(full[2]) // 2])

    assert run_loader(ckpt, questions, answers, "--batch-size", "2") == 0
    resumed = answers.read_text().splitlines(keepends=True)
    assert resumed[:2] == full[:2]
    assert [json.loads(line)["question_id"] for line in resumed] == [f"q{i}" for i in range(5)]
    assert [json.loads(line)["text"] for line in resumed] == [json.loads(line)["text"] for line in full]

    before = answers.read_bytes()
    assert run_loader(ckpt, questions, answers) == 0  # everything answered: nothing to do
    assert answers.read_bytes() == before


def test_resume_with_other_settings_is_refused_and_names_the_difference(ckpt, tmp_path, capsys):
    """An answers file records what made it; resuming it with another budget, reducer or model is refused."""
    questions = write_questions(tmp_path, generated_rows(3))
    answers = tmp_path / "answers.jsonl"
    assert run_loader(ckpt, questions, answers, "--reduction-budget", "8") == 0
    settings = json.loads((tmp_path / "answers.jsonl.settings.json").read_text())
    assert settings["model_path"] == str(ckpt.resolve()) and settings["dtype"] == "float32"
    assert settings["options"]["reduction_budget"] == 8 and settings["options"]["max_new_tokens"] == 6
    assert settings["reduction"]["method"] == "prumerge" and settings["reduction"]["budget"] == 8
    before = read_lines(answers)
    answers.write_text("".join(answers.read_text().splitlines(keepends=True)[:2]))  # one left to answer
    for extra, named in [
        (["--reduction-budget", "300"], "reduction_budget: 8 -> 300"),
        (["--reduction-budget", "8", "--token-reduction", "none"], "token_reduction: None -> 'none'"),
        (["--reduction-budget", "8", "--max_new_tokens", "9"], "max_new_tokens: 6 -> 9"),
    ]:
        capsys.readouterr()
        assert run_loader(ckpt, questions, answers, *extra) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and named in err and "left unchanged" in err
    other = tmp_path / "other" / ckpt.name  # the same folder name in another run
    import shutil

    shutil.copytree(ckpt, other)
    assert run_loader(other, questions, answers, "--reduction-budget", "8") == 2
    assert "model_path" in capsys.readouterr().err
    assert run_loader(ckpt, questions, answers, "--reduction-budget", "8") == 0  # the same settings resume
    assert [a["text"] for a in read_lines(answers)] == [a["text"] for a in before]


def test_settings_recorded_before_new_reduction_options_existed_still_resume(ckpt, tmp_path):
    """A reduction option added later (at its default) is no difference: runs recorded by an earlier version
    resume; a real difference in the recorded reduction is still refused."""
    questions = write_questions(tmp_path, generated_rows(3))
    answers = tmp_path / "answers.jsonl"
    assert run_loader(ckpt, questions, answers, "--reduction-budget", "8") == 0
    sidecar = tmp_path / "answers.jsonl.settings.json"
    settings = json.loads(sidecar.read_text())
    older = ("variant", "form", "budget", "ratio", "num_neighbors", "iqr_scale", "grid", "llm_layer")
    settings["reduction"] = {k: v for k, v in settings["reduction"].items() if k == "method" or k in older}
    settings["options"] = {k: v for k, v in settings["options"].items() if not k.startswith("reduction_atp")}
    sidecar.write_text(json.dumps(settings))
    answers.write_text("".join(answers.read_text().splitlines(keepends=True)[:2]))
    assert run_loader(ckpt, questions, answers, "--reduction-budget", "8") == 0
    assert len(read_lines(answers)) == 3
    settings = json.loads(sidecar.read_text())
    settings["reduction"]["num_neighbors"] = 16  # made with another reduction
    sidecar.write_text(json.dumps(settings))
    answers.write_text("".join(answers.read_text().splitlines(keepends=True)[:2]))
    assert run_loader(ckpt, questions, answers, "--reduction-budget", "8") == 2


def test_answer_file_reader_drops_only_a_cut_last_line(tmp_path):
    path = tmp_path / "answers.jsonl"
    path.write_text('{"question_id": 1}\n\n{"question_id": "1"}\n{"question_id": 2, "te')
    state = read_answer_file(path)
    assert state.count == 2 and state.keep_bytes == len('{"question_id": 1}\n\n{"question_id": "1"}\n')
    assert not state.needs_newline
    path.write_text('{"question_id": 1}')  # complete but unterminated: kept, a newline goes first
    state = read_answer_file(path)
    assert state.count == 1 and state.needs_newline and state.keep_bytes == path.stat().st_size
    with open_for_append(path, state) as handle:
        handle.write('{"question_id": 2}\n')
    assert [line["question_id"] for line in read_lines(path)] == [1, 2]


def test_resume_with_repeated_question_ids(ckpt, tmp_path):
    """MME asks two questions per image under one id: each occurrence gets its own answer."""
    rows = [{**row, "question_id": "same/0001.png"} for row in generated_rows(2)] + generated_rows(1, "x")
    questions = write_questions(tmp_path, rows)
    answers = tmp_path / "answers.jsonl"
    answers.write_text("")
    assert run_loader(ckpt, questions, answers) == 0
    first = answers.read_text().splitlines(keepends=True)
    assert [json.loads(line)["question_id"] for line in first] == ["same/0001.png", "same/0001.png", "x0"]
    answers.write_text(first[0])
    assert run_loader(ckpt, questions, answers) == 0
    again = read_lines(answers)
    assert [a["prompt"] for a in again] == [row["text"] for row in rows]


def test_chunks_cover_every_question_once(ckpt, tmp_path):
    """Two shards (3 + 2 questions) concatenate to the unsharded answers; a shard's file is not the other's."""
    questions = write_questions(tmp_path, generated_rows(5))
    assert run_loader(ckpt, questions, tmp_path / "all.jsonl") == 0
    for idx in (0, 1):
        assert (
            run_loader(
                ckpt, questions, tmp_path / f"2_{idx}.jsonl", "--num-chunks", "2", "--chunk-idx", str(idx)
            )
            == 0
        )
    shards = [read_lines(tmp_path / f"2_{idx}.jsonl") for idx in (0, 1)]
    assert [len(shard) for shard in shards] == [3, 2]
    merged = shards[0] + shards[1]
    full = read_lines(tmp_path / "all.jsonl")
    assert [a["question_id"] for a in merged] == [a["question_id"] for a in full]
    assert [a["text"] for a in merged] == [a["text"] for a in full]

    assert split_list(list(range(5)), 4) == [[0, 1], [2, 3], [4]]
    assert get_chunk(list(range(5)), 4, 3) == []  # fewer slices than shards: an empty shard
    with pytest.raises(ValueError, match="--chunk-idx"):
        get_chunk(list(range(5)), 2, 2)


def test_question_file_line_that_is_not_json(ckpt, tmp_path, capsys):
    questions = write_questions(tmp_path, generated_rows(2))
    with questions.open("a") as handle:
        handle.write('{"question_id": "q9", "image": \n')
    assert run_loader(ckpt, questions, tmp_path / "answers.jsonl") == 2
    assert f"{questions}:3" in capsys.readouterr().err
    assert not (tmp_path / "answers.jsonl").exists()


def test_missing_image_is_named_before_loading_and_answers_are_kept(ckpt, tmp_path, capsys):
    rows = generated_rows(4)
    questions = write_questions(tmp_path, rows[:3])
    answers = tmp_path / "answers.jsonl"
    assert run_loader(ckpt, questions, answers) == 0
    before = answers.read_bytes()
    questions = write_questions(tmp_path, [*rows[:3], {**rows[3], "image": "nowhere/missing.png"}])
    (tmp_path / "images" / "nowhere" / "missing.png").unlink()
    capsys.readouterr()
    assert run_loader(ckpt, questions, answers) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "images" / "nowhere" / "missing.png") in err
    assert "question_id 'q3'" in err and f"{questions} line 4" in err
    assert answers.read_bytes() == before


def test_unreadable_image_stops_the_run_after_flushed_answers(ckpt, tmp_path, capsys):
    questions = write_questions(tmp_path, generated_rows(4))
    (tmp_path / "images" / "q2.png").write_text("not a png")
    answers = tmp_path / "answers.jsonl"
    assert run_loader(ckpt, questions, answers) == 2
    err = capsys.readouterr().err
    assert "q2.png" in err and "question_id 'q2'" in err and f"{questions} line 3" in err
    assert [a["question_id"] for a in read_lines(answers)] == ["q0", "q1"]


def test_foreign_or_corrupt_answers_file_is_refused_untouched(ckpt, tmp_path, capsys):
    questions = write_questions(tmp_path, generated_rows(3))
    answers = tmp_path / "answers.jsonl"
    answers.write_text(
        json.dumps({"question_id": "q0", "text": "a"})
        + "\n"
        + json.dumps({"question_id": 77, "text": "b"})
        + "\n"
    )
    before = answers.read_bytes()
    assert run_loader(ckpt, questions, answers) == 2
    err = capsys.readouterr().err
    assert str(answers) in err and "question_id 77" in err and "another question set" in err
    assert answers.read_bytes() == before

    answers.write_text('{"question_id": "q0"}\n{"question_id": \n{"question_id": "q1"}\n')
    assert run_loader(ckpt, questions, answers) == 2
    assert f"{answers} line 2 is not JSON" in capsys.readouterr().err


def test_loader_as_a_module(ckpt, tmp_path):
    """``python -m llava.eval.model_vqa_loader`` in a fresh interpreter, with a token-reduction override."""
    questions = write_questions(tmp_path, generated_rows(2))
    answers = tmp_path / "out" / "answers.jsonl"
    argv = ["--model-path", str(ckpt), "--question-file", str(questions), "--answers-file", str(answers)]
    argv += ["--image-folder", str(tmp_path / "images"), "--max-new-tokens", "3", "--device", "cpu"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run(
        [sys.executable, "-m", "llava.eval.model_vqa_loader", *argv, "--token-reduction", "none"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "token reduction none, dtype float32" in result.stderr  # --dtype auto on the CPU
    assert [a["num_visual_tokens"] for a in read_lines(answers)] == [576, 576]


# ---------------------------------------------------------------------------------------------
# model_vqa_science
# ---------------------------------------------------------------------------------------------


def science_items() -> list[dict]:
    """The first four ScienceQA items (two text-only, two with an image), real when available."""
    if SQA_QUESTIONS.is_file():
        return json.loads(SQA_QUESTIONS.read_text())[:4]
    human = "<image>\nContext: A picture.\nWhich animal is shown?\nA. cat\nB. dog"
    return [
        {"id": "4", "conversations": [{"from": "human", "value": "Which word rhymes?\nA. cat\nB. sun"}]},
        {"id": "5", "image": "5/image.png", "conversations": [{"from": "human", "value": human}]},
        {
            "id": "11",
            "image": "11/image.png",
            "conversations": [{"from": "human", "value": human + "\nC. ox"}],
        },
        {"id": "15", "conversations": [{"from": "human", "value": "Context: none.\nPick one.\nA. x\nB. y"}]},
    ]


def test_science_runner_text_only_and_image_items(ckpt, loaded, tmp_path):
    """Text-only items get no image at all; image items get ``<image>\\n`` first; prompts as upstream."""
    items = science_items()
    images = {item["image"]: make_image(i) for i, item in enumerate(items) if item.get("image")}
    for name, image in images.items():
        (tmp_path / "images" / name).parent.mkdir(parents=True, exist_ok=True)
        image.save(tmp_path / "images" / name)
    questions = tmp_path / "sqa.json"
    questions.write_text(json.dumps(items))
    argv = [
        "--model-path",
        str(ckpt),
        "--question-file",
        str(questions),
        "--image-folder",
        str(tmp_path / "images"),
    ]
    argv += ["--single-pred-prompt", "--temperature", "0", "--max_new_tokens", "4", "--device", "cpu"]
    for size in ("1", "2"):
        answers = tmp_path / f"b{size}.jsonl"
        assert model_vqa_science.main([*argv, "--answers-file", str(answers), "--batch-size", size]) == 0
    single, batched = read_lines(tmp_path / "b1.jsonl"), read_lines(tmp_path / "b2.jsonl")
    assert [a["text"] for a in batched] == [a["text"] for a in single]

    counts = iter(tower_counts(loaded, [load_image(tmp_path / "images" / name) for name in images]))
    for answer, item in zip(single, items):
        assert list(answer) == [*UPSTREAM_FIELDS, "num_visual_tokens"]
        human = item["conversations"][0]["value"].replace("<image>", "").strip()
        assert answer["question_id"] == item["id"]
        assert answer["prompt"].endswith(f"{human}\n{OPTION_SUFFIX}")
        if item.get("image"):
            assert answer["prompt"] == f"<image>\n{human}\n{OPTION_SUFFIX}"
            assert answer["num_visual_tokens"] == next(counts) > 0
        else:
            assert answer["prompt"] == f"{human}\n{OPTION_SUFFIX}"
            assert answer["num_visual_tokens"] == 0
    if SQA_QUESTIONS.is_file() and SQA_ANSWERS.is_file():
        upstream = [json.loads(line) for line in SQA_ANSWERS.read_text().splitlines()[:4]]
        assert [a["prompt"] for a in single] == [u["prompt"] for u in upstream]

    tokenizer, model, _ = loaded  # the text-only answer is the language model's alone
    from llava.prompting import prompt_ids

    ids = prompt_ids(tokenizer, single[0]["prompt"], "vicuna_v1")
    with torch.no_grad():
        out = model.generate(
            ids[None], attention_mask=torch.ones_like(ids)[None], max_new_tokens=4, do_sample=False
        )
    assert tokenizer.decode(out[0], skip_special_tokens=True).strip() == single[0]["text"]  # new tokens only


def test_science_runner_in_bfloat16(ckpt, tmp_path, capsys):
    """``--dtype bfloat16`` answers every item, text-only ones included, and logs the dtype it loaded."""
    items = science_items()
    for i, item in enumerate(items):
        if item.get("image"):
            (tmp_path / "images" / item["image"]).parent.mkdir(parents=True, exist_ok=True)
            make_image(i).save(tmp_path / "images" / item["image"])
    questions = tmp_path / "sqa.json"
    questions.write_text(json.dumps(items))
    answers = tmp_path / "bf16.jsonl"
    argv = ["--model-path", str(ckpt), "--question-file", str(questions), "--answers-file", str(answers)]
    argv += ["--image-folder", str(tmp_path / "images"), "--max_new_tokens", "2", "--device", "cpu"]
    assert model_vqa_science.main([*argv, "--dtype", "bfloat16", "--batch-size", "2"]) == 0
    lines = read_lines(answers)
    assert [a["question_id"] for a in lines] == [item["id"] for item in items]
    assert [a["num_visual_tokens"] > 0 for a in lines] == [bool(item.get("image")) for item in items]
    assert "dtype bfloat16" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# model_vqa_mmbench
# ---------------------------------------------------------------------------------------------


def png_base64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_mmbench_runner_prompts_and_options(ckpt, loaded, tmp_path):
    """Hints that are NaN/"nan" are left out, options stop at the first missing one, images decode."""
    import pandas as pd

    nan = float("nan")
    images = [make_image(0), make_image(3)]
    table = pd.DataFrame(
        [
            {
                "index": 10,
                "question": "What is shown?",
                "hint": nan,
                "A": "cat",
                "B": "dog",
                "C": "1",
                "D": nan,
            },
            {"index": 11, "question": "Which?", "hint": "A hint.", "A": "x", "B": "y", "C": "z", "D": "w"},
            {
                "index": 1000010,
                "question": "What is shown?",
                "hint": "nan",
                "A": "dog",
                "B": "cat",
                "C": nan,
                "D": "1",
            },
        ]
    )
    table["image"] = [png_base64(images[0]), png_base64(images[1]), "10"]  # row 3 reuses row 1's image
    table["answer"], table["category"] = ["A", "B", "B"], ["c1", "c2", "c1"]
    questions = tmp_path / "mmbench.tsv"
    table.to_csv(questions, sep="\t", index=False)
    answers = tmp_path / "answers.jsonl"
    argv = ["--model-path", str(ckpt), "--question-file", str(questions), "--answers-file", str(answers)]
    argv += ["--single-pred-prompt", "--temperature", "0", "--max_new_tokens", "3", "--device", "cpu"]
    assert model_vqa_mmbench.main([*argv, "--batch-size", "2"]) == 0

    got = read_lines(answers)
    fields = ["question_id", "round_id", "prompt", "text", "options", "option_char", "answer_id", "model_id"]
    assert list(got[0]) == [*fields, "metadata", "num_visual_tokens"]
    if MMBENCH_ANSWERS.is_file():
        assert list(json.loads(MMBENCH_ANSWERS.read_text().splitlines()[0])) == [*fields, "metadata"]
    assert [a["question_id"] for a in got] == [10, 11, 1000010]
    assert [a["round_id"] for a in got] == [0, 0, 0]
    assert got[0]["prompt"] == "What is shown?\nA. cat\nB. dog\nC. 1"
    assert got[1]["prompt"] == "A hint.\nWhich?\nA. x\nB. y\nC. z\nD. w"
    assert got[2]["prompt"] == "What is shown?\nA. dog\nB. cat"
    assert [a["options"] for a in got] == [["cat", "dog", "1"], ["x", "y", "z", "w"], ["dog", "cat"]]
    assert [a["option_char"] for a in got] == [["A", "B", "C"], ["A", "B", "C", "D"], ["A", "B"]]
    counts = tower_counts(loaded, images)
    assert [a["num_visual_tokens"] for a in got] == [counts[0], counts[1], counts[0]]

    args = model_vqa_mmbench.parser().parse_args([*argv, "--lang", "cn"])
    texts = [q.text for q in model_vqa_mmbench.load_questions(args)]
    assert texts[1] == "<image>\nA hint.\nWhich?\nA. x\nB. y\nC. z\nD. w\n请直接回答选项字母。"


# ---------------------------------------------------------------------------------------------
# Benchmark declarations (llava.eval.benchmarks): the generation side
# ---------------------------------------------------------------------------------------------


def test_declared_generation_settings_are_the_runners():
    """Each built-in declaration's runner reads questions with ``load_questions``, defaults to the declared
    ``max_new_tokens`` and has the declared suffix flag."""
    from llava.eval import benchmarks

    required = ["--model-path", "m", "--question-file", "q", "--answers-file", "a"]
    runners = {benchmark.runner for benchmark in benchmarks.benchmarks()}
    assert "llava.eval.model_video_qa" in runners  # the video-QA declarations are discovered
    for benchmark in benchmarks.benchmarks():
        runner = importlib.import_module(benchmark.runner)
        assert callable(runner.load_questions), benchmark.name
        parser = runner.parser()
        assert parser.get_default("max_new_tokens") == benchmark.max_new_tokens, benchmark.name
        if benchmark.suffix_flag:
            assert parser.parse_args([*required, benchmark.suffix_flag]).single_pred_prompt


def test_a_benchmark_declared_in_a_test_runs_scores_and_reports(ckpt, tmp_path):
    """A new benchmark is a declaration plus two small functions (question loading for the shared runner
    machinery, and scoring); the report shows it with no change to ``llava.eval.report``."""
    from llava.eval import benchmarks, report
    from llava.eval.benchmarks import Benchmark
    from llava.eval.io import read_json, read_jsonl, write_scores
    from llava.eval.runner import ImageFile, Question, build_parser, prompt_with_image, run_main

    toy = Benchmark(
        name="toy-shapes",
        column="Shapes",
        metric="exact_match_percent",
        metric_name="answers equal to the gold word after lower-casing and stripping, x100",
        runner=__name__,
        scorer=__name__,
        prompt_suffix="Answer with one word.",
        max_new_tokens=3,
        parse_answer=lambda text: text.strip().lower(),
    )

    def load_questions(args):
        questions = []
        for i, item in enumerate(read_json(args.question_file)):
            text = prompt_with_image(f"{item['q']}\n{toy.prompt_suffix}", True)
            image = ImageFile(Path(args.image_folder) / item["image"])
            head = {"question_id": item["id"], "prompt": text.removeprefix("<image>\n")}
            questions.append(Question(item["id"], text, image, head=head, where=f"item {i}"))
        return questions

    def score(gold: dict, result_file: Path) -> dict:
        answers = read_jsonl(result_file)
        right = sum(toy.parse_answer(a["text"]) == gold[a["question_id"]] for a in answers)
        scores = toy.stamp({"exact_match_percent": 100 * right / len(gold), "count": len(gold)})
        write_scores(result_file, scores)
        return scores

    items = [{"id": f"s{i}", "image": f"s{i}.png", "q": "Which shape is red?"} for i in range(3)]
    for seed, item in enumerate(items):
        (tmp_path / "images").mkdir(exist_ok=True)
        make_image(seed).save(tmp_path / "images" / item["image"])
    (tmp_path / "toy.json").write_text(json.dumps(items))
    answers = tmp_path / "toy" / "answers" / "tiny-prumerge.jsonl"
    parser = build_parser("toy", "Answer the toy benchmark.", max_new_tokens=toy.max_new_tokens)
    parser.add_argument("--image-folder", default="")
    argv = ["--model-path", str(ckpt), "--question-file", str(tmp_path / "toy.json")]
    argv += ["--answers-file", str(answers), "--image-folder", str(tmp_path / "images"), "--device", "cpu"]

    benchmarks.register(toy)
    try:
        assert run_main(argv, parser, load_questions) == 0
        lines = read_lines(answers)
        assert [a["prompt"] for a in lines] == [f"Which shape is red?\n{toy.prompt_suffix}"] * 3
        scores = score({item["id"]: "rectangle" for item in items}, answers)
        report.main(["--results", str(tmp_path / "toy"), "--json", str(tmp_path / "r.json")])
    finally:
        benchmarks.unregister(toy.name)
    cell = json.loads((tmp_path / "r.json").read_text())["tiny-prumerge"]["Shapes"]
    assert cell["score"] == pytest.approx(scores["exact_match_percent"])
    assert cell["visual_tokens"] == pytest.approx(np.mean([a["num_visual_tokens"] for a in lines]))
    assert cell["visual_tokens"] > 0
