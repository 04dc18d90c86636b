"""The quickstart end to end in its reduced preset: every stage for real, on the CPU (about a minute)."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
from tests_support import REPO_ROOT

from llava.model.loader import checkpoint_kind
from llava.quickstart.data import DatasetPaths, generate_dataset
from llava.quickstart.pipeline import (
    METHODS,
    PRESETS,
    StageError,
    pearson,
    pope_items,
    rank_auc,
    run_quickstart,
    spatial_budget,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def reduced_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("quickstart")
    lines: list[str] = []
    summary = run_quickstart(out, PRESETS["reduced"], echo=lines.append)
    return out, summary, lines


def test_every_stage_leaves_its_output(reduced_run):
    out, summary, _ = reduced_run
    assert checkpoint_kind(out / "checkpoints" / "pretrain") == "projector"
    assert checkpoint_kind(out / "checkpoints" / "lora-prumerge-plus") == "lora"
    config = json.loads((out / "checkpoints" / "lora-prumerge-plus" / "config.json").read_text())
    assert config["mm_token_reduction"]["method"] == "prumerge_plus"
    assert json.loads((out / "vision_tower" / "config.json").read_text())["image_size"] == 168
    assert json.loads((out / "summary.json").read_text()) == json.loads(json.dumps(summary))
    assert (out / "summary.md").read_text().startswith("## Table 1")
    for picture in summary["pictures"]:
        assert (out / picture).is_file()
    assert len(summary["pictures"]) == 2 * PRESETS["reduced"].visualise


def test_answers_cover_every_question_for_every_method(reduced_run):
    out, summary, _ = reduced_run
    data = out / "data"
    expected = {
        "pope": sum(1 for _ in (data / "pope" / "llava_pope_test.jsonl").open()),
        "sqa": len(json.loads((data / "scienceqa" / "llava_test_CQM-A.json").read_text())),
        "vqa": sum(1 for _ in (data / "vqa" / "questions.jsonl").open()),
    }
    for method in METHODS:
        for bench, count in expected.items():
            lines = (out / "eval" / method / f"{bench}.jsonl").read_text().splitlines()
            assert len(lines) == count, (method, bench)
        assert (out / "eval" / method / "pope.scores.json").is_file()
    assert set(summary["results"]) == set(METHODS)


def test_token_counts_follow_each_reducer(reduced_run):
    _, summary, _ = reduced_run
    results, budget = summary["results"], summary["prumerge_budget_for_table4"]
    assert results["none"]["visual_tokens"] == 144  # 168 px / 14 px patches = 12 x 12
    assert results["prumerge"]["visual_tokens"] < results["prumerge_plus"]["visual_tokens"] < 144
    assert budget == max(1, round(results["prumerge"]["visual_tokens"]))
    assert results["sequential"]["visual_tokens"] == budget
    assert results["spatial"]["visual_tokens"] == spatial_budget(budget, 12)
    corr = summary["kept_tokens_vs_objects"]
    assert corr["images"] == PRESETS["reduced"].n_eval


def test_pope_margins_cover_every_question(reduced_run):
    out, summary, _ = reduced_run
    margins = summary["pope_margin_auc"]
    assert margins["questions"] == len(pope_items(DatasetPaths.under(out / "data")))
    assert margins["questions"] == sum(1 for _ in (out / "data" / "pope" / "llava_pope_test.jsonl").open())
    for key in ("with_image", "text_only"):
        assert 0.0 <= margins[key]["auc"] <= 1.0
    # the question alone gives the same margin to every copy of one question text; with the image it differs
    assert margins["with_image"]["mean_margin_present"] != margins["text_only"]["mean_margin_present"]
    assert "ROC AUC" in (out / "summary.md").read_text()


def test_pope_items_pair_each_question_with_its_label(tmp_path):
    data = generate_dataset(tmp_path, n_train=4, n_eval=5, image_size=56, seed=3)
    items = pope_items(data)
    scenes = json.loads(data.scenes.read_text())["eval"]
    assert len(items) == 5 * 3 * 2
    for image, text, present in items:
        colour, shape = text.removeprefix("Is there a ").split()[:2]
        assert present == any(o["colour"] == colour and o["shape"] == shape for o in scenes[image])


def test_rank_auc():
    assert rank_auc([2.0, 3.0], [0.0, 1.0]) == 1.0
    assert rank_auc([0.0, 1.0], [2.0, 3.0]) == 0.0
    assert rank_auc([1.0, 1.0], [1.0]) == 0.5  # ties count one half
    assert rank_auc([3.0, 0.0], [1.0, 2.0]) == 0.5
    assert math.isnan(rank_auc([], [1.0]))


def test_second_run_reuses_every_stage(reduced_run):
    out, _, _ = reduced_run
    adapter = out / "checkpoints" / "lora-prumerge-plus" / "adapter_model.safetensors"
    before = adapter.stat().st_mtime_ns
    lines: list[str] = []
    run_quickstart(out, PRESETS["reduced"], echo=lines.append)
    reused = [line for line in lines if "reusing what is there" in line]
    assert len(reused) == 4  # tower, tokenizer + LLM, pretraining, finetuning (the dataset checks itself)
    assert adapter.stat().st_mtime_ns == before


def test_other_settings_in_the_same_folder_are_refused(reduced_run):
    out, _, _ = reduced_run
    other = dataclasses.replace(PRESETS["reduced"], n_train=65)
    with pytest.raises(StageError, match="other settings"):
        run_quickstart(out, other, echo=lambda _: None)


def test_shell_script_refuses_an_unknown_preset(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    result = subprocess.run(
        [
            "bash",
            str(REPO_ROOT / "scripts" / "quickstart.sh"),
            "--output-dir",
            str(tmp_path),
            "--preset",
            "nonsense",
        ],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 2 and "invalid choice: 'nonsense'" in result.stderr


def test_a_failing_training_stage_names_its_log(tmp_path):
    """A corrupt base LLM makes pretrain.sh fail; the error says which log holds the details."""
    out = tmp_path / "qs"
    (out / "base-llm").mkdir(parents=True)
    (out / "base-llm" / "config.json").write_text("{ not json")
    with pytest.raises(StageError, match=r"pretrain\.sh failed .*logs/pretrain\.log"):
        run_quickstart(out, PRESETS["reduced"], echo=lambda _: None)
    assert (out / "vision_tower" / "pretrain_log.json").is_file()  # the stages before it are kept


def test_spatial_budget_is_a_lattice_that_fits():
    assert spatial_budget(19, 12) == 20  # 4 x 5, not a 1 x 19 row
    assert spatial_budget(36, 12) == 36
    assert spatial_budget(200, 12) == 144
    assert spatial_budget(1, 12) == 1


def test_correlation_of_kept_tokens():
    assert pearson([1.0, 2.0, 3.0], [10.0, 20.0, 30.0]) == pytest.approx(1.0)
    assert pearson([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert math.isnan(pearson([1.0, 2.0], [5.0, 5.0]))  # a constant kept count has no correlation
