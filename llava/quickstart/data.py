"""Deterministic synthetic visual-instruction data: coloured shapes on textured backgrounds.

:func:`generate_dataset` writes, under ``out_dir``::

    images/                       train_XXXXX.png and eval_XXXXX.png (PIL only)
    train.json                    LLaVA instruction data (counts, colours, yes/no, captions, text-only)
    pretrain.json                 caption-only samples for projector pretraining (``plain`` template)
    pope/llava_pope_test.jsonl    POPE questions (adversarial / popular / random)
    pope/coco/coco_pope_<c>.json  POPE labels, one JSON object per line, matched by position
    scienceqa/llava_test_CQM-A.json, scienceqa/pid_splits.json
    vqa/questions.jsonl, vqa/answers.json   short-answer questions and their ground truth
    vqa/textvqa_val.json          the same ground truth in TextVQA's annotation layout (for eval_textvqa)
    eval_meta.json                {image: {"n_objects": k, "objects": [...]}} for every eval image
    scenes.json                   {"train": {image: objects}, "eval": {...}} (the vision tower's targets)
    manifest.json                 the arguments and file counts; a matching manifest means "reuse"

All eval image paths are relative to ``images/`` (pass it as the runners' image folder).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw

MANIFEST_VERSION = 6
SHORT_SUFFIX = "\nAnswer the question using a single word or phrase."
MC_SUFFIX = "\nAnswer with the option's letter from the given choices directly."
SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 210, 40),
    "purple": (150, 60, 190),
    "orange": (240, 140, 30),
}
NUMBER_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
POPE_CATEGORIES = ("adversarial", "popular", "random")
POPE_ID_OFFSETS = {"adversarial": 0, "popular": 20_000_000, "random": 30_000_000}
SQA_CONTEXT = "The picture shows coloured shapes on a textured background."
TEXT_ONLY_QA = (
    ("How many sides does a triangle have?", "3"),
    ("How many corners does a square have?", "4"),
    ("Does a circle have corners?", "No"),
    ("What colour do you get by mixing blue and yellow?", "green"),
    ("What colour do you get by mixing red and yellow?", "orange"),
    ("Is a square a kind of shape?", "Yes"),
)

Scene = list[dict[str, Any]]


@dataclass(frozen=True)
class DatasetPaths:
    """Where :func:`generate_dataset` put each file (``reused``: an existing folder was kept)."""

    root: Path
    images: Path
    train: Path
    pretrain: Path
    pope_questions: Path
    pope_labels: Path
    sqa_dir: Path
    sqa_questions: Path
    vqa_questions: Path
    vqa_answers: Path
    vqa_annotations: Path
    eval_meta: Path
    scenes: Path
    manifest: Path
    reused: bool = False

    @classmethod
    def under(cls, root: str | Path, reused: bool = False) -> DatasetPaths:
        """The layout below ``root``."""
        root = Path(root)
        return cls(
            root=root,
            images=root / "images",
            train=root / "train.json",
            pretrain=root / "pretrain.json",
            pope_questions=root / "pope" / "llava_pope_test.jsonl",
            pope_labels=root / "pope" / "coco",
            sqa_dir=root / "scienceqa",
            sqa_questions=root / "scienceqa" / "llava_test_CQM-A.json",
            vqa_questions=root / "vqa" / "questions.jsonl",
            vqa_answers=root / "vqa" / "answers.json",
            vqa_annotations=root / "vqa" / "textvqa_val.json",
            eval_meta=root / "eval_meta.json",
            scenes=root / "scenes.json",
            manifest=root / "manifest.json",
            reused=reused,
        )


# ---------------------------------------------------------------------------------------------
# Scenes and drawing
# ---------------------------------------------------------------------------------------------


def sample_scene(rng: random.Random, image_size: int, max_objects: int = 6) -> Scene:
    """1–``max_objects`` shapes with random colour, size and non-overlapping position (rejection sampling)."""
    target = rng.randint(1, max_objects)
    lo, hi = max(6, image_size // 14), max(8, image_size // 7)
    scene: Scene = []
    for _ in range(target * 50):
        if len(scene) == target:
            break
        half = rng.randint(lo, hi)
        x = rng.randint(half + 2, image_size - half - 3)
        y = rng.randint(half + 2, image_size - half - 3)
        if all(max(abs(x - o["x"]), abs(y - o["y"])) > half + o["size"] + 4 for o in scene):
            scene.append(
                {
                    "shape": rng.choice(SHAPES),
                    "colour": rng.choice(list(COLOURS)),
                    "x": x,
                    "y": y,
                    "size": half,
                }
            )
    return scene


def _background(rng: random.Random, image_size: int) -> Image.Image:
    """A light, low-contrast textured background: noise or stripes."""
    base = tuple(rng.randint(170, 215) for _ in range(3))
    if rng.random() < 0.5:
        noise = Image.frombytes("L", (image_size, image_size), rng.randbytes(image_size * image_size))
        noise = noise.point(lambda v: v // 8)
        channels = [noise.point(lambda v, b=b: b - 16 + v) for b in base]
        return Image.merge("RGB", channels)
    image = Image.new("RGB", (image_size, image_size), base)
    draw = ImageDraw.Draw(image)
    period = rng.randint(6, 20)
    shade = tuple(max(0, c - rng.randint(8, 20)) for c in base)
    for pos in range(0, 2 * image_size, period):
        if rng.random() < 0.5:
            draw.line([(pos, 0), (pos - image_size, image_size)], fill=shade, width=max(1, period // 3))
        else:
            draw.line([(0, pos), (image_size, pos)], fill=shade, width=max(1, period // 3))
    return image


def draw_scene(scene: Scene, image_size: int, rng: random.Random) -> Image.Image:
    """Render ``scene`` on a textured background."""
    image = _background(rng, image_size)
    draw = ImageDraw.Draw(image)
    for obj in scene:
        x, y, h, fill = obj["x"], obj["y"], obj["size"], COLOURS[obj["colour"]]
        if obj["shape"] == "circle":
            draw.ellipse([x - h, y - h, x + h, y + h], fill=fill)
        elif obj["shape"] == "square":
            draw.rectangle([x - h, y - h, x + h, y + h], fill=fill)
        else:
            draw.polygon([(x, y - h), (x - h, y + h), (x + h, y + h)], fill=fill)
    return image


def caption(scene: Scene) -> str:
    """A short caption, e.g. ``"two red circles and a blue square"`` (groups in order of appearance)."""
    groups = Counter((o["colour"], o["shape"]) for o in scene)
    parts = []
    for (colour, shape), count in groups.items():
        if count == 1:
            parts.append(f"a {colour} {shape}")
        else:
            parts.append(f"{NUMBER_WORDS[count]} {colour} {shape}s")
    if len(parts) == 1:
        return parts[0]
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def unique_shapes(scene: Scene) -> list[dict[str, Any]]:
    """The objects whose shape occurs once in the scene (so "the <shape>" is unambiguous)."""
    counts = Counter(o["shape"] for o in scene)
    return [o for o in scene if counts[o["shape"]] == 1]


def present_pairs(scene: Scene) -> set[tuple[str, str]]:
    """The (colour, shape) pairs in the scene."""
    return {(o["colour"], o["shape"]) for o in scene}


def absent_pairs(scene: Scene) -> list[tuple[str, str]]:
    """All (colour, shape) pairs not in the scene, in a fixed order."""
    present = present_pairs(scene)
    return [(c, s) for c in COLOURS for s in SHAPES if (c, s) not in present]


# ---------------------------------------------------------------------------------------------
# Questions
# ---------------------------------------------------------------------------------------------


def train_turns(rng: random.Random, scene: Scene) -> list[tuple[str, str]]:
    """4–5 (question, answer) turns about ``scene``: a yes and a no presence question (so that the answer
    depends on the question, not only on the image), plus counts, colours, multiple choice or a caption."""
    options: list[tuple[str, str]] = [
        (f"How many shapes are there?{SHORT_SUFFIX}", str(len(scene))),
        ("Describe the image briefly.", caption(scene)),
    ]
    colour = rng.choice(scene)["colour"]
    n_colour = sum(o["colour"] == colour for o in scene)
    options.append((f"How many {colour} shapes are there?{SHORT_SUFFIX}", str(n_colour)))
    unique = unique_shapes(scene)
    if unique:
        obj = rng.choice(unique)
        options.append((f"What colour is the {obj['shape']}?{SHORT_SUFFIX}", obj["colour"]))
    question, choices, gold = sqa_item(rng, scene)  # multiple choice, as A-OKVQA in LLaVA-1.5's mix
    options.append((f"{multiple_choice_text(question, choices)}{MC_SUFFIX}", chr(65 + gold)))
    rng.shuffle(options)
    turns = options[: rng.choice((2, 3))] + choice_turns(rng, scene)
    for _ in range(2):
        obj = rng.choice(scene)
        colour, shape = rng.choice(absent_pairs(scene))
        turns += [
            (f"Is there a {obj['colour']} {obj['shape']} in the image?{SHORT_SUFFIX}", "Yes"),
            (f"Is there a {colour} {shape} in the image?{SHORT_SUFFIX}", "No"),
        ]
    rng.shuffle(turns)
    return turns  # several turns share one image's visual tokens, as in LLaVA's data


def choice_turns(rng: random.Random, scene: Scene) -> list[tuple[str, str]]:
    """Either-or questions ("Is the circle red or blue?", "Is the red shape a circle or a square?") about
    objects whose shape, or colour, occurs once. Copying either offered word is right half the time, and
    choosing between them needs the image: a foothold that presence questions (where neither the question nor
    the image alone predicts the answer) lack. In controlled runs with full finetuning, presence questions rose
    above chance only when these were mixed in."""
    turns = []
    unique = unique_shapes(scene)
    if unique:
        obj = rng.choice(unique)
        options = [obj["colour"], rng.choice([c for c in COLOURS if c != obj["colour"]])]
        rng.shuffle(options)
        turns.append((f"Is the {obj['shape']} {options[0]} or {options[1]}?{SHORT_SUFFIX}", obj["colour"]))
    colours = Counter(o["colour"] for o in scene)
    single = [o for o in scene if colours[o["colour"]] == 1]
    if single:
        obj = rng.choice(single)
        options = [obj["shape"], rng.choice([s for s in SHAPES if s != obj["shape"]])]
        rng.shuffle(options)
        turns.append(
            (f"Is the {obj['colour']} shape a {options[0]} or a {options[1]}?{SHORT_SUFFIX}", obj["shape"])
        )
    return turns


def conversation(turns: list[tuple[str, str]], with_image: bool) -> list[dict[str, str]]:
    """LLaVA ``conversations``: the first human turn starts with ``<image>\\n`` when there is an image."""
    messages = []
    for index, (question, answer) in enumerate(turns):
        prefix = "<image>\n" if with_image and index == 0 else ""
        messages.append({"from": "human", "value": prefix + question})
        messages.append({"from": "gpt", "value": answer})
    return messages


def pope_questions(rng: random.Random, scene: Scene, popular: list[tuple[str, str]]) -> dict[str, list]:
    """Per POPE category one present and one absent (colour, shape) pair with labels "yes" / "no".

    Negatives: ``random`` any absent pair; ``popular`` the most frequent training pair not present;
    ``adversarial`` an absent pair sharing the colour or the shape of a present object.
    """
    present = present_pairs(scene)
    absent = absent_pairs(scene)
    near = [p for p in absent if any(p[0] == c or p[1] == s for c, s in present)] or absent
    negatives = {
        "adversarial": rng.choice(near),
        "popular": next(p for p in popular + absent if p not in present),
        "random": rng.choice(absent),
    }
    out = {}
    for category in POPE_CATEGORIES:
        positive = rng.choice(sorted(present))
        pairs = [(positive, "yes"), (negatives[category], "no")]
        rng.shuffle(pairs)
        out[category] = pairs
    return out


def sqa_item(rng: random.Random, scene: Scene) -> tuple[str, list[str], int]:
    """A multiple-choice (question, options, gold index) about the count or a shape's colour."""
    unique = unique_shapes(scene)
    if unique and rng.random() < 0.5:
        obj = rng.choice(unique)
        wrong = rng.sample([c for c in COLOURS if c != obj["colour"]], 2)
        options = [obj["colour"], *wrong]
        question = f"What colour is the {obj['shape']}?"
    else:
        n = len(scene)
        wrong = rng.sample([k for k in range(1, 8) if k != n], 2)
        options = [str(k) for k in (n, *wrong)]
        question = "How many shapes are in the picture?"
    gold = options[0]
    rng.shuffle(options)
    return question, options, options.index(gold)


