"""``python -m llava.visualize --video-file`` on a tiny Video-LLaVA checkpoint (CPU, a second or two each)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava import visualize
from llava.model.video_loader import load_video_llava
from llava.serve.video import video_views
from llava.video import languagebind_video_transform, load_video

SCALE = 2
SIDE = 56  # the tiny tower's input size (4 x 4 patches of 14 pixels)
FRAMES = 8


@pytest.fixture(scope="module")
def tower_out(tiny_video_prumerge_dir: Path, frames_npy: Path):
    """``(tower output, pixels)`` on the test video, computed independently of the tool."""
    _, model, _, _ = load_video_llava(str(tiny_video_prumerge_dir), device="cpu")
    pixels = languagebind_video_transform(load_video(frames_npy), size=SIDE)[None]
    with torch.no_grad():
        return model.get_video_tower()(pixels), pixels


@pytest.fixture(scope="module")
def strip_run(tiny_video_prumerge_dir: Path, frames_npy: Path, tmp_path_factory):
    """``(png, json result)`` of the tool on the test video."""
    out = tmp_path_factory.mktemp("viz_video") / "strip.png"
    argv = ["--model-path", str(tiny_video_prumerge_dir), "--video-file", str(frames_npy), "--out", str(out)]
    assert visualize.main([*argv, "--scale", str(SCALE)]) == 0
    return out, json.loads(out.with_suffix(".json").read_text())


def test_one_panel_per_frame_with_the_models_counts(strip_run, tower_out) -> None:
    png, result = strip_run
    out, pixels = tower_out
    frames = result["frames"]
    assert [f["frame"] for f in frames] == list(range(FRAMES))
    assert [f["kept_tokens"] for f in frames] == out.lengths.tolist()
    for record, row in zip(frames, out.indices.tolist(), strict=True):
        assert record["indices"] == [i for i in row if i >= 0]
        assert record["kept_patches"] == len(record["indices"]) == record["kept_tokens"] - 2  # CLS, extra
    assert result["visual_tokens"] == int(out.lengths.sum())
    assert result["video_reduction"]["budget"] == 3  # PruMerge's fixed 1/8 form at N = 16
    panel, gap, cell = SIDE * SCALE, 4 * SCALE, SIDE * SCALE // 4
    with Image.open(png) as img:
        drawing = np.asarray(img.convert("RGB"))
    assert drawing.shape[1] == FRAMES * panel + (FRAMES - 1) * gap
    title = drawing.shape[0] - panel
    for f in range(1, FRAMES):  # the white gaps between the 8 panels
        assert (drawing[:, f * (panel + gap) - gap : f * (panel + gap)] == 255).all()
    # in every panel the kept patches show the frame as the tower sees it; the others are dimmed or tinted
    views = video_views(pixels)
    for f, record in enumerate(frames):
        for patch in range(16):
            row, col = divmod(patch, 4)
            y, x = title + row * cell + cell // 2, f * (panel + gap) + col * cell + cell // 2
            drawn = drawing[y, x]
            seen = views[f][(y - title) // SCALE, (x - f * (panel + gap)) // SCALE]
            assert (drawn == seen).all() == (patch in record["indices"]), (f, patch)


def test_reduction_and_video_flags(tiny_video_prumerge_dir, frames_npy, tmp_path, capsys) -> None:
    argv = ["--model-path", str(tiny_video_prumerge_dir), "--video-file", str(frames_npy)]
    assert visualize.main([*argv, "--out-dir", str(tmp_path), "--token-reduction", "none", "--drop-cls"]) == 0
    result = json.loads((tmp_path / "counts.json").read_text())
    assert result["png"] == str(tmp_path / "clip.png") and (tmp_path / "clip.png").is_file()
    assert [(f["kept_tokens"], f["kept_patches"]) for f in result["frames"]] == [(16, 16)] * FRAMES
    assert (
        "clip.npy: 8 frames -> 128 visual tokens (per frame: 16 16 16 16 16 16 16 16)"
        in capsys.readouterr().out
    )


def test_video_errors_exit_2(tiny_video_prumerge_dir, frames_npy, tmp_path, capsys) -> None:
    argv = ["--model-path", str(tiny_video_prumerge_dir), "--out", str(tmp_path / "x.png")]
    assert visualize.main([*argv, "--video-file", str(tmp_path / "missing.mp4")]) == 2
    assert "missing.mp4" in capsys.readouterr().err
    assert visualize.main([*argv, "--video-file", str(frames_npy), "--hist"]) == 2
    assert "not available for videos" in capsys.readouterr().err
    image_ckpt = tmp_path / "image_ckpt"
    image_ckpt.mkdir()
    (image_ckpt / "config.json").write_text(json.dumps({"model_type": "llava", "mm_vision_tower": "clip"}))
    assert visualize.main(["--model-path", str(image_ckpt), "--video-file", str(frames_npy)]) == 2
    assert "is not a Video-LLaVA checkpoint" in capsys.readouterr().err
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (10, 200, 10)).save(image)
    assert visualize.main([*argv, "--image-file", str(image)]) == 2
    assert "give it a video with --video-file" in capsys.readouterr().err
    assert visualize.main([*argv, "--image-file", str(image), "--video-file", str(frames_npy)]) == 2
    assert "not both" in capsys.readouterr().err
