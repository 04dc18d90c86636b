"""Pretrain a small CLIP-style vision tower on the synthetic shapes (class-token and patch objectives).

A trained CLIP's class token attends to the objects of an image, which is what PruMerge's outlier
detection relies on. A random tower has no such preference, so the quickstart trains one: the class
token's output (``pooler_output``) predicts which (colour, shape) pairs are present (multi-label) and
how many objects there are. Both answers need the object patches, so the class attention of the last
layer moves onto them. The patch tokens of ``hidden_states[-2]`` (LLaVA's ``mm_vision_select_layer``)
also predict the pair under each patch, so the features the language model reads say what is where.
The result is a plain ``CLIPVisionModel`` folder with a CLIP image processor,
loadable as ``--vision_tower`` like ``openai/clip-vit-large-patch14-336``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import nn
from transformers import CLIPVisionConfig, CLIPVisionModel

from llava.mm_utils import load_image_processor, process_images
from llava.model.checkpoint_format import save_image_processor
from llava.quickstart.data import COLOURS, SHAPES

PAIRS = [(colour, shape) for colour in COLOURS for shape in SHAPES]
MAX_OBJECTS = 6


@dataclass(frozen=True)
class TowerConfig:
    """Size of the tower and of its pretraining run."""

    image_size: int = 168
    patch_size: int = 14
    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 1e-3
    seed: int = 0


class ShapeHeads(nn.Module):
    """The pretraining heads: pair presence (BCE) and object count (CE) on the class token, and the
    (colour, shape) pair or background under each patch (CE) on the patch tokens LLaVA selects."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.presence = nn.Linear(hidden, len(PAIRS))
        self.count = nn.Linear(hidden, MAX_OBJECTS + 1)
        self.patch = nn.Linear(hidden, len(PAIRS) + 1)

    def forward(self, outputs) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        patches = outputs.hidden_states[-2][:, 1:]  # what mm_vision_select_layer=-2 hands to the projector
        return self.presence(outputs.pooler_output), self.count(outputs.pooler_output), self.patch(patches)


def inside(obj: dict, px: float, py: float) -> bool:
    """Whether the point lies inside the drawn shape (the geometry of ``data.draw_scene``)."""
    dx, dy, h = px - obj["x"], py - obj["y"], obj["size"]
    if obj["shape"] == "circle":
        return dx * dx + dy * dy <= h * h
    if obj["shape"] == "square":
        return abs(dx) <= h and abs(dy) <= h
    return -h <= dy <= h and abs(dx) <= (dy + h) / 2  # apex up, base at y + h


def patch_labels(scene: list[dict], image_size: int, patch_size: int, drawn_size: int) -> torch.Tensor:
    """The index in :data:`PAIRS` of the object under each patch centre, ``len(PAIRS)`` for background."""
    side, scale = image_size // patch_size, drawn_size / image_size
    labels = torch.full((side * side,), len(PAIRS), dtype=torch.long)
    for row in range(side):
        for col in range(side):
            px, py = (col + 0.5) * patch_size * scale, (row + 0.5) * patch_size * scale
            for obj in scene:
                if inside(obj, px, py):
                    labels[row * side + col] = PAIRS.index((obj["colour"], obj["shape"]))
    return labels


def clip_config(cfg: TowerConfig) -> CLIPVisionConfig:
    """The ``CLIPVisionConfig`` of the quickstart tower."""
    return CLIPVisionConfig(
        hidden_size=cfg.hidden_size,
        intermediate_size=4 * cfg.hidden_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        image_size=cfg.image_size,
        patch_size=cfg.patch_size,
        hidden_act="quick_gelu",
        projection_dim=cfg.hidden_size,
    )


def targets(scene: list[dict]) -> tuple[torch.Tensor, int]:
    """Multi-hot presence over :data:`PAIRS` and the object count of one scene."""
    present = {(o["colour"], o["shape"]) for o in scene}
    return torch.tensor([float(p in present) for p in PAIRS]), min(len(scene), MAX_OBJECTS)


