"""Per-layer visual-token accounting in the answer lines (in-LLM reductions) and N̄ in the report.

A 3-layer tiny LLaVA (CPU, float32, greedy) with ATP at layers 1 and 2 and fixed thresholds, so that each
image keeps its own number of tokens at each stage.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from llava.eval import model_vqa_loader, report

ATP_FLAGS = [
    "--token-reduction",
    "atp",
    "--reduction-atp-layers",
    "1,2",
    "--reduction-atp-redundancy-threshold",
    "0.5",
    "--reduction-atp-spatial-threshold",
    "0.9",
]
FASTV_FLAGS = ["--token-reduction", "fastv", "--reduction-llm-layer", "1", "--reduction-ratio", "0.25"]
QUESTIONS = ["What is this?", "Describe the image in detail please.", "A B"]


@pytest.fixture(scope="module")
def questions(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three questions, each with its own noise image (one of them flat), as a JSON Lines file."""
    folder = tmp_path_factory.mktemp("accounting")
    (folder / "images").mkdir()
    rows = []
    for i, text in enumerate(QUESTIONS):
        pixels = np.random.default_rng(i).integers(0, 256, (100 + 40 * i, 200, 3), dtype=np.uint8)
        if i == 1:
            pixels[:] = 80
        Image.fromarray(pixels).save(folder / "images" / f"q{i}.png")
        rows.append({"question_id": f"q{i}", "image": f"q{i}.png", "text": text})
    path = folder / "questions.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def answer(ckpt: Path, questions: Path, answers: Path, *extra: str) -> list[dict]:
    argv = ["--model-path", str(ckpt), "--question-file", str(questions), "--answers-file", str(answers)]
    argv += ["--image-folder", str(questions.parent / "images"), "--temperature", "0", "--device", "cpu"]
    assert model_vqa_loader.main([*argv, "--max_new_tokens", "3", *extra]) == 0
    return [json.loads(line) for line in answers.read_text().splitlines()]


def test_batched_answers_record_each_samples_own_schedule(tiny_llava_3_layers_dir, questions, tmp_path):
    ckpt = tiny_llava_3_layers_dir
    single = answer(ckpt, questions, tmp_path / "b1.jsonl", *ATP_FLAGS, "--batch-size", "1")
    batched = answer(ckpt, questions, tmp_path / "b3.jsonl", *ATP_FLAGS, "--batch-size", "3")
    schedules = [a["visual_tokens_per_layer"] for a in single]
    assert [a["visual_tokens_per_layer"] for a in batched] == schedules  # row i, not row 0
    assert len({tuple(s) for s in schedules}) == len(QUESTIONS)  # the images kept different numbers
    for line, schedule in zip(batched, schedules):
        assert list(line)[-4:-1] == ["num_visual_tokens", "visual_tokens_per_layer", "mean_visual_tokens"]
        assert line["atp_thresholds"] == {"1": [0.5, 0.9], "2": [0.5, 0.9]}  # the fixed θ_r, θ_s per module
        assert len(schedule) == 3 and schedule[0] == line["num_visual_tokens"] == 576
        assert 576 > schedule[1] >= schedule[2] > 0  # pruned after layers 0 and 1 (inserted at 1, 2)
        assert line["mean_visual_tokens"] == pytest.approx(sum(schedule) / 3, abs=1e-4)
    fastv = answer(ckpt, questions, tmp_path / "fastv.jsonl", *FASTV_FLAGS, "--batch-size", "2")
    assert [a["visual_tokens_per_layer"] for a in fastv] == [[576, 576, 144]] * 3  # layers 0..K, then R
    assert [a["mean_visual_tokens"] for a in fastv] == [432.0] * 3
    assert all("atp_thresholds" not in a for a in fastv)


def test_tower_reductions_add_no_layer_fields_and_old_files_resume(
    tiny_llava_3_layers_dir, questions, tmp_path
):
    path = tmp_path / "none.jsonl"
    lines = answer(tiny_llava_3_layers_dir, questions, path, "--token-reduction", "none")
    assert all("visual_tokens_per_layer" not in a and "mean_visual_tokens" not in a for a in lines)
    old = tmp_path / "old.jsonl"  # an ATP answer written before the fields existed, then a resume
    old.write_text(path.read_text().splitlines()[0] + "\n")
    resumed = answer(tiny_llava_3_layers_dir, questions, old, *ATP_FLAGS)
    assert resumed[0] == lines[0] and [a["question_id"] for a in resumed] == ["q0", "q1", "q2"]
    assert all("visual_tokens_per_layer" in a for a in resumed[1:])


def write_run(folder: Path, name: str, lines: list[dict], score: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    scores = {"benchmark": "pope", "headline": "f1", "f1": score}
    (folder / f"{name}.scores.json").write_text(json.dumps(scores))


def test_report_shows_nbar_marked_beside_spliced_counts(tmp_path):
    atp = [
        {"question_id": 0, "num_visual_tokens": 576, "mean_visual_tokens": 135.25},
        {"question_id": 1, "num_visual_tokens": 576, "mean_visual_tokens": 200.75},
    ]
    write_run(tmp_path / "pope", "atp", atp, 84.0)
    write_run(tmp_path / "pope", "prumerge", [{"question_id": 0, "num_visual_tokens": 32}], 80.0)
    old_atp = [{"question_id": 0, "num_visual_tokens": 576}, atp[1]]  # resumed from an older file: no N̄
    write_run(tmp_path / "pope", "atp-old", old_atp, 83.0)
    markdown = report.main(["--results", str(tmp_path), "--json", str(tmp_path / "r.json")])
    table = json.loads((tmp_path / "r.json").read_text())
    assert table["atp"]["POPE"]["mean_visual_tokens"] == pytest.approx(168.0)
    assert table["atp"]["POPE"]["visual_tokens"] == 576
    assert table["prumerge"]["POPE"]["mean_visual_tokens"] is None
    assert table["atp-old"]["POPE"]["mean_visual_tokens"] is None
    tokens = markdown.split("Average visual tokens per image")[1]
    assert "| atp | - | - | - | 168.0 (N̄) |" in tokens
    assert "| prumerge | - | - | - | 32.0 |" in tokens and "| atp-old | - | - | - | 576.0 |" in tokens
    assert report.NBAR_NOTE in tokens
