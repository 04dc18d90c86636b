"""Extract the projector of a full LLaVA checkpoint into a `mm_projector.bin`.

    python scripts/extract_mm_projector.py --model-path ./checkpoints/llava-v1.5-7b --output mm_projector.bin

Keys are kept as `model.mm_projector.*`, the format `--pretrain_mm_mlp_adapter` and projector-only
loading expect.
"""

import argparse
import json
from pathlib import Path

import torch


def extract(model_path: Path) -> dict[str, torch.Tensor]:
    """The ``model.mm_projector.*`` tensors of a checkpoint folder (safetensors or .bin shards)."""
    files = sorted(model_path.glob("*.safetensors")) or sorted(model_path.glob("pytorch_model*.bin"))
    index = next(iter(model_path.glob("*.index.json")), None)
    if index is not None:  # read only the shards that hold projector weights
        weight_map = json.loads(index.read_text())["weight_map"]
        files = sorted({model_path / f for k, f in weight_map.items() if "mm_projector" in k})
    state: dict[str, torch.Tensor] = {}
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            shard = load_file(file)
        else:
            shard = torch.load(file, map_location="cpu", weights_only=True)
        state.update({k: v for k, v in shard.items() if "mm_projector" in k})
    if not state:
        raise SystemExit(f"error: no mm_projector weights found in {model_path}")
    return state


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Extract mm_projector weights from a LLaVA checkpoint.")
    parser.add_argument("--model-path", required=True, type=Path)
    parser.add_argument("--output", required=True, type=Path)
    args = parser.parse_args(argv)
    state = extract(args.model_path)
    torch.save(state, args.output)
    print(f"Saved {len(state)} projector tensors to {args.output}")


if __name__ == "__main__":
    main()
