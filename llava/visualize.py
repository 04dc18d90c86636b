"""Draw which visual tokens a token reducer keeps, and (with ``--hist``) the class-attention distribution.

Usage::

    python -m llava.visualize --model-path CKPT --image-file a.jpg [b.jpg ...] \\
        [--token-reduction prumerge --reduction-variant reference] --out kept.png [--hist]

Each image is drawn as the model sees it (padded to a square and resized to the tower's input size:
the processed pixels with the CLIP normalisation undone). Patches the tower keeps are drawn at full
brightness with an outline; pruned patches are dimmed. For the merging methods (``prumerge``,
``prumerge_plus``) every pruned patch merged into a kept one is tinted with that kept patch's colour.
The kept patches come from the tower's own output ``indices``; only the neighbour assignment is
recomputed here, as the reducer computes it (top ``num_neighbors`` patches by key cosine similarity
for the ``reference`` variant, by key dot product for ``paper``).

One PNG is written per image (``--out`` for one image, ``<stem>_<i>.png`` beside it for several, or
``<image stem>_<i>.png`` under ``--out-dir``) plus a JSON file of the counts and the ``--dtype`` used
(``auto``: float16 on CUDA, float32 on the CPU, the default ``--device``). Drawing the patches
needs only Pillow; ``--hist`` needs matplotlib (``pip install "llava-prumerge[viz]"``).
Errors a user can fix (missing image or checkpoint, bad option, matplotlib missing) print
``error: ...`` and exit with status 2.
"""

from __future__ import annotations

import argparse
import colorsys
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from llava.dtypes import add_dtype_arg, resolve_dtype
from llava.mm_utils import load_image, process_images
from llava.model.token_reduction import outlier_count
from llava.model.token_reduction.args import add_reduction_args, reduction_changes
from llava.model.token_reduction.config import ReductionConfig

USAGE_ERROR = 2
MERGING_METHODS = ("prumerge", "prumerge_plus")
DIM = 0.35  # brightness of pruned patches
TINT = 0.45  # share of the centre's colour in a merged patch
KEPT_OUTLINE = (255, 235, 0)  # outline of kept patches when nothing is merged
VIZ_HINT = 'pip install "llava-prumerge[viz]"'


@dataclass
class ImageReport:
    """What the tower did with one image.

    Attributes:
        view: ``[S, S, 3]`` uint8 image as the model sees it.
        kept: patch indices of the kept tokens, in output order (the extra token has none).
        kept_tokens: the tower's ``lengths`` for this image (extra token included).
        owner: ``[N]`` position in ``kept`` of the centre each patch was merged into, −1 for none.
        attention: ``[N]`` class attention, or None when the tower has no next layer to read it from.
    """

    view: np.ndarray
    kept: list[int]
    kept_tokens: int
    owner: np.ndarray
    attention: np.ndarray | None