def multiple_choice_text(question: str, options: list[str]) -> str:
    """ScienceQA's layout: context, question, then one ``A. option`` line per option."""
    listed = "\n".join(f"{chr(65 + k)}. {opt}" for k, opt in enumerate(options))
    return f"Context: {SQA_CONTEXT}\n{question}\n{listed}"


def vqa_questions(rng: random.Random, scene: Scene) -> list[tuple[str, str, str]]:
    """Short-answer (category, question, answer) triples: the count and, if possible, a colour."""
    items = [("count", "How many shapes are there?", str(len(scene)))]
    unique = unique_shapes(scene)
    if unique:
        obj = rng.choice(unique)
        items.append(("colour", f"What colour is the {obj['shape']}?", obj["colour"]))
    return items


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------


def _write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1) + "\n", encoding="utf-8")


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")


def _make_images(paths: DatasetPaths, split: str, count: int, image_size: int, seed: int) -> dict[str, Scene]:
    """Draw and save ``count`` images of ``split``; ``{file name: scene}``."""
    scenes = {}
    for index in range(count):
        rng = random.Random(f"{seed}-{split}-{index}")
        scene = sample_scene(rng, image_size)
        name = f"{split}_{index:05d}.png"
        draw_scene(scene, image_size, rng).save(paths.images / name, compress_level=1)
        scenes[name] = scene
    return scenes


