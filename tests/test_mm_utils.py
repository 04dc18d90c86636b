"""Image loading and preprocessing, image-aware tokenization, model names, the tiny tokenizer."""

from __future__ import annotations

import io
import urllib.error
from pathlib import Path

import pytest
import torch
from PIL import Image
from tests_support import SHARED, shared_reason
from transformers import AutoTokenizer

from llava.constants import IMAGE_TOKEN_INDEX
from llava.conversation import get_conv_template
from llava.mm_utils import (
    expand2square,
    get_model_name_from_path,
    load_image,
    load_image_processor,
    process_images,
    tokenizer_image_token,
)
from llava.tokenizer_train import train_sentencepiece_tokenizer

FIXTURES = SHARED / "fixtures" / "prumerge_reference"
FIXTURE_IMAGES = ["astronaut", "coffee", "chelsea", "flat", "gradient", "shapes"]
CLIP_PAD_COLOUR = (122, 116, 104)


@pytest.fixture(scope="module")
def tokenizer(tiny_tokenizer_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_tokenizer_dir)


def _require_fixtures() -> None:
    if not FIXTURES.is_dir():
        pytest.skip(shared_reason(FIXTURES, "the authors' pre-processed pixels"))


# ---------------------------------------------------------------- images


def test_expand2square_wide_image_offsets_and_colour():
    img = Image.new("RGB", (5, 2), (255, 0, 0))
    out = expand2square(img, CLIP_PAD_COLOUR)
    assert out.size == (5, 5)
    # Pasted at (0, (5 - 2) // 2) = (0, 1): rows 1-2 are red, rows 0 and 3-4 are padding.
    assert [out.getpixel((0, y)) for y in range(5)] == [
        CLIP_PAD_COLOUR,
        (255, 0, 0),
        (255, 0, 0),
        CLIP_PAD_COLOUR,
        CLIP_PAD_COLOUR,
    ]
    assert out.getpixel((4, 2)) == (255, 0, 0)


def test_expand2square_tall_image_offsets():
    img = Image.new("RGB", (2, 7), (0, 255, 0))
    img.putpixel((0, 0), (0, 0, 255))  # marks the top-left corner of the pasted image
    out = expand2square(img, CLIP_PAD_COLOUR)
    assert out.size == (7, 7)
    # Pasted at ((7 - 2) // 2, 0) = (2, 0).
    assert out.getpixel((2, 0)) == (0, 0, 255)
    assert out.getpixel((3, 6)) == (0, 255, 0)
    assert out.getpixel((1, 3)) == CLIP_PAD_COLOUR
    assert out.getpixel((4, 3)) == CLIP_PAD_COLOUR


def test_expand2square_keeps_square_image():
    img = Image.new("RGB", (4, 4), (1, 2, 3))
    assert expand2square(img, CLIP_PAD_COLOUR) is img


def test_process_images_matches_reference_pixels():
    _require_fixtures()
    from safetensors.torch import load_file

    reference = load_file(FIXTURES / "pixels.safetensors")
    processor = load_image_processor(str(FIXTURES / "clip_small"))
    assert tuple(int(x * 255) for x in processor.image_mean) == CLIP_PAD_COLOUR
    images = [load_image(FIXTURES / "images" / f"{name}.png") for name in FIXTURE_IMAGES]
    pixels = process_images(images, processor, "pad")
    assert pixels.shape == (6, 3, 336, 336)
    assert pixels.dtype == torch.float32
    for i, name in enumerate(FIXTURE_IMAGES):
        assert torch.equal(pixels[i : i + 1], reference[name]), name