def require_matplotlib() -> Any:
    """``matplotlib.pyplot`` on the non-interactive Agg backend; ImportError naming the extra when missing."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError(f"--hist needs matplotlib, which is not installed: {VIZ_HINT}") from err
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def build_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m llava.visualize",
        description="Draw the visual tokens a LLaVA vision tower keeps (and merges) for each image.",
    )
    parser.add_argument("--model-path", required=True, help="checkpoint folder or Hub id")
    parser.add_argument("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    parser.add_argument("--image-file", nargs="+", required=True, help="one or more images (one batch)")
    add_reduction_args(parser)
    parser.add_argument("--out", default="kept.png", help="output PNG (several images: <stem>_<i>.png)")
    parser.add_argument("--out-dir", default=None, help="write <image stem>_<i>.png here instead of --out")
    parser.add_argument("--json", default=None, help="counts file (default: --out with .json / counts.json)")
    parser.add_argument("--hist", action="store_true", help="add the class-attention histogram (matplotlib)")
    parser.add_argument("--scale", type=int, default=2, help="pixels per model pixel in the drawing")
    parser.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    add_dtype_arg(parser)
    return parser


def output_paths(args: argparse.Namespace) -> tuple[list[Path], Path]:
    """The PNG path of every image and the JSON path."""
    images = [Path(name) for name in args.image_file]
    if args.out_dir is not None:
        folder = Path(args.out_dir)
        pngs = [folder / f"{path.stem}_{i}.png" for i, path in enumerate(images)]
        default_json = folder / "counts.json"
    else:
        out = Path(args.out)
        if len(images) == 1:
            pngs = [out]
        else:
            pngs = [out.with_name(f"{out.stem}_{i}.png") for i in range(len(images))]
        default_json = out.with_suffix(".json")
    return pngs, Path(args.json) if args.json else default_json


def model_view(pixels: torch.Tensor, image_processor: Any) -> np.ndarray:
    """``[B, 3, S, S]`` normalised pixels back to ``[B, S, S, 3]`` uint8 RGB (undoes the CLIP normalisation)."""
    mean = torch.tensor(image_processor.image_mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(image_processor.image_std, dtype=torch.float32).view(1, 3, 1, 1)
    rgb = (pixels.float().cpu() * std + mean).clamp(0, 1) * 255
    return rgb.round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def merge_owner(keys: torch.Tensor, centres: torch.Tensor, num_neighbors: int, cosine: bool) -> torch.Tensor:
    """The centre each patch is merged into, as PruMerge picks neighbours.

    Every centre takes its top ``num_neighbors`` other patches by key similarity (cosine or dot
    product). A patch picked by several centres is drawn with the most similar one; centres themselves
    and patches no centre picked get −1.

    Args:
        keys: ``[N, D]`` patch keys; centres: ``[C]`` patch indices of the kept tokens.

    Returns:
        ``[N]`` int64 positions into ``centres``, or −1.
    """
    n = keys.shape[0]
    owner = torch.full((n,), -1, dtype=torch.long)
    k = min(num_neighbors, n - 1)
    if centres.numel() == 0 or k <= 0:
        return owner
    feats = F.normalize(keys.float(), dim=-1) if cosine else keys.float()
    sim = feats[centres] @ feats.T  # [C, N]
    sim[torch.arange(len(centres)), centres] = float("-inf")
    top = sim.topk(k, dim=-1).indices  # [C, k]
    score = torch.full_like(sim, float("-inf")).scatter_(1, top, sim.gather(1, top))
    best, owner_all = score.max(dim=0)  # [N]
    owner = torch.where(torch.isfinite(best), owner_all, owner)
    owner[centres] = -1
    return owner


@torch.no_grad()
def analyse(model: Any, pixels: torch.Tensor, image_processor: Any) -> list[ImageReport]:
    """Runs the tower (with its reducer) on a batch and gathers what the drawing needs."""
    tower = model.get_vision_tower()
    reduction = tower.reduction
    pixels = pixels.to(device=tower.device, dtype=tower.dtype)
    out = tower(pixels)
    attention = keys = None
    if tower.num_layers_run < tower.config.num_hidden_layers:
        attention, keys, _ = tower.attention_and_keys(tower.encode(pixels))
    views = model_view(pixels, image_processor)
    n = tower.num_patches
    reports = []
    for b in range(pixels.shape[0]):
        row = out.indices[b].cpu()
        kept = row[row >= 0]
        owner = torch.full((n,), -1, dtype=torch.long)
        if reduction.method in MERGING_METHODS and keys is not None:
            cosine = reduction.variant == "reference"
            owner = merge_owner(keys[b].cpu(), kept, reduction.num_neighbors, cosine)
        reports.append(
            ImageReport(
                view=views[b],
                kept=kept.tolist(),
                kept_tokens=int(out.lengths[b]),
                owner=owner.numpy(),
                attention=None if attention is None else attention[b].float().cpu().numpy(),
            )
        )
    return reports


def palette(count: int) -> list[tuple[int, int, int]]:
    """``count`` distinct saturated colours (golden-ratio hue steps)."""
    colours = []
    for i in range(count):
        r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.9, 1.0)
        colours.append((int(r * 255), int(g * 255), int(b * 255)))
    return colours


def draw_patches(report: ImageReport, grid: tuple[int, int], scale: int = 2) -> Image.Image:
    """The model's view with pruned patches dimmed (tinted by their merge centre) and kept ones outlined."""
    view = report.view.astype(np.float32)
    side = view.shape[0]
    rows, cols = grid
    cell = side // cols
    colours = palette(len(report.kept))
    kept_mask = np.zeros(rows * cols, dtype=bool)
    kept_mask[report.kept] = True
    canvas = view * DIM
    for p in range(rows * cols):
        r, c = divmod(p, cols)
        box = (slice(r * cell, (r + 1) * cell), slice(c * cell, (c + 1) * cell))
        if kept_mask[p]:
            canvas[box] = view[box]
        elif report.owner[p] >= 0:
            canvas[box] = canvas[box] * (1 - TINT) + np.array(colours[report.owner[p]]) * TINT
    image = Image.fromarray(canvas.round().clip(0, 255).astype(np.uint8))
    image = image.resize((side * scale, side * scale), Image.Resampling.NEAREST)
    merging = bool((report.owner >= 0).any())
    draw = ImageDraw.Draw(image)
    width = max(1, scale)
    for i, p in enumerate(report.kept):
        r, c = divmod(p, cols)
        x0, y0 = c * cell * scale, r * cell * scale
        box = (x0, y0, x0 + cell * scale - 1, y0 + cell * scale - 1)
        draw.rectangle(box, outline=colours[i] if merging else KEPT_OUTLINE, width=width)
    return image


def iqr_fence(attention: np.ndarray, iqr_scale: float = 1.5) -> float:
    """``Q3 + iqr_scale * IQR`` with linear-interpolated quartiles, as :func:`outlier_count` uses."""
    q1, q3 = np.quantile(attention.astype(np.float64), [0.25, 0.75])
    return float(q3 + iqr_scale * (q3 - q1))