def load_split(
    images_dir: Path, scenes: dict[str, list[dict]], processor, cfg: TowerConfig
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pixels ``[N, 3, H, W]`` (LLaVA pre-processing), presence ``[N, P]``, counts ``[N]``, patch labels ``[N, L]``."""
    names = sorted(scenes)
    pixels, presence, counts, patches = [], [], [], []
    for start in range(0, len(names), 64):
        chunk = names[start : start + 64]
        images = []
        for name in chunk:
            with Image.open(images_dir / name) as img:
                images.append(img.convert("RGB"))
        pixels.append(process_images(images, processor, "pad"))
        for name, image in zip(chunk, images):
            p, c = targets(scenes[name])
            presence.append(p)
            counts.append(c)
            patches.append(patch_labels(scenes[name], cfg.image_size, cfg.patch_size, image.width))
    return torch.cat(pixels), torch.stack(presence), torch.tensor(counts), torch.stack(patches)


def build_training(cfg: TowerConfig, n_train: int):
    """A fresh tower and heads, their parameters, AdamW and the one-cycle schedule over every epoch."""
    model = CLIPVisionModel(clip_config(cfg))
    heads = ShapeHeads(cfg.hidden_size)
    params = list(model.parameters()) + list(heads.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=0.01)
    total = cfg.epochs * math.ceil(n_train / cfg.batch_size)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, cfg.learning_rate, total_steps=total, pct_start=0.1
    )
    return model, heads, params, optimizer, schedule


def pretrain_tower(
    dataset_root: str | Path,
    out_dir: str | Path,
    cfg: TowerConfig = TowerConfig(),
    progress: Callable[[str], None] = print,
) -> dict:
    """Pretrains the tower on the training images of ``dataset_root`` and saves it to ``out_dir``.

    Returns the run's record (also written to ``out_dir/pretrain_log.json``): losses per epoch and the
    held-out presence accuracy and count accuracy on the evaluation images.
    """
    root, out_dir = Path(dataset_root), Path(out_dir)
    scenes = json.loads((root / "scenes.json").read_text(encoding="utf-8"))
    torch.manual_seed(cfg.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_image_processor(out_dir, cfg.image_size)
    processor = load_image_processor(out_dir)
    started = time.time()
    x_train, p_train, c_train, l_train = load_split(root / "images", scenes["train"], processor, cfg)
    x_eval, p_eval, c_eval, l_eval = load_split(root / "images", scenes["eval"], processor, cfg)

    model, heads, params, optimizer, schedule = build_training(cfg, len(x_train))
    # about one pair in six is present: weigh positives up so the presence head does not settle on "absent"
    bce, ce = nn.BCEWithLogitsLoss(pos_weight=torch.full((len(PAIRS),), 4.0)), nn.CrossEntropyLoss()
    log: dict = {"config": asdict(cfg), "epochs": []}

    def step(idx: torch.Tensor) -> float:
        outputs = model(pixel_values=x_train[idx], output_hidden_states=True)
        presence_logits, count_logits, patch_logits = heads(outputs)
        loss = bce(presence_logits, p_train[idx]) + ce(count_logits, c_train[idx])
        loss = loss + ce(patch_logits.flatten(0, 1), l_train[idx].flatten())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        schedule.step()
        return loss.item()

    for epoch in range(cfg.epochs):
        model.train()
        order = torch.randperm(len(x_train))
        losses = [step(order[i : i + cfg.batch_size]) for i in range(0, len(order), cfg.batch_size)]
        record = {
            "epoch": epoch + 1,
            "loss": sum(losses) / len(losses),
            **evaluate(model, heads, x_eval, p_eval, c_eval, l_eval),
        }
        log["epochs"].append(record)
        progress(
            f"tower epoch {epoch + 1}/{cfg.epochs}: loss {record['loss']:.3f}, held-out presence acc "
            f"{record['presence_acc']:.3f}, count acc {record['count_acc']:.3f}, object-patch acc "
            f"{record['object_patch_acc']:.3f} ({time.time() - started:.0f} s)"
        )
    model.save_pretrained(out_dir)
    log["seconds"] = time.time() - started
    (out_dir / "pretrain_log.json").write_text(json.dumps(log, indent=2), encoding="utf-8")
    return log


@torch.no_grad()
def evaluate(
    model: CLIPVisionModel,
    heads: ShapeHeads,
    pixels: torch.Tensor,
    presence: torch.Tensor,
    counts: torch.Tensor,
    patches: torch.Tensor,
) -> dict[str, float]:
    """Presence accuracy (per pair), exact count accuracy, and the pair accuracy on patches under an object."""
    model.eval()
    p_logits, c_logits, l_preds = [], [], []
    for start in range(0, len(pixels), 64):
        p, c, patch = heads(model(pixel_values=pixels[start : start + 64], output_hidden_states=True))
        p_logits.append(p)
        c_logits.append(c)
        l_preds.append(patch.argmax(-1))
    p_pred = torch.cat(p_logits) > 0
    c_pred = torch.cat(c_logits).argmax(-1)
    l_pred, on_object = torch.cat(l_preds), patches < len(PAIRS)
    return {
        "presence_acc": (p_pred == presence.bool()).float().mean().item(),
        "count_acc": (c_pred == counts).float().mean().item(),
        "object_patch_acc": (l_pred == patches)[on_object].float().mean().item(),
    }