def test_process_images_without_pad_differs_for_non_square_image():
    _require_fixtures()
    processor = load_image_processor(str(FIXTURES / "clip_small"))
    img = Image.new("RGB", (60, 30), (200, 10, 10))
    padded = process_images([img], processor, "pad")
    cropped = process_images([img], processor, "square")
    assert padded.shape == cropped.shape == (1, 3, 336, 336)
    # Without padding the centre crop keeps only the red image; with padding the top row is pad colour.
    assert torch.allclose(cropped[0, :, 0, 0], cropped[0, :, 168, 168])
    assert not torch.allclose(padded[0, :, 0, 0], padded[0, :, 168, 168])


def test_load_image_converts_to_rgb(tmp_path: Path):
    path = tmp_path / "grey.png"
    Image.new("L", (3, 2), 77).save(path)
    img = load_image(path)
    assert img.mode == "RGB"
    assert img.size == (3, 2)
    assert img.getpixel((0, 0)) == (77, 77, 77)


def test_load_image_missing_file_names_the_path(tmp_path: Path):
    missing = tmp_path / "nope" / "missing.jpg"
    with pytest.raises(FileNotFoundError, match="missing.jpg") as info:
        load_image(missing)
    assert "--image-folder" in str(info.value)


def test_load_image_corrupt_file_names_the_file(tmp_path: Path):
    path = tmp_path / "x.png"
    path.write_bytes(b"this is not a png at all \x00\x01\x02")
    with pytest.raises(ValueError, match=r"x\.png is not a readable image") as info:
        load_image(path)
    assert info.value.__cause__ is not None


def test_load_image_url_failure_names_the_url(monkeypatch: pytest.MonkeyPatch):
    def fail(url, timeout):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", fail)
    with pytest.raises(OSError, match="https://example.com/cat.jpg"):
        load_image("https://example.com/cat.jpg")


def test_load_image_url_success(monkeypatch: pytest.MonkeyPatch):
    buffer = io.BytesIO()
    Image.new("RGB", (4, 3), (9, 8, 7)).save(buffer, format="PNG")
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout: io.BytesIO(buffer.getvalue()))
    img = load_image("http://example.com/a.png")
    assert (img.size, img.getpixel((1, 1))) == ((4, 3), (9, 8, 7))


# ---------------------------------------------------------------- tokenization


def test_tiny_tokenizer_settings(tokenizer):
    assert (tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2)
    assert tokenizer.pad_token == "<unk>"
    assert tokenizer.pad_token_id == 0
    assert tokenizer.padding_side == "right"
    assert tokenizer.model_max_length == 2048
    assert len(tokenizer) <= 512
    ids = tokenizer("USER: What is this?")["input_ids"]
    assert ids[0] == 1
    assert tokenizer.convert_ids_to_tokens(ids[1]) == "▁USER"  # template words are single pieces
    assert tokenizer.decode(ids, skip_special_tokens=True) == "USER: What is this?"
    assert (Path(tokenizer.name_or_path) / "tokenizer.model").is_file()


def test_retraining_into_same_folder_replaces_tokenizer(tmp_path: Path):
    first = train_sentencepiece_tokenizer(["alpha beta gamma"], tmp_path, vocab_size=300)
    second = train_sentencepiece_tokenizer(["delta epsilon zeta"] * 5, tmp_path, vocab_size=400)
    assert len(first) == 300
    assert len(second) == 400
    assert AutoTokenizer.from_pretrained(tmp_path)("delta")["input_ids"] == second("delta")["input_ids"]


def test_trainer_rejects_too_small_vocab(tmp_path: Path):
    with pytest.raises(ValueError, match="vocab_size"):
        train_sentencepiece_tokenizer(["a"], tmp_path, vocab_size=100)


