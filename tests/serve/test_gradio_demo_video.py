"""The web demo's video path (``llava.serve.gradio_demo`` on a tiny Video-LLaVA checkpoint), without a server."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from llava.prompting import video_prompt_ids
from llava.serve.gradio_demo import (
    FRAME_GAP,
    build_app,
    build_parser,
    load_demo_model,
    reducer_choices,
)
from llava.serve.video import video_pixels, video_views
from llava.video import load_video

SIDE = 56  # the tiny tower's input size: 4 x 4 patches
FRAMES = 8


@pytest.fixture(scope="module")
def demo_model(tiny_video_prumerge_dir: Path):
    """A video ``DemoModel``, greedy, at most 4 new tokens."""
    argv = ["--model-path", str(tiny_video_prumerge_dir), "--device", "cpu", "--temperature", "0"]
    return load_demo_model(build_parser().parse_args([*argv, "--max-new-tokens", "4"]))


def test_video_checkpoint_is_recognised(demo_model):
    assert demo_model.video and demo_model.image_processor is None
    assert demo_model.conv_mode == "llava_v1"
    assert demo_model.default_reduction.method == "prumerge"


def test_answer_video_gives_text_frame_strip_and_counts(demo_model, frames_npy):
    text, strip, count = demo_model.answer_video(str(frames_npy), "What is in the image?")
    model, tower = demo_model.model, demo_model.model.get_video_tower()
    pixels = video_pixels(load_video(frames_npy), tower)
    with torch.no_grad():
        out = tower(pixels)
    per_frame = out.lengths.tolist()
    assert count == (
        f"{sum(per_frame)} / {FRAMES * 17} visual tokens (prumerge/reference/budget=3); "
        f"per frame: {' '.join(map(str, per_frame))}"
    )
    ids = video_prompt_ids(demo_model.tokenizer, "What is in the image?")[None]
    spliced = model.prepare_multimodal_inputs(ids, None, videos=pixels, padding_side="left")
    expected = model.generate_spliced(spliced, max_new_tokens=4, do_sample=False)
    assert text == (
        demo_model.tokenizer.decode(expected[0], skip_special_tokens=True).strip() or "(empty answer)"
    )
    assert strip.size == (FRAMES * SIDE + (FRAMES - 1) * FRAME_GAP, SIDE)
    drawing, views = np.asarray(strip), video_views(pixels)
    cell = SIDE // 4
    for f in range(FRAMES):
        kept = {int(i) for i in out.indices[f] if i >= 0}
        assert kept
        for patch in range(16):
            y, x = patch // 4 * cell + cell // 2, patch % 4 * cell + cell // 2
            drawn, seen = drawing[y, f * (SIDE + FRAME_GAP) + x], views[f][y, x]
            if patch in kept:
                assert (drawn == seen).all()
            else:
                assert int(drawn.sum()) < 0.5 * int(seen.sum()) + 3


def test_answer_video_switches_reducer_and_rejects_bad_input(demo_model, frames_npy, tmp_path):
    _, _, count = demo_model.answer_video(str(frames_npy), "Describe it.", "none")
    assert count.startswith(f"{FRAMES * 17} / {FRAMES * 17} visual tokens (none); per frame: 17 17")
    _, _, count = demo_model.answer_video(str(frames_npy), "Describe it.", "spatial", 4)
    assert count.startswith(f"{FRAMES * 5} / {FRAMES * 17} visual tokens (spatial")
    with pytest.raises(ValueError, match="Upload a video"):
        demo_model.answer_video(None, "Describe it.")
    with pytest.raises(ValueError, match="question"):
        demo_model.answer_video(str(frames_npy), "  ")
    with pytest.raises(ValueError, match="missing.mp4"):
        demo_model.answer_video(str(tmp_path / "missing.mp4"), "Describe it.")
    with pytest.raises(ValueError, match="not available for videos"):
        demo_model.answer_video(str(frames_npy), "Describe it.", "fastv", 4)
    assert "fastv" not in reducer_choices(video=True) and "fastv" in reducer_choices(video=False)


def test_app_has_a_video_input_for_a_video_checkpoint(demo_model):
    gr = pytest.importorskip("gradio", reason="gradio is not installed (pip install 'llava-prumerge[demo]')")
    app = build_app(demo_model, gr)
    components = {getattr(block, "elem_id", None): block for block in app.blocks.values()}
    assert isinstance(components["video"], gr.Video) and "image" not in components
    assert "fastv" not in components["reduction"].choices[-1]
