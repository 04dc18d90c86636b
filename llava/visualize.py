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

In-LLM reductions (``atp``, ``fastv``) keep every patch in the tower and prune inside the language model,
so the drawing needs a prompt (``--query``): after one prefill of each image with it, one panel per pruning
stage shows the patches kept from that layer on (the model's ``kept_visual_ranks()``), titled with the
layer and the count; the JSON adds each stage's indices and the image's per-layer schedule and N̄.

``--nbar-histogram answers.jsonl [...] --out hist.png`` draws instead the histogram of N̄ over the answer
lines of evaluation runs (``mean_visual_tokens``; ``num_visual_tokens`` for files without it, where every
layer runs on the spliced tokens), one series per file; it needs matplotlib and no model.
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

from llava.conversation import conv_templates
from llava.dtypes import add_dtype_arg, resolve_dtype
from llava.eval.io import iter_jsonl
from llava.mm_utils import load_image, process_images
from llava.model.multimodal_encoder.languagebind_video import to_frames_first
from llava.model.token_reduction import outlier_count
from llava.model.token_reduction.args import add_reduction_args, reduction_changes
from llava.model.token_reduction.config import ReductionConfig
from llava.prompting import batch_prompt_ids, build_prompt, generation_kwargs
from llava.serve.video import (
    VIDEO_SOURCES_HELP,
    add_video_args,
    check_media,
    load_video_model,
    read_video,
    video_pixels,
    video_views,
)

USAGE_ERROR = 2
MERGING_METHODS = ("prumerge", "prumerge_plus")
DIM = 0.35  # brightness of pruned patches
TINT = 0.45  # share of the centre's colour in a merged patch
KEPT_OUTLINE = (255, 235, 0)  # outline of kept patches when nothing is merged
TITLE_HEIGHT = 14  # model pixels above each in-LLM panel for its title
DEFAULT_OUT = "kept.png"
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
    parser.add_argument("--model-path", help="checkpoint folder or Hub id (required unless --nbar-histogram)")
    parser.add_argument("--model-base", default=None, help="base LLM for LoRA / projector-only checkpoints")
    parser.add_argument(
        "--image-file", nargs="+", help="one or more images (one batch; required unless --nbar-histogram)"
    )
    parser.add_argument(
        "--video-file",
        default=None,
        help=f"one video for a Video-LLaVA checkpoint ({VIDEO_SOURCES_HELP}): a strip of its frames",
    )
    add_reduction_args(parser)
    add_video_args(parser)
    parser.add_argument(
        "--query",
        default="What is in the image?",
        help="in-LLM reductions (atp, fastv): the question the image is prefilled with",
    )
    parser.add_argument(
        "--conv-mode", default="vicuna_v1", choices=sorted(conv_templates), help="with --query"
    )
    parser.add_argument(
        "--nbar-histogram",
        nargs="+",
        metavar="ANSWERS",
        help="draw the histogram of N̄ (mean_visual_tokens) over these answers files instead (no model)",
    )
    parser.add_argument(
        "--out", default=None, help=f"output PNG (default {DEFAULT_OUT}; several images: <stem>_<i>.png)"
    )
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
        out = Path(args.out or DEFAULT_OUT)
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


def load_model(args: argparse.Namespace) -> tuple[Any, Any, Any, ReductionConfig]:
    """Loads the checkpoint in ``--dtype`` and applies the ``--token-reduction`` / ``--reduction-*`` flags;
    returns the tokenizer, model, image processor and reduction."""
    from llava.model.loader import load_pretrained_model

    dtype = resolve_dtype(args.dtype, args.device)
    tokenizer, model, image_processor, _ = load_pretrained_model(
        args.model_path,
        args.model_base,
        device=args.device,
        dtype=dtype,
        reduction_changes=reduction_changes(args),
    )
    if model.get_vision_tower() is None:
        raise ValueError(f"{args.model_path} has no vision tower: nothing to visualise.")
    reduction = model.token_reduction
    return tokenizer, model, image_processor, reduction


# ---------------------------------------------------------------------------------------------
# In-LLM reductions (ATP, FastV): the kept patches at each pruning stage
# ---------------------------------------------------------------------------------------------


@dataclass
class Stage:
    """The visual tokens one pruning stage kept: ``layer`` is the first decoder layer that runs on them,
    ``kept`` their patch (raster) indices in increasing order."""

    layer: int
    kept: list[int]


@dataclass
class InLLMReport:
    """One image's prefill with an in-LLM reduction.

    Attributes:
        view: ``[S, S, 3]`` uint8 image as the model sees it.
        stages: the kept patches of each pruning stage, in layer order.
        schedule: the visual tokens each decoder layer ran on (``visual_token_schedule()``'s row).
    """

    view: np.ndarray
    stages: list[Stage]
    schedule: list[int]


@torch.no_grad()
def analyse_in_llm(
    model: Any, tokenizer: Any, pixels: torch.Tensor, image_processor: Any, query: str, conv_mode: str
) -> list[InLLMReport]:
    """Prefills each image with ``query`` as the evaluation runners do and reads the kept visual tokens."""
    prompts = [build_prompt(conv_mode, query, image=True)] * pixels.shape[0]
    ids, mask = batch_prompt_ids(tokenizer, prompts)
    pixels = pixels.to(device=model.device, dtype=model.dtype)
    spliced = model.prepare_multimodal_inputs(
        ids.to(model.device), mask.to(model.device), pixels, padding_side="left"
    )
    model.generate_spliced(spliced, **generation_kwargs(tokenizer, 1, 0.0, None, 1))  # the prefill
    schedule = model.visual_token_schedule()  # [B, layers]
    ranks = model.kept_visual_ranks()  # per stage [B, L']
    layers = [p + 1 for p in model.get_model().in_llm_method().prune_layers]
    views = model_view(pixels, image_processor)
    reports = []
    for b in range(pixels.shape[0]):
        stages = [Stage(layer, sorted(r[b][r[b] >= 0].tolist())) for layer, r in zip(layers, ranks)]
        reports.append(InLLMReport(views[b], stages, schedule[b].tolist()))
    return reports


def draw_title(panel: Image.Image, title: str, height: int) -> Image.Image:
    """``panel`` under a white strip of ``height`` pixels holding ``title``."""
    from PIL import ImageFont

    out = Image.new("RGB", (panel.width, panel.height + height), (255, 255, 255))
    out.paste(panel, (0, height))
    font = ImageFont.load_default(size=max(8, int(height * 0.7)))
    ImageDraw.Draw(out).text((4, height // 2), title, fill=(0, 0, 0), font=font, anchor="lm")
    return out


def draw_stages(report: InLLMReport, grid: tuple[int, int], scale: int = 2) -> Image.Image:
    """One panel per pruning stage, side by side: kept patches outlined, the others dimmed, and the title
    ``layer L+: K of N tokens``."""
    total = report.schedule[0]
    no_merge = np.full(grid[0] * grid[1], -1)
    panels = [
        draw_title(
            draw_patches(ImageReport(report.view, stage.kept, len(stage.kept), no_merge, None), grid, scale),
            f"layer {stage.layer}+: {len(stage.kept)} of {total} tokens",
            TITLE_HEIGHT * scale,
        )
        for stage in report.stages
    ]
    gap = 4 * scale
    out = Image.new(
        "RGB", (sum(p.width for p in panels) + gap * (len(panels) - 1), panels[0].height), "white"
    )
    for i, panel in enumerate(panels):
        out.paste(panel, (i * (panel.width + gap), 0))
    return out


def in_llm_record(name: str, png: Path, report: InLLMReport) -> dict[str, Any]:
    """The JSON entry of one image under an in-LLM reduction."""
    return {
        "image": name,
        "png": str(png),
        "visual_tokens": report.schedule[0],
        "visual_tokens_per_layer": report.schedule,
        "mean_visual_tokens": sum(report.schedule) / len(report.schedule),
        "stages": [
            {"layer": stage.layer, "kept_tokens": len(stage.kept), "indices": stage.kept}
            for stage in report.stages
        ],
    }


# ---------------------------------------------------------------------------------------------
# N̄ over answer files
# ---------------------------------------------------------------------------------------------


def nbar_values(path: Path) -> tuple[str, list[float]]:
    """``(field, values)``: ``mean_visual_tokens`` of every answer with an image when each has it, else
    their ``num_visual_tokens`` (what every layer runs on without an in-LLM reduction).

    Raises:
        ValueError: the file has no answer with visual tokens.
    """
    lines = [a for a in iter_jsonl(path) if a.get("num_visual_tokens")]
    if not lines:
        raise ValueError(f"{path} has no answer line with visual tokens (num_visual_tokens > 0).")
    field = "mean_visual_tokens" if all("mean_visual_tokens" in a for a in lines) else "num_visual_tokens"
    return field, [float(a[field]) for a in lines]


def run_histogram(args: argparse.Namespace) -> dict[str, Any]:
    """Draws the N̄ histogram of the ``--nbar-histogram`` files; writes the PNG and a JSON summary."""
    plt = require_matplotlib()
    series = []
    for name in args.nbar_histogram:
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"answers file not found: {path}")
        series.append((path, *nbar_values(path)))
    png = Path(args.out or "nbar.png")
    json_path = Path(args.json) if args.json else png.with_suffix(".json")
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=100)
    try:
        everything = np.concatenate([np.asarray(values) for _, _, values in series])
        bins = np.histogram_bin_edges(everything, bins=30)
        for path, field, values in series:
            label = f"{path.stem} ({field}, mean {np.mean(values):.1f}, {len(values)} answers)"
            ax.hist(values, bins=bins, alpha=0.6, label=label)
        ax.set_xlabel("N̄: visual tokens per decoder layer, mean over layers")
        ax.set_ylabel("answers")
        ax.legend(loc="upper right", fontsize="small")
        fig.tight_layout()
        png.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(png)
    finally:
        plt.close(fig)
    files = [
        {
            "answers_file": str(path),
            "field": field,
            "answers": len(values),
            "mean": float(np.mean(values)),
            "min": float(np.min(values)),
            "max": float(np.max(values)),
        }
        for path, field, values in series
    ]
    result = {"png": str(png), "files": files}
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# Videos (Video-LLaVA): the kept patches of every frame
# ---------------------------------------------------------------------------------------------


@torch.no_grad()
def analyse_video(model: Any, pixels: torch.Tensor) -> list[ImageReport]:
    """Runs the video tower (with its per-frame reducer) on one video ``[1, 3, T, S, S]``; one report per frame.

    ``kept_tokens`` is the frame's token count as the language model gets it (its CLS included unless
    ``--drop-cls``); ``kept`` holds the patches of those tokens (the CLS and the extra token have none).
    """
    tower = model.get_video_tower()
    reduction = tower.reduction
    out = tower(pixels)
    attention = keys = None
    if tower.num_layers_run < tower.config.num_hidden_layers:
        hidden = tower.encode_frames(to_frames_first(pixels))  # [T, 1 + N, D]
        attention, keys, _ = tower.attention_and_keys(hidden, num_frames=out.num_frames)
    views = video_views(pixels)
    n = tower.num_patches
    reports = []
    for f in range(out.num_frames):
        row = out.indices[f].cpu()
        kept = row[row >= 0]
        owner = torch.full((n,), -1, dtype=torch.long)
        if reduction.method in MERGING_METHODS and keys is not None:
            owner = merge_owner(
                keys[f].cpu(), kept, reduction.num_neighbors, reduction.variant == "reference"
            )
        frame_attention = None if attention is None else attention[f].float().cpu().numpy()
        reports.append(
            ImageReport(views[f], kept.tolist(), int(out.lengths[f]), owner.numpy(), frame_attention)
        )
    return reports


def draw_frame_strip(reports: list[ImageReport], grid: tuple[int, int], scale: int = 2) -> Image.Image:
    """The frames side by side, each drawn as :func:`draw_patches` draws an image, titled
    ``frame f: K tokens`` (K as the language model gets them)."""
    drawn = [draw_patches(report, grid, scale) for report in reports]
    title_height = min(TITLE_HEIGHT * scale, drawn[0].width // 7)  # the title fits a small frame too
    panels = [
        draw_title(panel, f"frame {f}: {report.kept_tokens} tokens", title_height)
        for f, (panel, report) in enumerate(zip(drawn, reports))
    ]
    gap = 4 * scale
    width = sum(panel.width for panel in panels) + gap * (len(panels) - 1)
    out = Image.new("RGB", (width, panels[0].height), "white")
    for f, panel in enumerate(panels):
        out.paste(panel, (f * (panel.width + gap), 0))
    return out


def video_output_paths(args: argparse.Namespace) -> tuple[Path, Path]:
    """The PNG (``--out``, or ``<video stem>.png`` under ``--out-dir``) and the JSON path of a video."""
    if args.out_dir is not None:
        png = Path(args.out_dir) / f"{Path(args.video_file).stem}.png"
        default_json = Path(args.out_dir) / "counts.json"
    else:
        png = Path(args.out or DEFAULT_OUT)
        default_json = png.with_suffix(".json")
    return png, Path(args.json) if args.json else default_json


def run_video(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--video-file`` path of :func:`run`: one strip of the frames and the JSON of every frame."""
    if args.image_file:
        raise ValueError("Give --image-file or --video-file, not both.")
    if args.hist:
        raise ValueError("--hist draws one image's class attention; it is not available for videos.")
    if args.model_base is not None:
        raise ValueError("--model-base is for LoRA and projector-only image checkpoints, not Video-LLaVA.")
    dtype = resolve_dtype(args.dtype, args.device)
    frames = read_video(args.video_file)  # before the (slow) model load, so a bad video fails at once
    check_media(args.model_path, video=True)
    _, model, _, _ = load_video_model(args, args.device, dtype)
    tower = model.get_video_tower()
    if len(frames) != tower.num_frames:
        frames = read_video(args.video_file, tower.num_frames)
    reports = analyse_video(model, video_pixels(frames, tower))
    png, json_path = video_output_paths(args)
    png.parent.mkdir(parents=True, exist_ok=True)
    draw_frame_strip(reports, tower.grid, args.scale).save(png)
    iqr_scale = tower.reduction.iqr_scale
    records = []
    for f, report in enumerate(reports):
        record = image_record(args.video_file, png, report, iqr_scale)
        del record["image"], record["png"]
        records.append({"frame": f, **record})
    result = {
        "model_path": args.model_path,
        "dtype": str(model.dtype).removeprefix("torch."),
        "reduction": ReductionConfig.from_value(model.config.mm_token_reduction).to_dict(),
        "video_reduction": tower.reduction.to_dict(),
        "video": args.video_file,
        "png": str(png),
        "visual_tokens": sum(report.kept_tokens for report in reports),
        "frames": records,
    }
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(result, indent=2) + "\n")
    return result


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Draws every image (or the N̄ histogram) and writes the PNGs and the JSON; returns the JSON content."""
    if args.nbar_histogram:
        return run_histogram(args)
    if not args.model_path or not (args.image_file or args.video_file):
        raise ValueError(
            "--model-path and --image-file (or --video-file) are required (unless --nbar-histogram)."
        )
    if args.scale < 1:
        raise ValueError(f"--scale must be a positive integer, got {args.scale}.")
    if args.video_file is not None:
        return run_video(args)
    if args.hist:
        require_matplotlib()  # fail before the (slow) model load
    resolve_dtype(args.dtype, args.device)  # likewise an unusable --dtype / --device
    images = [load_image(name) for name in args.image_file]
    check_media(args.model_path, video=False)  # a Video-LLaVA checkpoint takes --video-file
    tokenizer, model, image_processor, reduction = load_model(args)
    pixels = process_images(images, image_processor, model.config.image_aspect_ratio)
    if reduction.in_llm:
        return run_in_llm(args, tokenizer, model, image_processor, pixels)
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


def run_in_llm(
    args: argparse.Namespace, tokenizer: Any, model: Any, image_processor: Any, pixels: torch.Tensor
) -> dict[str, Any]:
    """The in-LLM path of :func:`run`: one multi-panel PNG per image and the JSON of every stage."""
    if args.hist:
        raise ValueError("--hist draws the tower's class attention; an in-LLM reduction does not use it.")
    reports = analyse_in_llm(model, tokenizer, pixels, image_processor, args.query, args.conv_mode)
    pngs, json_path = output_paths(args)
    grid = model.get_vision_tower().grid
    records = []
    for name, png, report in zip(args.image_file, pngs, reports):
        png.parent.mkdir(parents=True, exist_ok=True)
        draw_stages(report, grid, args.scale).save(png)
        records.append(in_llm_record(name, png, report))
    result = {
        "model_path": args.model_path,
        "dtype": str(model.dtype).removeprefix("torch."),
        "reduction": model.token_reduction.to_dict(),
        "query": args.query,
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
    for record in result.get("files", []):
        print(f"{record['answers_file']}: N̄ mean {record['mean']:.1f} over {record['answers']} answers")
    for record in result.get("images", []):
        if "stages" in record:
            kept = ", ".join(f"{s['kept_tokens']} from layer {s['layer']}" for s in record["stages"])
            print(f"{record['image']}: N̄ {record['mean_visual_tokens']:.1f} ({kept}) -> {record['png']}")
            continue
        print(
            f"{record['image']}: {record['kept_tokens']} visual tokens, {record['outliers']} outliers -> {record['png']}"
        )
    if "files" in result:
        print(f"-> {result['png']}")
    if "frames" in result:
        per_frame = " ".join(str(record["kept_tokens"]) for record in result["frames"])
        print(
            f"{result['video']}: {len(result['frames'])} frames -> {result['visual_tokens']} visual tokens "
            f"(per frame: {per_frame}) -> {result['png']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
