"""The web demo (``llava.serve.gradio_demo``) on a tiny random checkpoint, with and without a browser."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw

from llava.mm_utils import process_images
from llava.serve.gradio_demo import build_parser, kept_overlay, load_demo_model, tower_view

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
COLOUR = (240, 200, 120)


@pytest.fixture(scope="module")
def demo_model(tmp_path_factory):
    """A ``DemoModel`` on a tiny PruMerge checkpoint, greedy, at most 6 new tokens."""
    from llava.tiny import build_tiny_llava

    folder = tmp_path_factory.mktemp("tiny_llava")
    build_tiny_llava(folder, reduction="prumerge")
    argv = ["--model-path", str(folder), "--device", "cpu", "--temperature", "0", "--max-new-tokens", "6"]
    return load_demo_model(build_parser().parse_args(argv))


def test_dtype_option_default_and_loaded_model(demo_model):
    """``--dtype`` defaults to ``auto``, which loads float32 on the CPU; ``bfloat16`` is accepted."""
    argv = ["--model-path", "m"]
    assert build_parser().parse_args(argv).dtype == "auto"
    assert build_parser().parse_args([*argv, "--dtype", "bfloat16"]).dtype == "bfloat16"
    assert {p.dtype for p in demo_model.model.parameters()} == {torch.float32}


def test_bf16_on_a_gpu_without_it_fails_before_loading(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    args = build_parser().parse_args(
        ["--model-path", "/no/such/ckpt", "--device", "cuda", "--dtype", "bfloat16"]
    )
    with pytest.raises(ValueError, match=r"--dtype bfloat16 was asked for.*use --dtype float16"):
        load_demo_model(args)


def test_kept_overlay_dims_only_dropped_cells():
    image = Image.new("RGB", (40, 40), COLOUR)
    overlay = kept_overlay(image, torch.tensor([0, 3, -1]), (2, 2))
    assert overlay.getpixel((5, 5)) == COLOUR  # cell 0 kept
    assert overlay.getpixel((35, 35)) == COLOUR  # cell 3 kept
    assert max(overlay.getpixel((35, 5))) < 100  # cell 1 dimmed


def test_answer_returns_text_overlay_and_count(demo_model):
    image = Image.new("RGB", (400, 300), COLOUR)
    text, overlay, count = demo_model.answer(image, "What is in the image?", "checkpoint")
    tower = demo_model.model.get_vision_tower()
    out = tower(process_images([image], demo_model.image_processor, "pad"))
    assert isinstance(text, str) and text
    assert overlay.size == (336, 336)
    assert count.startswith(f"{int(out.lengths[0])} / {tower.num_patches} visual tokens (prumerge")
    view = tower_view(image, demo_model.image_processor, 336, "pad")
    rows, cols = tower.grid
    kept = {int(i) for i in out.indices[0] if i >= 0}
    assert 0 < len(kept) < rows * cols

    def centre(index: int) -> tuple[int, int]:
        cell = 336 // cols
        return index % cols * cell + cell // 2, index // cols * cell + cell // 2

    for index in range(rows * cols):
        pixel, original = overlay.getpixel(centre(index)), view.getpixel(centre(index))
        if index in kept:
            assert pixel == original
        else:
            assert sum(pixel) < 0.5 * sum(original)


def test_answer_switches_reducer_and_rejects_bad_input(demo_model):
    image = Image.new("RGB", (64, 64), COLOUR)
    _, _, count = demo_model.answer(image, "Describe it.", "none")
    assert count.startswith("576 / 576 visual tokens (none)")
    _, _, count = demo_model.answer(image, "Describe it.", "sequential", 20)
    assert count.startswith("20 / 576")
    with pytest.raises(ValueError, match="budget"):
        demo_model.answer(image, "Describe it.", "sequential")
    with pytest.raises(ValueError, match="image"):
        demo_model.answer(None, "Describe it.", "none")


def scene(width: int, height: int) -> Image.Image:
    """A small synthetic picture: a sky-to-grass gradient with a sun and a house."""
    image = Image.new("RGB", (width, height))
    draw = ImageDraw.Draw(image)
    for y in range(height):
        sky = y < height * 2 // 3
        draw.line((0, y, width, y), fill=(90 + y // 3, 160, 235) if sky else (60, 150 - y // 6, 60))
    draw.ellipse((width - 110, 20, width - 40, 90), fill=(250, 210, 60))
    draw.rectangle((80, 120, 200, 220), fill=(200, 60, 50))
    draw.polygon(((70, 120), (140, 60), (210, 120)), fill=(120, 70, 40))
    return image


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_browser_upload_ask_and_see_overlay(demo_model, tmp_path):
    pytest.importorskip("gradio", reason="gradio is not installed (pip install 'llava-prumerge[demo]')")
    playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} not found (apt-get install chromium)")
    from llava.serve.gradio_demo import build_app

    image_file = tmp_path / "photo.png"
    scene(400, 300).save(image_file)
    port = free_port()
    app = build_app(demo_model)
    app.queue().launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        shot = drive_browser(playwright, f"http://127.0.0.1:{port}/", image_file, tmp_path)
    finally:
        app.close()
    assert shot.stat().st_size > 0
    if os.environ.get("LLAVA_ARTIFACTS"):
        target = Path(os.environ["LLAVA_ARTIFACTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copy(shot, target / "gradio_demo.png")


def drive_browser(playwright, url: str, image_file: Path, tmp_path: Path) -> Path:
    """Uploads the image, asks a question, waits for answer and overlay; returns the screenshot's path."""
    with playwright.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path / "chromium-profile"),
            executable_path=CHROMIUM,
            args=CHROMIUM_ARGS,
            headless=True,
            viewport={"width": 1280, "height": 900},
        )
        try:
            page = context.new_page()
            page.goto(url, timeout=30_000)
            page.locator("#image input[type=file]").set_input_files(str(image_file))
            page.locator("#image img").first.wait_for(timeout=15_000)
            page.locator("#question textarea").fill("What is in the image?")
            page.locator("#ask").click()
            page.wait_for_function(
                "() => document.querySelector('#count textarea')?.value.includes('visual tokens')",
                timeout=30_000,
            )
            page.locator("#overlay img").first.wait_for(timeout=15_000)
            assert page.locator("#answer textarea").input_value()
            shot = tmp_path / "gradio_demo.png"
            page.screenshot(path=str(shot), full_page=True)
        finally:
            context.close()
    return shot


def test_missing_gradio_exits_with_install_hint(monkeypatch, capsys):
    import sys

    from llava.serve.gradio_demo import main

    monkeypatch.setitem(sys.modules, "gradio", None)  # makes ``import gradio`` raise ImportError
    with pytest.raises(SystemExit) as exit_info:
        main(["--model-path", "unused"])
    assert exit_info.value.code == 2
    assert 'pip install "llava-prumerge[demo]"' in capsys.readouterr().err