def _write_train(paths: DatasetPaths, scenes: dict[str, Scene], seed: int) -> dict[str, int]:
    """``train.json`` (with a few text-only samples) and ``pretrain.json``."""
    rng = random.Random(f"{seed}-train-questions")
    train, pretrain = [], []
    for name, scene in scenes.items():
        stem = name.removesuffix(".png")
        turns = train_turns(rng, scene)
        train.append({"id": stem, "image": name, "conversations": conversation(turns, True)})
        pretrain.append(
            {"id": stem, "image": name, "conversations": conversation([("", caption(scene))], True)}
        )
        pretrain[-1]["conversations"][0]["value"] = "<image>"
    for index in range(max(1, len(scenes) // 40)):
        question, answer = TEXT_ONLY_QA[index % len(TEXT_ONLY_QA)]
        sample = {"id": f"text_{index:05d}", "conversations": conversation([(question, answer)], False)}
        train.insert(rng.randint(1, len(train)), sample)
    _write_json(paths.train, train)
    _write_json(paths.pretrain, pretrain)
    return {"train": len(train), "pretrain": len(pretrain)}


def _popular_pairs(scenes: dict[str, Scene]) -> list[tuple[str, str]]:
    counts = Counter(pair for scene in scenes.values() for pair in present_pairs(scene))
    return [pair for pair, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


def _write_pope(paths: DatasetPaths, scenes: dict[str, Scene], popular: list, seed: int) -> int:
    """POPE question file (ids offset per category, as upstream) and per-category label files."""
    rng = random.Random(f"{seed}-pope")
    per_image = {name: pope_questions(rng, scene, popular) for name, scene in scenes.items()}
    questions, labels = [], {c: [] for c in POPE_CATEGORIES}
    for category in POPE_CATEGORIES:
        for name, by_category in per_image.items():
            for (colour, shape), label in by_category[category]:
                position = len(labels[category]) + 1
                text = f"Is there a {colour} {shape} in the image?"
                questions.append(
                    {
                        "question_id": POPE_ID_OFFSETS[category] + position,
                        "image": name,
                        "text": text + SHORT_SUFFIX,
                        "category": category,
                    }
                )
                labels[category].append(
                    {"question_id": position, "image": name, "text": text, "label": label}
                )
    _write_jsonl(paths.pope_questions, questions)
    for category, rows in labels.items():
        _write_jsonl(paths.pope_labels / f"coco_pope_{category}.json", rows)
    return len(questions)


def _write_sqa(paths: DatasetPaths, scenes: dict[str, Scene], seed: int) -> int:
    """ScienceQA-style question list and ``pid_splits.json``."""
    rng = random.Random(f"{seed}-sqa")
    items = []
    for index, (name, scene) in enumerate(scenes.items()):
        question, options, gold = sqa_item(rng, scene)
        human = f"<image>\n{multiple_choice_text(question, options)}"
        items.append(
            {
                "id": str(index + 1),
                "image": name,
                "conversations": [
                    {"from": "human", "value": human},
                    {"from": "gpt", "value": chr(65 + gold)},
                ],
            }
        )
    _write_json(paths.sqa_questions, items)
    _write_json(paths.sqa_dir / "pid_splits.json", {"test": [item["id"] for item in items]})
    return len(items)


def _write_vqa(paths: DatasetPaths, scenes: dict[str, Scene], seed: int) -> int:
    """VQA-style ``questions.jsonl`` and ``answers.json`` (``{question_id: answer}``)."""
    rng = random.Random(f"{seed}-vqa")
    questions, answers = [], {}
    for name, scene in scenes.items():
        for category, question, answer in vqa_questions(rng, scene):
            qid = len(questions) + 1
            questions.append(
                {"question_id": qid, "image": name, "text": question + SHORT_SUFFIX, "category": category}
            )
            answers[str(qid)] = answer
    _write_jsonl(paths.vqa_questions, questions)
    _write_json(paths.vqa_answers, answers)
    # TextVQA's annotation layout, so that ``llava.eval.eval_textvqa`` scores these answers: it matches an
    # answer by (question_id, question) against (image_id, question), hence image_id = question_id here.
    annotations = [
        {
            "question_id": q["question_id"],
            "image_id": q["question_id"],
            "question": q["text"].removesuffix(SHORT_SUFFIX),
            "answers": [answers[str(q["question_id"])]] * 10,
        }
        for q in questions
    ]
    _write_json(paths.vqa_annotations, {"dataset_name": "quickstart-shapes", "data": annotations})
    return len(questions)


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------


def _arguments(n_train: int, n_eval: int, image_size: int, seed: int) -> dict[str, int]:
    return {
        "version": MANIFEST_VERSION,
        "n_train": n_train,
        "n_eval": n_eval,
        "image_size": image_size,
        "seed": seed,
    }


def _reusable(paths: DatasetPaths, arguments: dict[str, int]) -> bool:
    """True when ``manifest.json`` matches the arguments and every listed file is there."""
    try:
        manifest = json.loads(paths.manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if manifest.get("arguments") != arguments:
        return False
    n_images = sum(1 for _ in paths.images.glob("*.png")) if paths.images.is_dir() else 0
    if n_images != manifest.get("counts", {}).get("images"):
        return False
    return all((paths.root / name).is_file() for name in manifest.get("files", []))


def generate_dataset(
    out_dir: str | Path, n_train: int = 400, n_eval: int = 100, image_size: int = 336, seed: int = 0
) -> DatasetPaths:
    """Write the synthetic shapes dataset under ``out_dir`` (see the module docstring); deterministic.

    An existing folder whose ``manifest.json`` records the same arguments (and whose files are all
    there) is reused untouched; the returned :class:`DatasetPaths` then has ``reused=True``.
    """
    if n_train < 1 or n_eval < 1 or image_size < 32:
        raise ValueError("n_train and n_eval must be >= 1 and image_size >= 32")
    paths = DatasetPaths.under(out_dir)
    arguments = _arguments(n_train, n_eval, image_size, seed)
    if _reusable(paths, arguments):
        return DatasetPaths.under(out_dir, reused=True)
    paths.manifest.unlink(missing_ok=True)
    paths.images.mkdir(parents=True, exist_ok=True)
    for stale in paths.images.glob("*.png"):
        stale.unlink()
    train_scenes = _make_images(paths, "train", n_train, image_size, seed)
    eval_scenes = _make_images(paths, "eval", n_eval, image_size, seed)
    counts = {"images": n_train + n_eval, **_write_train(paths, train_scenes, seed)}
    counts["pope"] = _write_pope(paths, eval_scenes, _popular_pairs(train_scenes), seed)
    counts["scienceqa"] = _write_sqa(paths, eval_scenes, seed)
    counts["vqa"] = _write_vqa(paths, eval_scenes, seed)
    meta = {name: {"n_objects": len(scene), "objects": scene} for name, scene in eval_scenes.items()}
    _write_json(paths.eval_meta, meta)
    _write_json(paths.scenes, {"train": train_scenes, "eval": eval_scenes})
    files = [p.relative_to(paths.root).as_posix() for p in sorted(paths.root.rglob("*.json*")) if p.is_file()]
    _write_json(paths.manifest, {"arguments": arguments, "counts": counts, "files": files})
    return paths