def draw_histogram(attention: np.ndarray, iqr_scale: float, size: tuple[int, int]) -> Image.Image:
    """Histogram of the class attention (log-scale x) with the IQR fence and the outlier count."""
    plt = require_matplotlib()
    width, height = size
    dpi = 100
    fig, ax = plt.subplots(figsize=(width / dpi, height / dpi), dpi=dpi)
    try:
        values = attention.astype(np.float64)
        positive = values[values > 0]
        low, high = (positive.min(), positive.max()) if positive.size else (1e-8, 1.0)
        bins = np.geomspace(low, high * 1.0001, 50) if high > low else 50
        ax.hist(np.clip(values, low, None), bins=bins, color="#4C72B0")
        ax.set_xscale("log")
        fence = iqr_fence(values, iqr_scale)
        outliers = int(outlier_count(torch.from_numpy(values)[None], iqr_scale)[0])
        ax.axvline(fence, color="#C44E52", linestyle="--", label=f"Q3 + {iqr_scale:g} IQR")
        ax.set_title(f"class attention: {outliers} outliers of {values.size}")
        ax.set_xlabel("attention to CLS (log scale)")
        ax.set_ylabel("patches")
        ax.legend(loc="upper right")
        fig.tight_layout()
        fig.canvas.draw()
        return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())
    finally:
        plt.close(fig)


def compose(patches: Image.Image, histogram: Image.Image | None) -> Image.Image:
    """The patch drawing, with the histogram (if any) on its right."""
    if histogram is None:
        return patches
    out = Image.new("RGB", (patches.width + histogram.width, patches.height), (255, 255, 255))
    out.paste(patches, (0, 0))
    out.paste(histogram, (patches.width, (patches.height - histogram.height) // 2))
    return out


def image_record(name: str, png: Path, report: ImageReport, iqr_scale: float) -> dict[str, Any]:
    """The JSON entry of one image."""
    record: dict[str, Any] = {"image": name, "png": str(png), "kept_tokens": report.kept_tokens}
    record["kept_patches"] = len(report.kept)
    record["merged_patches"] = int((report.owner >= 0).sum())
    record["outliers"] = None
    record["fence"] = None
    if report.attention is not None:
        attention = torch.from_numpy(report.attention.astype(np.float64))[None]
        record["outliers"] = int(outlier_count(attention, iqr_scale)[0])
        record["fence"] = iqr_fence(report.attention, iqr_scale)
    record["indices"] = report.kept
    return record


def load_model(args: argparse.Namespace) -> tuple[Any, Any, ReductionConfig]:
    """Loads the checkpoint in ``--dtype`` and applies the ``--token-reduction`` / ``--reduction-*`` flags."""
    from llava.model.loader import load_pretrained_model

    dtype = resolve_dtype(args.dtype, args.device)
    _, model, image_processor, _ = load_pretrained_model(
        args.model_path,
        args.model_base,
        device=args.device,
        dtype=dtype,
        reduction_changes=reduction_changes(args),
    )
    if model.get_vision_tower() is None:
        raise ValueError(f"{args.model_path} has no vision tower: nothing to visualise.")
    reduction = model.token_reduction
    return model, image_processor, reduction


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Draws every image and writes the PNGs and the JSON; returns the JSON content."""
    if args.scale < 1:
        raise ValueError(f"--scale must be a positive integer, got {args.scale}.")
    if args.hist:
        require_matplotlib()  # fail before the (slow) model load
    resolve_dtype(args.dtype, args.device)  # likewise an unusable --dtype / --device
    images = [load_image(name) for name in args.image_file]
    model, image_processor, reduction = load_model(args)
    pixels = process_images(images, image_processor, model.config.image_aspect_ratio)
    reports = analyse(model, pixels, image_processor)
    pngs, json_path = output_paths(args)
    grid = model.get_vision_tower().grid
    records = []
    for name, png, report in zip(args.image_file, pngs, reports):
        patches = draw_patches(report, grid, args.scale)
        histogram = None
        if args.hist:
            if report.attention is None:
                raise ValueError("--hist needs the class attention, and this tower's last layer is selected.")
            histogram = draw_histogram(
                report.attention, reduction.iqr_scale, (patches.height, patches.height)
            )
        png.parent.mkdir(parents=True, exist_ok=True)
        compose(patches, histogram).save(png)
        records.append(image_record(name, png, report, reduction.iqr_scale))
    result = {
        "model_path": args.model_path,
        "dtype": str(model.dtype).removeprefix("torch."),
        "reduction": reduction.to_dict(),
        "images": records,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


def main(argv: list[str] | None = None) -> int:
    """Runs the tool; returns the exit status (0 ok, 2 user error)."""
    args = build_parser().parse_args(argv)
    try:
        result = run(args)
    except (OSError, ValueError, ImportError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    for record in result["images"]:
        print(
            f"{record['image']}: {record['kept_tokens']} visual tokens, {record['outliers']} outliers -> {record['png']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