def test_tokenizer_image_token_splices_one_sentinel_per_image(tokenizer):
    conv = get_conv_template("vicuna_v1")
    conv.append_message("USER", "<image>\nWhat is this?")
    conv.append_message("ASSISTANT", None)
    prompt = conv.get_prompt()
    ids = tokenizer_image_token(prompt, tokenizer)
    before, after = prompt.split("<image>")
    expected = (
        [1]
        + tokenizer(before, add_special_tokens=False)["input_ids"]
        + [IMAGE_TOKEN_INDEX]
        + tokenizer(after, add_special_tokens=False)["input_ids"]
    )
    assert ids == expected
    assert ids.count(IMAGE_TOKEN_INDEX) == 1
    assert ids.count(tokenizer.bos_token_id) == 1
    # The chunk after the image is tokenized on its own: it starts with the "▁" word prefix.
    assert tokenizer.convert_ids_to_tokens(ids[ids.index(IMAGE_TOKEN_INDEX) + 1]) == "▁"


def test_tokenizer_image_token_several_and_adjacent_images(tokenizer):
    ids = tokenizer_image_token("<image><image>a cat<image>", tokenizer)
    cat = tokenizer("a cat", add_special_tokens=False)["input_ids"]
    assert ids == [1, IMAGE_TOKEN_INDEX, IMAGE_TOKEN_INDEX, *cat, IMAGE_TOKEN_INDEX]


def test_tokenizer_image_token_without_image_matches_plain_encoding(tokenizer):
    text = "What is in the image? Describe it in detail."
    assert tokenizer_image_token(text, tokenizer) == tokenizer(text)["input_ids"]


def test_tokenizer_image_token_return_tensors(tokenizer):
    ids = tokenizer_image_token("<image>\nHi", tokenizer, return_tensors="pt")
    assert isinstance(ids, torch.Tensor)
    assert ids.dtype == torch.long
    assert ids.dim() == 1
    assert ids.tolist() == tokenizer_image_token("<image>\nHi", tokenizer)
    with pytest.raises(ValueError, match="return_tensors"):
        tokenizer_image_token("<image>", tokenizer, return_tensors="np")


def test_tokenizer_image_token_custom_index(tokenizer):
    assert tokenizer_image_token("<image>", tokenizer, image_token_index=-7) == [1, -7]


# ---------------------------------------------------------------- model names


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("liuhaotian/llava-v1.5-7b", "llava-v1.5-7b"),
        ("/ckpts/llava-v1.5-13b-lora/", "llava-v1.5-13b-lora"),
        ("./checkpoints/prumerge/checkpoint-500", "prumerge_checkpoint-500"),
        ("/ckpts/run/checkpoint-1000//", "run_checkpoint-1000"),
        ("llava-v1.5-7b", "llava-v1.5-7b"),
    ],
)
def test_get_model_name_from_path(path: str, expected: str):
    assert get_model_name_from_path(path) == expected


@pytest.mark.parametrize(
    ("mode", "values", "expected"),
    [
        ("I;16", [0, 32896, 65535], [0, 128, 255]),  # a 16-bit PNG, full range
        ("F", [0.0, 0.5, 1.0], [0, 128, 255]),  # a float TIFF in [0, 1]
        ("F", [-2.0, 0.0, 2.0], [0, 128, 255]),  # float outside [0, 1]: stretched
        ("I", [0, 100, 255], [0, 100, 255]),  # 32-bit integers holding 8-bit values
    ],
)
def test_high_bit_depth_images_convert_by_value_range(tmp_path, mode, values, expected):
    import numpy as np

    from llava.mm_utils import load_image

    dtype = {"I;16": np.uint16, "F": np.float32, "I": np.int32}[mode]
    array = np.repeat(np.array(values, dtype=dtype)[None], 4, axis=0)  # 4 rows of 3 grey levels
    suffix = ".tiff" if mode in ("F", "I") else ".png"
    path = tmp_path / f"grey{suffix}"
    Image.fromarray(array).save(path)  # uint16 -> I;16, float32 -> F, int32 -> I
    with Image.open(path) as raw:
        assert raw.mode.startswith(mode[0])  # the file really holds high-bit-depth data
    rgb = np.asarray(load_image(path))
    assert rgb.shape == (4, 3, 3)
    assert rgb[0, :, 0].tolist() == expected and (rgb[..., 0] == rgb[..., 2]).all()
