"""Image loading, LLaVA-1.5 image preprocessing and image-aware prompt tokenization."""

from __future__ import annotations

import http.client
import io
import urllib.request
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from llava.constants import DEFAULT_IMAGE_TOKEN, IMAGE_TOKEN_INDEX

URL_TIMEOUT_S = 10.0


def load_image(path_or_url: str | Path) -> Image.Image:
    """Open a local image file or an http(s) URL and return it converted to RGB.

    Raises:
        FileNotFoundError: the local file does not exist.
        ValueError: the file (or the downloaded bytes) is not a readable image.
        OSError: the URL could not be fetched.
    """
    source = str(path_or_url)
    if source.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(source, timeout=URL_TIMEOUT_S) as response:
                data = response.read()
        except (OSError, http.client.HTTPException) as err:  # URLError and timeouts are OSErrors
            raise OSError(f"Could not download image from {source}: {err}") from err
        return _decode_rgb(io.BytesIO(data), source)

    path = Path(path_or_url)
    if not path.exists():
        raise FileNotFoundError(
            f"Image file not found: {path}. Check --image-file / --image-folder (relative image paths "
            f"are joined to --image-folder)."
        )
    return _decode_rgb(path, str(path))


def _decode_rgb(source: Path | io.BytesIO, name: str) -> Image.Image:
    """Decode an image fully and convert it to RGB, turning PIL errors into a ValueError naming ``name``.

    EXIF orientation is ignored, as in the original code, so benchmark images match the published numbers.
    """
    try:
        with Image.open(source) as img:
            return to_rgb(img)
    except (UnidentifiedImageError, OSError) as err:
        raise ValueError(f"{name} is not a readable image: {err}") from err


def to_rgb(img: Image.Image) -> Image.Image:
    """``img`` as 8-bit RGB; 16-bit, 32-bit integer and float greyscale are mapped by their value range.

    PIL's own conversion clips such images to 0..255 (a 16-bit PNG turns white, a float TIFF in [0, 1]
    black). Here, as an image viewer shows them: integer data up to 255 is kept, up to 65535 is read as
    16-bit (divided by 257); float data in [0, 1] is scaled by 255; anything else is stretched from its
    minimum to its maximum.
    """
    if img.mode not in ("I", "F") and not img.mode.startswith("I;16"):
        return img.convert("RGB")  # a copy also for RGB, so a file-backed image can be closed after
    import numpy as np

    values = np.asarray(img, dtype=np.float64)
    low, high = (float(values.min()), float(values.max())) if values.size else (0.0, 0.0)
    if img.mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif img.mode != "F" and low >= 0 and high <= 255:
        scaled = values
    elif img.mode != "F" and low >= 0 and high <= 65535:
        scaled = values / 257.0
    else:
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
    grey = Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # uint8 -> mode L
    return grey.convert("RGB")


def expand2square(img: Image.Image, background_color: tuple[int, int, int]) -> Image.Image:
    """Pad ``img`` to a square of side max(w, h) filled with ``background_color``.

    The image is pasted at ((side - w) // 2, (side - h) // 2); a square image is returned unchanged.
    """
    width, height = img.size
    if width == height:
        return img
    side = max(width, height)
    square = Image.new(img.mode, (side, side), background_color)
    square.paste(img, ((side - width) // 2, (side - height) // 2))
    return square


def process_images(
    images: list[Image.Image], image_processor: Any, image_aspect_ratio: str | None = "pad"
) -> torch.Tensor:
    """Preprocess images as LLaVA-1.5 does.

    ``"pad"``: pad each image to a square in the colour ``int(255 * m)`` of the processor's
    ``image_mean`` ((122, 116, 104) for CLIP), then run the processor (resize shortest edge, centre crop,
    rescale, normalise). Any other value (upstream's ``"square"`` or ``None``): the processor only.
    Images that are not RGB are converted first.

    Args:
        images: B PIL images of any sizes.
        image_processor: a CLIP image processor (see ``load_image_processor``).
        image_aspect_ratio: ``"pad"`` (LLaVA-1.5) or e.g. ``"square"``; ``"anyres"`` is not supported.

    Returns:
        Pixel values, float32 ``[B, 3, H, W]`` (H = W = 336 for LLaVA-1.5).
    """
    if not images:
        raise ValueError("process_images needs at least one image")
    if image_aspect_ratio is not None and image_aspect_ratio.startswith("anyres"):
        raise ValueError("image_aspect_ratio 'anyres' (LLaVA-1.6) is not supported; use 'pad' or 'square'")
    pixel_values = []
    for img in images:
        img = img if img.mode == "RGB" else to_rgb(img)
        if image_aspect_ratio == "pad":
            img = expand2square(img, tuple(int(x * 255) for x in image_processor.image_mean))
        pixel_values.append(image_processor(img, return_tensors="pt")["pixel_values"][0])  # [3, H, W]
    return torch.stack(pixel_values, dim=0)  # [B, 3, H, W]


def load_image_processor(vision_tower_path: str) -> CLIPImageProcessorPil:
    """Load the CLIP image processor of a vision tower folder or hub id.

    Uses transformers' PIL backend, so torchvision is never needed; with the tower's
    ``preprocessor_config.json`` it reproduces upstream LLaVA's pixel values exactly.
    """
    return CLIPImageProcessorPil.from_pretrained(vision_tower_path)


def tokenizer_image_token(
    prompt: str,
    tokenizer: Any,
    image_token_index: int = IMAGE_TOKEN_INDEX,
    return_tensors: str | None = None,
) -> list[int] | torch.Tensor:
    """Tokenize a prompt whose ``<image>`` markers become one ``image_token_index`` each.

    The prompt is split on ``<image>`` and every chunk is tokenized on its own without special tokens
    (so, as upstream, the tokenizer's start-of-text handling -- Llama's "▁" prefix -- applies again after
    each image). One BOS (if the tokenizer has one) starts the sequence; empty chunks add no tokens.

    Returns:
        A list of ids, or a 1-D LongTensor ``[T]`` when ``return_tensors="pt"``.
    """
    if return_tensors not in (None, "pt"):
        raise ValueError(f"Unsupported return_tensors={return_tensors!r}; use None or 'pt'")
    input_ids: list[int] = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    for i, chunk in enumerate(prompt.split(DEFAULT_IMAGE_TOKEN)):
        if i > 0:
            input_ids.append(image_token_index)
        if chunk:
            input_ids.extend(tokenizer(chunk, add_special_tokens=False)["input_ids"])
    if return_tensors == "pt":
        return torch.tensor(input_ids, dtype=torch.long)
    return input_ids


def get_model_name_from_path(model_path: str) -> str:
    """Name a model after its folder, as upstream does.

    ``/ckpts/llava-v1.5-7b/`` gives ``llava-v1.5-7b``; ``/ckpts/run/checkpoint-500`` gives
    ``run_checkpoint-500``.
    """
    parts = [part for part in model_path.split("/") if part]
    if not parts:
        raise ValueError(f"Cannot derive a model name from {model_path!r}")
    if parts[-1].startswith("checkpoint-") and len(parts) > 1:
        return f"{parts[-2]}_{parts[-1]}"
    return parts[-1]
