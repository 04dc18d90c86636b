"""``python -m llava.serve.cli --video-file`` on a tiny Video-LLaVA checkpoint (CPU, a second or two each)."""

from __future__ import annotations

import io
import json
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from llava.model.video_loader import load_video_llava
from llava.prompting import video_prompt_ids
from llava.serve import cli
from llava.video import languagebind_video_transform, load_video

VIDEO_LINE = re.compile(
    r"^\[llava\] video: 8 frames x 3 x 56 x 56 -> (\d+) visual tokens \((.+)\); per frame: ((?:\d+ ?){8})$",
    re.MULTILINE,
)


@pytest.fixture(scope="module")
def ckpt(tiny_video_prumerge_dir: Path) -> Path:
    return tiny_video_prumerge_dir


@pytest.fixture(scope="module")
def loaded(ckpt: Path, frames_npy: Path):
    """``(tokenizer, model, pixels [1, 3, 8, 56, 56])`` loaded independently of the CLI."""
    tokenizer, model, _, _ = load_video_llava(str(ckpt), device="cpu")
    pixels = languagebind_video_transform(load_video(frames_npy), size=56)[None]
    return tokenizer, model, pixels


def frame_counts(model, pixels: torch.Tensor, reduction=None, **options) -> list[int]:
    """Tokens per frame that the video tower keeps under ``reduction`` (the checkpoint's when None)."""
    config = model.config
    previous = (config.mm_token_reduction, config.video_reduction_form, config.video_iqr_scope)
    if reduction is not None:
        model.set_token_reduction(reduction, **options)
    try:
        with torch.no_grad():
            return model.get_video_tower()(pixels).lengths.tolist()
    finally:
        model.set_token_reduction(previous[0], form=previous[1], iqr_scope=previous[2])


def args(ckpt: Path, video: Path, *extra: str) -> list[str]:
    return ["--model-path", str(ckpt), "--video-file", str(video), "--temperature", "0", *extra]


def parse_line(out: str) -> tuple[int, str, list[int]]:
    match = VIDEO_LINE.search(out)
    assert match is not None, out
    return int(match.group(1)), match.group(2), [int(n) for n in match.group(3).split()]


def test_query_reports_frame_counts_and_answers_as_video_llava(ckpt, frames_npy, loaded, capsys):
    tokenizer, model, pixels = loaded
    question = "What is in the image?"
    code = cli.main(args(ckpt, frames_npy, "--query", question, "--max-new-tokens", "4"))
    out = capsys.readouterr().out
    assert code == 0
    total, described, per_frame = parse_line(out)
    assert per_frame == frame_counts(model, pixels) == [1 + 3] * 8  # CLS + PruMerge's fixed 1/8 (2 + extra)
    assert described == "prumerge/reference/budget=3"
    # the published prompt (8 <image> markers, llava_v1) splices the same count and gives the same answer
    ids = video_prompt_ids(tokenizer, question)[None]
    spliced = model.prepare_multimodal_inputs(ids, None, videos=pixels, padding_side="left")
    assert total == int(spliced.num_visual_tokens[0]) == sum(per_frame)
    expected = model.generate_spliced(spliced, max_new_tokens=4, do_sample=False)
    lines = out.splitlines()
    assert len(lines) == 2 and lines[0] == VIDEO_LINE.search(out).group(0)
    assert lines[1] == tokenizer.decode(expected[0], skip_special_tokens=True).strip()


def test_interactive_multi_turn_keeps_history_and_reports_before_the_chat(
    ckpt, frames_npy, capsys, monkeypatch
):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is this?\nDescribe it in detail.\nexit\n"))
    code = cli.main(args(ckpt, frames_npy, "--max-new-tokens", "3"))
    out = capsys.readouterr().out
    assert code == 0
    assert len(VIDEO_LINE.findall(out)) == 1
    assert out.index("[llava] video:") < out.index("USER: ")  # before the first question
    assert out.count("ASSISTANT: ") == 2 and out.rstrip().endswith("exit...")


