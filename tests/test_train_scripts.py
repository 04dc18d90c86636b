"""The published training scripts and a 2-process DeepSpeed ZeRO-3 run, for real, on the CPU.

Each ``scripts/v1_5/*.sh`` runs unchanged except for model/data paths (environment variables) and a
step count (``--max_steps``), through the DeepSpeed launcher and ``llava/train/train_mem.py``, as on a
GPU node. DeepSpeed runs on its CPU accelerator over gloo (it compiles one small C++ op on first use).
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from llava.model.builder import checkpoint_kind, load_pretrained_model

REPO_ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(name: str, env: dict[str, str], *flags: str) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "MASTER_PORT": str(free_port()), "CUDA_VISIBLE_DEVICES": "",
           "REPORT_TO": "", **env}  # fmt: skip
    result = subprocess.run(["bash", str(REPO_ROOT / "scripts" / "v1_5" / name), *flags], env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "global batch" in result.stderr


@pytest.fixture(scope="module")
def pretrained(train_workspace, tmp_path_factory):
    root, base, clip = train_workspace
    paths = {"MODEL_BASE": str(base), "VISION_TOWER": str(clip), "DATA_PATH": str(root / "data.json"),
             "IMAGE_FOLDER": str(root / "images")}  # fmt: skip
    out = tmp_path_factory.mktemp("pretrain")
    run_script("pretrain.sh", {**paths, "OUTPUT_DIR": str(out)}, "--max_steps", "2")
    assert checkpoint_kind(out) == "projector"
    assert sorted(torch.load(out / "mm_projector.bin")) == [
        f"model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("bias", "weight")
    ]
    return {**paths, "PRETRAIN_MM_MLP_ADAPTER": str(out / "mm_projector.bin")}


@pytest.mark.parametrize(
    ("script", "kind", "method"),
    [("finetune.sh", "full", "none"), ("finetune_lora.sh", "lora", "none"),
     ("finetune_lora_prumerge.sh", "lora", "prumerge"), ("finetune_lora_prumerge_plus.sh", "lora", "prumerge_plus")],
)  # fmt: skip
def test_finetune_scripts_run_and_their_checkpoints_load(
    pretrained, train_workspace, tmp_path, script, kind, method
):
    out = tmp_path / "ckpt"
    run_script(script, {**pretrained, "OUTPUT_DIR": str(out)}, "--max_steps", "2")
    assert checkpoint_kind(out) == kind
    config = json.loads((out / "config.json").read_text())
    assert config["mm_token_reduction"]["method"] == method
    assert config["mm_projector_type"] == "mlp2x_gelu" and config["image_aspect_ratio"] == "pad"
    base = pretrained["MODEL_BASE"] if kind == "lora" else None
    _, model, _, _ = load_pretrained_model(str(out), base, device="cpu")
    assert model.get_vision_tower().reduction.method == method


def test_two_process_zero3_lora_run(train_workspace, tmp_path):
    root, base, clip = train_workspace
    out = tmp_path / "zero3"
    command = [
        sys.executable, "-m", "deepspeed.launcher.runner", "--num_gpus", "2", "--master_port", str(free_port()),
        str(REPO_ROOT / "llava" / "train" / "train_mem.py"), "--deepspeed", str(REPO_ROOT / "scripts" / "zero3.json"),
        "--model_name_or_path", str(base), "--vision_tower", str(clip), "--data_path", str(root / "data.json"),
        "--image_folder", str(root / "images"), "--image_aspect_ratio", "pad", "--mm_projector_type", "mlp2x_gelu",
        "--lora_enable", "True", "--lora_r", "4", "--token_reduction", "prumerge", "--output_dir", str(out),
        "--per_device_train_batch_size", "2", "--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2",
        "--learning_rate", "1e-3", "--logging_steps", "1", "--report_to", "none", "--dataloader_num_workers", "0",
    ]  # fmt: skip
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (out / "checkpoint-2" / "non_lora_trainables.bin").is_file()
    extras = torch.load(out / "non_lora_trainables.bin")
    assert extras["base_model.model.model.mm_projector.0.weight"].shape == (64, 32)  # gathered, not a shard
    _, model, _, _ = load_pretrained_model(str(out), str(base), device="cpu")
    assert model.config.mm_token_reduction["method"] == "prumerge"
    torch.testing.assert_close(
        model.get_model().mm_projector[0].weight, extras["base_model.model.model.mm_projector.0.weight"]
    )
