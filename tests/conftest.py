"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests_support import SHARED, SHARED_SKIP

# A few sentences so that the tiny tokenizer has real word pieces besides the template words.
TINY_CORPUS = [
    "What is this?",
    "What is in the image? Describe it in detail.",
    "It is a cat sitting on a mat next to a cup of coffee.",
    "An astronaut in a white suit stands in front of a flag.",
    "Answer the question using a single word or phrase.",
    "Answer with the option's letter from the given choices directly.",
    "The number is 12345.",
]


@pytest.fixture(scope="session")
def tiny_tokenizer_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding a tiny trained Llama-style tokenizer (ids: unk/pad 0, BOS 1, EOS 2)."""
    from llava.tokenizer_train import train_sentencepiece_tokenizer

    out_dir = tmp_path_factory.mktemp("tiny_tokenizer")
    train_sentencepiece_tokenizer(TINY_CORPUS, out_dir)
    return out_dir


@pytest.fixture(scope="session")
def tiny_llava_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full tiny LLaVA-1.5 checkpoint (tiny CLIP at 336/14 with 24 layers, 2-layer Llama), reduction none."""
    from llava.tiny import build_tiny_llava

    out_dir = tmp_path_factory.mktemp("tiny_llava")
    build_tiny_llava(out_dir, corpus=TINY_CORPUS, reduction="none")
    return out_dir


@pytest.fixture(scope="session")
def tiny_llava(tiny_llava_dir: Path):
    """``(tokenizer, model)`` loaded from :func:`tiny_llava_dir` on CPU in float32."""
    from llava.model.loader import load_pretrained_model

    tokenizer, model, _, _ = load_pretrained_model(str(tiny_llava_dir), device="cpu")
    return tokenizer, model


@pytest.fixture(scope="session")
def tiny_llava_3_layers_dir(tiny_llava_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`tiny_llava_dir` with a 3-layer Llama (same tower and tokenizer): room for two in-LLM pruning
    stages (ATP at layers 1 and 2)."""
    from llava.tiny import build_tiny_llava

    out_dir = tmp_path_factory.mktemp("tiny_llava_3_layers")
    build_tiny_llava(
        out_dir, clip_dir=tiny_llava_dir / "vision_tower", tokenizer_dir=tiny_llava_dir, num_layers=3
    )
    return out_dir


@pytest.fixture(scope="session")
def train_workspace(tmp_path_factory, tiny_tokenizer_dir):
    """A base LLM, a tiny CLIP tower and a small dataset of coloured-square questions (+ one text-only)."""
    from llava.tiny import save_tiny_train_workspace

    root = tmp_path_factory.mktemp("train")
    base, clip = save_tiny_train_workspace(root, tiny_tokenizer_dir)
    return root, base, clip


@pytest.fixture(scope="session")
def tiny_prumerge_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A full tiny checkpoint recording PruMerge (reference), shared by the front-end tests."""
    from llava.tiny import build_tiny_llava

    out = tmp_path_factory.mktemp("tiny_prumerge")
    build_tiny_llava(out, reduction="prumerge")
    return out


@pytest.fixture(scope="session")
def shapes_image(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 200x120 white PNG with three coloured rectangles."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (200, 120), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    draw.rectangle((10, 10, 60, 60), fill=(255, 0, 0))
    draw.rectangle((100, 30, 180, 110), fill=(0, 0, 255))
    draw.rectangle((70, 80, 95, 115), fill=(0, 200, 0))
    path = tmp_path_factory.mktemp("shapes") / "shapes.png"
    img.save(path)
    return path


@pytest.fixture(scope="session")
def tiny_video_prumerge_dir(tmp_path_factory: pytest.TempPathFactory, tiny_tokenizer_dir: Path) -> Path:
    """A tiny Video-LLaVA checkpoint (LanguageBind tower at 56 px: 4 x 4 patches, 8 frames) recording
    PruMerge, shared by the video front-end tests."""
    from llava.tiny import build_tiny_video_llava

    out = tmp_path_factory.mktemp("tiny_video_prumerge")
    build_tiny_video_llava(out, tokenizer_dir=tiny_tokenizer_dir, reduction="prumerge")
    return out


@pytest.fixture(scope="session")
def frames_npy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 12-frame synthetic video as a ``.npy`` array ``[12, 70, 90, 3]`` (uint8): a square moving on noise."""
    import numpy as np

    frames = np.random.default_rng(0).integers(0, 120, (12, 70, 90, 3), dtype=np.uint8)
    for t in range(12):
        frames[t, 20:45, 5 + 6 * t : 30 + 6 * t] = (250, 60, 40)
    path = tmp_path_factory.mktemp("video") / "clip.npy"
    np.save(path, frames)
    return path


def pytest_terminal_summary(terminalreporter) -> None:
    """Says how many tests did not run because the shared fixtures are absent (a user's clone)."""
    skipped = terminalreporter.stats.get("skipped", [])
    shared = [report for report in skipped if SHARED_SKIP in str(report.longrepr)]
    if shared:
        terminalreporter.write_line(
            f"{len(shared)} test(s) skipped because they need the shared fixtures (parity with the authors' "
            f"PruMerge outputs and the official LLaVA-1.5 answers), not found at {SHARED}; set "
            "LLAVA_SHARED_DIR to run them."
        )