def test_session_puts_the_video_in_the_first_turn_only(ckpt, frames_npy, capsys):
    session = cli.open_session(cli.build_parser().parse_args(args(ckpt, frames_npy, "--max-new-tokens", "2")))
    assert session.conv.system.startswith("A chat between a curious human")  # llava_v1, Video-LLaVA's
    first = session.ask("What is this?")
    session.ask("And then?")
    assert session.conv.messages[0][1] == "<image>\nWhat is this?"
    assert session.conv.messages[1][1] == first
    assert session.conv.messages[2][1] == "And then?"
    assert session.pixels.shape == (1, 3, 8, 56, 56)
    assert len(VIDEO_LINE.findall(capsys.readouterr().out)) == 1  # with the first answer, once


@pytest.mark.parametrize(
    ("flags", "reduction", "options", "described"),
    [
        (["--token-reduction", "none"], "none", {}, "none"),
        (
            [
                "--token-reduction",
                "prumerge_plus",
                "--video-reduction-form",
                "adaptive",
                "--iqr-scope",
                "video",
            ],
            "prumerge_plus",
            {"form": "adaptive", "iqr_scope": "video"},
            "prumerge_plus/reference/adaptive/iqr_group=8",
        ),
        (["--reduction-budget", "5"], {"method": "prumerge", "budget": 5}, {}, "prumerge/reference/budget=5"),
    ],
)
def test_reduction_and_video_flags_change_the_counts(
    ckpt, frames_npy, loaded, capsys, flags, reduction, options, described
):
    _, model, pixels = loaded
    code = cli.main(args(ckpt, frames_npy, "--query", "hi", "--max-new-tokens", "1", *flags))
    total, shown, per_frame = parse_line(capsys.readouterr().out)
    assert code == 0
    assert (per_frame, shown) == (frame_counts(model, pixels, reduction, **options), described)
    assert total == sum(per_frame)
    if reduction == "none":
        assert per_frame == [17] * 8  # every patch and the CLS


def test_drop_cls_and_a_folder_of_frames(ckpt, frames_npy, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, frame in enumerate(np.load(frames_npy)):
        Image.fromarray(frame).save(folder / f"frame_{t}.png")
    code = cli.main(args(ckpt, folder, "--query", "hi", "--max-new-tokens", "1", "--drop-cls"))
    total, _, per_frame = parse_line(capsys.readouterr().out)
    assert code == 0 and per_frame == [3] * 8 and total == 24


def test_missing_and_unreadable_videos_exit_2(ckpt, frames_npy, tmp_path, capsys):
    missing = tmp_path / "no_such_clip.mp4"
    assert cli.main(args(ckpt, missing, "--query", "hi")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Video not found") and str(missing) in err
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    assert cli.main(args(ckpt, broken, "--query", "hi")) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and str(broken) in err and "Traceback" not in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(args(ckpt, empty, "--query", "hi")) == 2
    assert str(empty) in capsys.readouterr().err


def test_video_for_an_image_checkpoint_and_image_for_a_video_checkpoint(ckpt, frames_npy, tmp_path, capsys):
    image_ckpt = tmp_path / "llava-v1.5-tiny"
    image_ckpt.mkdir()
    (image_ckpt / "config.json").write_text(json.dumps({"model_type": "llava", "mm_vision_tower": "clip"}))
    assert cli.main(args(image_ckpt, frames_npy, "--query", "hi")) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {image_ckpt} is not a Video-LLaVA checkpoint") and "--image-file" in err
    image = tmp_path / "photo.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(image)
    assert cli.main(["--model-path", str(ckpt), "--image-file", str(image), "--query", "hi"]) == 2
    err = capsys.readouterr().err
    assert (
        err.startswith(f"error: {ckpt} is a Video-LLaVA checkpoint (ours layout)") and "--video-file" in err
    )


def test_image_and_video_are_exclusive(ckpt, frames_npy, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.build_parser().parse_args(args(ckpt, frames_npy, "--image-file", "x.png"))
    assert exit_info.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
