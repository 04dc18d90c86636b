"""Tests of the quick-start synthetic dataset generator (llava.quickstart.data)."""

from __future__ import annotations

import json
import re

import pytest

from llava.eval.io import read_json, read_jsonl
from llava.quickstart.data import generate_dataset


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    return generate_dataset(
        tmp_path_factory.mktemp("qs") / "data", n_train=40, n_eval=12, image_size=64, seed=3
    )


def test_deterministic(tmp_path, dataset):
    other = generate_dataset(tmp_path / "again", n_train=40, n_eval=12, image_size=64, seed=3)
    assert other.train.read_bytes() == dataset.train.read_bytes()
    assert (other.images / "train_00000.png").read_bytes() == (
        dataset.images / "train_00000.png"
    ).read_bytes()
    different = generate_dataset(tmp_path / "seed4", n_train=40, n_eval=12, image_size=64, seed=4)
    assert different.train.read_bytes() != dataset.train.read_bytes()


def test_counts_match_objects(dataset):
    meta = read_json(dataset.eval_meta)
    answers = read_json(dataset.vqa_answers)
    for row in read_jsonl(dataset.vqa_questions):
        objects = meta[row["image"]]["objects"]
        assert meta[row["image"]]["n_objects"] == len(objects)
        if row["category"] == "count":
            assert answers[str(row["question_id"])] == str(len(objects))
        else:
            shape = re.search(r"the (\w+)\?", row["text"]).group(1)
            assert [o["colour"] for o in objects if o["shape"] == shape] == [answers[str(row["question_id"])]]


def test_train_and_pretrain_format(dataset):
    train = json.loads(dataset.train.read_text())
    assert any("image" not in s for s in train)
    for sample in train:
        first = sample["conversations"][0]["value"]
        assert first.startswith("<image>\n") == ("image" in sample)
        assert [t["from"] for t in sample["conversations"]][:2] == ["human", "gpt"]
    pretrain = json.loads(dataset.pretrain.read_text())
    assert all(s["conversations"][0]["value"] == "<image>" for s in pretrain)


def test_pope_balanced_and_aligned(dataset):
    questions = read_jsonl(dataset.pope_questions)
    for category in ("adversarial", "popular", "random"):
        labels = read_jsonl(dataset.pope_labels / f"coco_pope_{category}.json")
        asked = [q for q in questions if q["category"] == category]
        assert len(asked) == len(labels)
        assert sum(r["label"] == "yes" for r in labels) * 2 == len(labels)
        meta = read_json(dataset.eval_meta)
        for question, label in zip(asked, labels):
            assert question["text"].startswith(label["text"]) and question["image"] == label["image"]
            colour, shape = re.match(r"Is there a (\w+) (\w+) in", label["text"]).groups()
            present = any(
                o["colour"] == colour and o["shape"] == shape for o in meta[label["image"]]["objects"]
            )
            assert present == (label["label"] == "yes")


def test_sqa_gold_letters(dataset):
    items = json.loads(dataset.sqa_questions.read_text())
    meta = read_json(dataset.eval_meta)
    assert read_json(dataset.sqa_dir / "pid_splits.json")["test"] == [i["id"] for i in items]
    for item in items:
        human, gold = item["conversations"][0]["value"], item["conversations"][1]["value"]
        options = dict(re.findall(r"^([A-E])\. (.+)$", human, flags=re.M))
        objects = meta[item["image"]]["objects"]
        if "How many" in human:
            assert options[gold] == str(len(objects))
        else:
            shape = re.search(r"the (\w+)\?", human).group(1)
            assert [o["colour"] for o in objects if o["shape"] == shape] == [options[gold]]


def test_reuse_keeps_files(dataset):
    before = {p: p.stat().st_mtime_ns for p in dataset.root.rglob("*") if p.is_file()}
    again = generate_dataset(dataset.root, n_train=40, n_eval=12, image_size=64, seed=3)
    assert again.reused
    assert {p: p.stat().st_mtime_ns for p in dataset.root.rglob("*") if p.is_file()} == before


def test_train_dataset_loads(dataset, tiny_tokenizer_dir, tmp_path):
    from transformers import AutoTokenizer

    from llava.mm_utils import load_image_processor
    from llava.tiny import save_image_processor
    from llava.train.data import LazySupervisedDataset

    save_image_processor(tmp_path, image_size=64)
    tokenizer = AutoTokenizer.from_pretrained(tiny_tokenizer_dir)
    ds = LazySupervisedDataset(
        str(dataset.train), tokenizer, load_image_processor(str(tmp_path)), "v1", str(dataset.images)
    )
    item = ds[0]
    assert item["image"].shape[-1] == 64
    assert (item["labels"] != -100).any()


def test_either_or_questions_offer_the_answer_and_one_wrong_option():
    import random

    from llava.quickstart.data import COLOURS, SHAPES, choice_turns, sample_scene

    seen = set()
    for seed in range(200):
        rng = random.Random(seed)
        scene = sample_scene(rng, 168)
        for question, answer in choice_turns(rng, scene):
            shape = re.match(r"Is the (\w+) (\w+) or (\w+)\?", question)
            colour = re.match(r"Is the (\w+) shape a (\w+) or a (\w+)\?", question)
            if colour:  # "Is the red shape a circle or a square?": the one red object's shape
                named, options = colour.group(1), colour.groups()[1:]
                matching = [o["shape"] for o in scene if o["colour"] == named]
                assert named in COLOURS and set(options) <= set(SHAPES)
                seen.add("shape")
            else:  # "Is the circle red or blue?": the one circle's colour
                named, options = shape.group(1), shape.groups()[1:]
                matching = [o["colour"] for o in scene if o["shape"] == named]
                assert named in SHAPES and set(options) <= set(COLOURS)
                seen.add("colour")
            assert matching == [answer]
            assert answer in options and options[0] != options[1]
    assert seen == {"colour", "shape"}


def test_each_image_has_two_present_and_two_absent_pairs_asked(dataset):
    scenes = read_json(dataset.root / "scenes.json")["train"]
    train = [s for s in json.loads(dataset.train.read_text()) if "image" in s]
    for sample in train:
        turns = sample["conversations"]
        presence = [
            (re.search(r"Is there a (\w+) (\w+) in", q["value"]).groups(), a["value"])
            for q, a in zip(turns[::2], turns[1::2])
            if "Is there a" in q["value"]
        ]
        assert sorted(answer for _, answer in presence) == ["No", "No", "Yes", "Yes"]
        present = {(o["colour"], o["shape"]) for o in scenes[sample["image"]]}
        assert all((pair in present) == (answer == "Yes") for pair, answer in presence)
