"""Tests of ``python -m llava.visualize`` on a tiny random checkpoint (CPU, a few seconds each)."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw
from tests_support import REPO_ROOT

from llava import visualize

SCALE = 2


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full tiny checkpoint recording PruMerge (reference)."""
    from llava.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("viz_ckpt")
    build_tiny_llava(out, reduction="prumerge")
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two different images: a wide white one with shapes and a tall grey one."""
    folder = tmp_path_factory.mktemp("viz_img")
    wide = Image.new("RGB", (200, 120), (255, 255, 255))
    draw = ImageDraw.Draw(wide)
    draw.rectangle((10, 10, 60, 60), fill=(255, 0, 0))
    draw.rectangle((100, 30, 180, 110), fill=(0, 0, 255))
    tall = Image.new("RGB", (90, 160), (200, 200, 200))
    ImageDraw.Draw(tall).ellipse((20, 40, 70, 90), fill=(0, 160, 0))
    paths = [folder / "wide.png", folder / "tall.png"]
    wide.save(paths[0])
    tall.save(paths[1])
    return paths


@pytest.fixture(scope="module")
def tower_run(ckpt: Path, images: list[Path]):
    """``(model, processor, pixels, tower output)`` computed independently of the tool."""
    from llava.mm_utils import process_images
    from llava.model.loader import load_pretrained_model

    _, model, processor, _ = load_pretrained_model(str(ckpt), device="cpu")
    pixels = process_images([Image.open(p) for p in images], processor, "pad")
    with torch.no_grad():
        out = model.get_vision_tower()(pixels)
    return model, processor, pixels, out


@pytest.fixture(scope="module")
def batch_run(ckpt: Path, images: list[Path], tmp_path_factory: pytest.TempPathFactory):
    """Runs the tool once on the two-image batch; returns ``(out folder, JSON content)``."""
    out = tmp_path_factory.mktemp("viz_out")
    argv = ["--model-path", str(ckpt), "--image-file", *map(str, images), "--out", str(out / "kept.png")]
    assert visualize.main(argv) == 0
    return out, json.loads((out / "kept.json").read_text())


def cell_centre(patch: int, cols: int = 24, cell: int = 14) -> tuple[int, int]:
    """``(x, y)`` of a patch's centre in the drawing."""
    row, col = divmod(patch, cols)
    return (col * cell + cell // 2) * SCALE, (row * cell + cell // 2) * SCALE


def test_batch_writes_one_png_per_image_of_the_model_size(batch_run) -> None:
    out, _ = batch_run
    for i in range(2):
        with Image.open(out / f"kept_{i}.png") as img:
            assert img.size == (336 * SCALE, 336 * SCALE)


def test_json_counts_match_the_tower(batch_run, tower_run) -> None:
    _, result = batch_run
    _, _, _, out = tower_run
    assert len(result["images"]) == 2
    for b, record in enumerate(result["images"]):
        assert record["kept_tokens"] == int(out.lengths[b])
        row = out.indices[b]
        assert record["indices"] == row[row >= 0].tolist()
        assert record["outliers"] >= 1
    assert result["reduction"]["method"] == "prumerge"
    assert result["dtype"] == "float32"  # --dtype auto on the CPU


def test_kept_cells_are_bright_and_pruned_cells_dimmed(batch_run, tower_run) -> None:
    out, result = batch_run
    _, processor, pixels, _ = tower_run
    view = visualize.model_view(pixels, processor)[0]  # the model's view, [336, 336, 3]
    kept = result["images"][0]["indices"]
    pruned = next(p for p in range(576) if p not in kept)
    drawing = np.asarray(Image.open(out / "kept_0.png").convert("RGB"))
    for patch, should_match in ((kept[0], True), (pruned, False)):
        x, y = cell_centre(patch)
        original = view[y // SCALE, x // SCALE]
        assert np.array_equal(drawing[y, x], original) is should_match, patch
    x, y = cell_centre(pruned)
    assert not np.array_equal(drawing[y, x], drawing[cell_centre(kept[0])[::-1]])


def test_merge_owner_follows_cosine_neighbours() -> None:
    keys = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [5.0, 4.0]])
    owner = visualize.merge_owner(keys, torch.tensor([0, 2]), num_neighbors=1, cosine=True)
    assert owner.tolist() == [-1, 0, -1, 1, -1]
    dot = visualize.merge_owner(keys, torch.tensor([0, 2]), num_neighbors=1, cosine=False)
    assert dot.tolist() == [-1, -1, -1, -1, 0]  # by dot product both centres pick the large key


def test_hist_makes_a_wider_image(ckpt: Path, images: list[Path], tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "hist.png"
    argv = ["--model-path", str(ckpt), "--image-file", str(images[0]), "--out", str(out), "--hist"]
    assert visualize.main(argv) == 0
    with Image.open(out) as img:
        assert img.width > 336 * SCALE
        assert img.height == 336 * SCALE
    assert json.loads(out.with_suffix(".json").read_text())["images"][0]["png"] == str(out)


def test_out_dir_and_reduction_flags(ckpt: Path, images: list[Path], tmp_path: Path) -> None:
    argv = ["--model-path", str(ckpt), "--image-file", str(images[1]), "--out-dir", str(tmp_path)]
    argv += ["--token-reduction", "aits", "--reduction-budget", "36"]
    assert visualize.main(argv) == 0
    record = json.loads((tmp_path / "counts.json").read_text())["images"][0]
    assert record["kept_tokens"] == 36 and len(record["indices"]) == 36
    assert record["merged_patches"] == 0
    assert (tmp_path / "tall_0.png").is_file()


def test_dtype_bfloat16_runs_the_tower_in_bfloat16(ckpt: Path, images: list[Path], tmp_path: Path) -> None:
    out = tmp_path / "bf16.png"
    argv = [
        "--model-path",
        str(ckpt),
        "--image-file",
        str(images[0]),
        "--out",
        str(out),
        "--dtype",
        "bfloat16",
    ]
    assert visualize.main(argv) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    assert result["dtype"] == "bfloat16"
    record = result["images"][0]
    assert 0 < record["kept_tokens"] < 576 and len(record["indices"]) == record["kept_patches"]
    with Image.open(out) as img:
        assert img.size == (336 * SCALE, 336 * SCALE)


def test_missing_image_exits_2_naming_it(ckpt: Path, tmp_path: Path, capsys) -> None:
    missing = tmp_path / "nope.jpg"
    argv = ["--model-path", str(ckpt), "--image-file", str(missing), "--out", str(tmp_path / "k.png")]
    assert visualize.main(argv) == 2
    assert str(missing) in capsys.readouterr().err
    assert not (tmp_path / "k.png").exists()


def test_missing_matplotlib_names_the_extra(
    ckpt: Path, images: list[Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ModuleNotFoundError(f"No module named {name!r}")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(ImportError, match=r'pip install "llava-prumerge\[viz\]"'):
        visualize.require_matplotlib()
    argv = [
        "--model-path",
        str(ckpt),
        "--image-file",
        str(images[0]),
        "--out",
        str(tmp_path / "h.png"),
        "--hist",
    ]
    assert visualize.main(argv) == 2
    assert 'pip install "llava-prumerge[viz]"' in capsys.readouterr().err


def test_module_runs_as_a_script(ckpt: Path, images: list[Path], tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    out = tmp_path / "kept.png"
    cmd = [sys.executable, "-m", "llava.visualize", "--model-path", str(ckpt), "--image-file", str(images[0])]
    proc = subprocess.run([*cmd, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert out.is_file() and "visual tokens" in proc.stdout


# --- in-LLM reductions: kept tokens per ATP stage; N̄ over answer files -------------------------------

ATP_FLAGS = ["--token-reduction", "atp", "--reduction-atp-layers", "1,2"]
GRID_9 = [r * 24 + c for r in range(0, 24, 8) for c in range(0, 24, 8)]  # the stride-8 grid, raster order


def test_atp_draws_one_panel_per_insertion_layer(tiny_llava_3_layers_dir, images, tmp_path) -> None:
    out = tmp_path / "atp.png"
    argv = [
        "--model-path",
        str(tiny_llava_3_layers_dir),
        "--image-file",
        *map(str, images),
        "--out",
        str(out),
    ]
    argv += [
        *ATP_FLAGS,
        "--reduction-atp-redundancy-threshold",
        "0.5",
        "--reduction-atp-spatial-threshold",
        "0.9",
    ]
    assert visualize.main(argv) == 0
    result = json.loads(out.with_suffix(".json").read_text())
    for i, record in enumerate(result["images"]):
        schedule, stages = record["visual_tokens_per_layer"], record["stages"]
        assert [s["layer"] for s in stages] == [1, 2] and schedule[0] == 576
        assert [s["kept_tokens"] for s in stages] == [len(s["indices"]) for s in stages] == schedule[1:]
        assert set(stages[1]["indices"]) <= set(stages[0]["indices"]) <= set(range(576))  # none revived
        assert set(GRID_9) <= set(stages[1]["indices"])  # theta_s = 0.9 keeps the stride-8 grid
        assert record["mean_visual_tokens"] == pytest.approx(sum(schedule) / 3)
        with Image.open(tmp_path / f"atp_{i}.png") as img:
            panel = 336 * SCALE
            title = visualize.TITLE_HEIGHT * SCALE
            assert img.size == (2 * panel + 4 * SCALE, panel + title)
            drawing = np.asarray(img.convert("RGB"))
        # a patch the second stage dropped is at full brightness in panel 1 and dimmed in panel 2
        dropped = next(p for p in stages[0]["indices"] if p not in stages[1]["indices"])
        x, y = cell_centre(dropped)
        cell = drawing[title + y - 8 : title + y + 8, x - 8 : x + 8].astype(float)
        second = drawing[title + y - 8 : title + y + 8, panel + 4 * SCALE + x - 8 : panel + 4 * SCALE + x + 8]
        assert second.mean() == pytest.approx(visualize.DIM * cell.mean(), abs=1.0)
    assert result["query"] == "What is in the image?"


def test_nbar_histogram_reads_answer_files(tmp_path, capsys) -> None:
    pytest.importorskip("matplotlib")
    atp, pm = tmp_path / "atp.jsonl", tmp_path / "prumerge.jsonl"
    atp.write_text(
        "".join(
            json.dumps({"question_id": i, "num_visual_tokens": 576, "mean_visual_tokens": 100.0 + 10 * i})
            + "\n"
            for i in range(5)
        )
        + json.dumps(
            {"question_id": 9, "num_visual_tokens": 0, "mean_visual_tokens": 0.0}
        )  # text only: left out
        + "\n"
    )
    pm.write_text(
        "".join(json.dumps({"question_id": i, "num_visual_tokens": 30 + i}) + "\n" for i in range(3))
    )
    out = tmp_path / "hist.png"
    assert visualize.main(["--nbar-histogram", str(atp), str(pm), "--out", str(out)]) == 0
    files = json.loads(out.with_suffix(".json").read_text())["files"]
    assert [(f["field"], f["answers"], f["mean"]) for f in files] == [
        ("mean_visual_tokens", 5, 120.0),
        ("num_visual_tokens", 3, 31.0),
    ]
    with Image.open(out) as img:
        assert img.width > 100 and img.height > 100
    assert "N̄ mean 120.0 over 5 answers" in capsys.readouterr().out
    assert visualize.main(["--nbar-histogram", str(tmp_path / "nope.jsonl")]) == 2
    assert visualize.main(["--out", str(out)]) == 2  # neither a model nor answer files
