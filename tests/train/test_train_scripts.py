"""The published training scripts and a 2-process DeepSpeed ZeRO-3 run, for real, on the CPU.

``pretrain.sh``, ``finetune.sh`` and ``finetune_lora_prumerge_plus.sh`` (which runs ``finetune_lora.sh``,
which runs ``finetune.sh``) run unchanged except for model/data paths (environment variables) and a step
count (``--max_steps``), through the DeepSpeed launcher and ``llava/train/train_mem.py``, as on a GPU
node; the other wrappers only set variables on the way, and their launch commands are parsed by the
training's argument classes. The 2-process ZeRO-3 run trains ATP with LoRA. DeepSpeed runs on its CPU
accelerator over gloo (it compiles one small C++ op on first use).
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
from tests_support import REPO_ROOT

from llava.model.loader import checkpoint_kind, load_pretrained_model

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_script(name: str, env: dict[str, str], *flags: str) -> None:
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "MASTER_PORT": str(free_port()),
        "CUDA_VISIBLE_DEVICES": "",
        "REPORT_TO": "",
        **env,
    }
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "v1_5" / name), *flags],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    assert "global batch" in result.stderr


@pytest.fixture(scope="module")
def pretrained(train_workspace, tmp_path_factory):
    root, base, clip = train_workspace
    paths = {
        "MODEL_BASE": str(base),
        "VISION_TOWER": str(clip),
        "DATA_PATH": str(root / "data.json"),
        "IMAGE_FOLDER": str(root / "images"),
    }
    out = tmp_path_factory.mktemp("pretrain")
    run_script("pretrain.sh", {**paths, "OUTPUT_DIR": str(out)}, "--max_steps", "2")
    assert checkpoint_kind(out) == "projector"
    assert sorted(torch.load(out / "mm_projector.bin")) == [
        f"model.mm_projector.{i}.{w}" for i in (0, 2) for w in ("bias", "weight")
    ]
    return {**paths, "PRETRAIN_MM_MLP_ADAPTER": str(out / "mm_projector.bin")}


# Real runs of the two ends of the wrapper chain: finetune.sh (full, ZeRO-3) and
# finetune_lora_prumerge_plus.sh, which runs finetune_lora.sh, which runs finetune.sh. The other wrappers
# only set variables on the way; their launches are checked below by parsing them (DRY_RUN=1).
@pytest.mark.parametrize(
    ("script", "kind", "method"),
    [("finetune.sh", "full", "none"), ("finetune_lora_prumerge_plus.sh", "lora", "prumerge_plus")],
)
def test_finetune_scripts_run_and_their_checkpoints_load(
    pretrained, train_workspace, tmp_path, script, kind, method
):
    out = tmp_path / "ckpt"
    run_script(script, {**pretrained, "OUTPUT_DIR": str(out)}, "--max_steps", "2")
    assert checkpoint_kind(out) == kind
    config = json.loads((out / "config.json").read_text())
    assert config["mm_token_reduction"]["method"] == method
    assert config["mm_projector_type"] == "mlp2x_gelu" and config["image_aspect_ratio"] == "pad"
    if kind == "lora":  # the published scripts train in bf16 under DeepSpeed: the saved extras are bf16
        extras = torch.load(out / "non_lora_trainables.bin")
        assert config["dtype"] == "bfloat16" == str(next(iter(extras.values())).dtype).removeprefix("torch.")
    base = pretrained["MODEL_BASE"] if kind == "lora" else None
    _, model, _, _ = load_pretrained_model(str(out), base, device="cpu")
    assert model.get_vision_tower().reduction.method == method


def test_two_process_zero3_lora_run(train_workspace, tmp_path):
    root, base, clip = train_workspace
    out = tmp_path / "zero3"
    command = [
        sys.executable,
        "-m",
        "deepspeed.launcher.runner",
        "--num_gpus",
        "2",
        "--master_port",
        str(free_port()),
        str(REPO_ROOT / "llava" / "train" / "train_mem.py"),
        "--deepspeed",
        str(REPO_ROOT / "scripts" / "zero3.json"),
        "--model_name_or_path",
        str(base),
        "--vision_tower",
        str(clip),
        "--data_path",
        str(root / "data.json"),
        "--image_folder",
        str(root / "images"),
        "--image_aspect_ratio",
        "pad",
        "--mm_projector_type",
        "mlp2x_gelu",
        "--lora_enable",
        "True",
        "--lora_r",
        "4",
        "--token_reduction",
        "atp",  # in-LLM: its threshold predictors are gathered by ZeRO-3 on every rank at every step
        "--reduction_atp_layers",
        "1",
        "--reduction_atp_target_tokens",
        "144",
        "--atp_lr",
        "1e-2",
        "--output_dir",
        str(out),
        "--per_device_train_batch_size",
        "2",
        "--max_steps",
        "4",
        "--save_strategy",
        "steps",
        "--save_steps",
        "2",
        "--learning_rate",
        "1e-3",
        "--logging_steps",
        "1",
        "--report_to",
        "none",
        "--dataloader_num_workers",
        "0",
    ]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-5000:]
    state = json.loads((out / "checkpoint-4" / "trainer_state.json").read_text())
    assert state["global_step"] == 4
    assert (out / "checkpoint-2" / "non_lora_trainables.bin").is_file()
    extras = torch.load(out / "non_lora_trainables.bin")
    assert extras["base_model.model.model.mm_projector.0.weight"].shape == (64, 32)  # gathered, not a shard
    head = "base_model.model.model.atp_modules.predictors.1.head_bias"
    assert extras[head].shape == (2,) and not torch.equal(extras[head], torch.full((2,), -4.0))  # trained
    _, model, _, _ = load_pretrained_model(str(out), str(base), device="cpu")
    assert model.config.mm_token_reduction["method"] == "atp"
    torch.testing.assert_close(
        model.get_model().mm_projector[0].weight, extras["base_model.model.model.mm_projector.0.weight"]
    )
    torch.testing.assert_close(model.get_model().atp_modules.predictor(1).head_bias, extras[head])


def dry_run(env: dict[str, str], script: str = "finetune_lora.sh") -> str:
    """What ``script`` would launch (``DRY_RUN=1``): its batch line and command, on stderr."""
    env = {**os.environ, "PYTHON": sys.executable, "DRY_RUN": "1", "CUDA_VISIBLE_DEVICES": "", **env}
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "v1_5" / script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stderr


@pytest.mark.parametrize(
    ("script", "method", "lora", "base", "output"),
    [
        ("finetune_lora.sh", "none", True, "lmsys/vicuna-7b-v1.5", "llava-v1.5-7b-lora"),
        (
            "finetune_lora_prumerge.sh",
            "prumerge",
            True,
            "lmsys/vicuna-7b-v1.5",
            "llava-v1.5-7b-lora-prumerge",
        ),
        ("finetune_atp.sh", "atp", False, "liuhaotian/llava-v1.5-7b", "llava-v1.5-7b-atp-88"),
        ("finetune_lora_atp.sh", "atp", True, "liuhaotian/llava-v1.5-7b", "llava-v1.5-7b-lora-atp-88"),
    ],
)
def test_wrapper_scripts_launch_their_recipe_and_the_flags_parse(script, method, lora, base, output):
    """Each wrapper's command, parsed by the training's own argument classes."""
    import shlex

    import transformers

    from llava.model.token_reduction.args import ReductionArguments
    from llava.train.arguments import DataArguments, ModelArguments

    out = dry_run({"ATP_TARGET": "88", "NUM_GPUS": "8"}, script)
    command = shlex.split(out.strip().splitlines()[-1])
    argv = command[command.index(str(REPO_ROOT / "llava" / "train" / "train_mem.py")) + 1 :]
    parser = transformers.HfArgumentParser((ModelArguments, DataArguments, ReductionArguments))
    model_args, _, reduction_args, rest = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True
    )
    reduction = reduction_args.to_config()
    flags = dict(zip(rest[::2], rest[1::2]))
    assert reduction.method == method and model_args.model_name_or_path == base
    assert flags["--output_dir"] == f"./checkpoints/{output}"
    assert flags["--learning_rate"] == ("2e-4" if lora else "2e-5") and flags.get("--lora_enable") == (
        "True" if lora else None
    )
    assert "8 process(es) x 16 per device x 1 accumulation = global batch 128" in out
    if method == "atp":  # from the released model and its own projector, toward 88 tokens
        assert model_args.pretrain_mm_mlp_adapter is None
        assert reduction.atp_target_tokens == 88 and reduction.atp_layers == (4, 14, 24)
        assert (flags["--atp_lr"], flags["--atp_budget_weight"], flags["--atp_target_weight"]) == (
            "1e-4",
            "0.1",
            "1.0",
        )
    else:
        assert model_args.pretrain_mm_mlp_adapter == "./checkpoints/llava-v1.5-7b-pretrain/mm_projector.bin"


def test_the_world_size_is_the_sum_of_the_hostfile_slots(tmp_path):
    hostfile = tmp_path / "hostfile"
    hostfile.write_text("gpu-node-1 slots=8\n# gpu-node-3 slots=8\ngpu-node-2 slots=8  # second node\n")
    out = dry_run({"HOSTFILE": str(hostfile), "PER_DEVICE_BATCH": "4"})
    assert "16 process(es) x 4 per device x 2 accumulation = global batch 128" in out
    assert f"--hostfile {hostfile}" in out


def test_one_node_at_a_time_without_ssh(tmp_path):
    out = dry_run(
        {"NNODES": "4", "NODE_RANK": "3", "MASTER_ADDR": "10.1.2.3", "NUM_GPUS": "8", "PER_DEVICE_BATCH": "4"}
    )
    assert "32 process(es) x 4 per device x 1 accumulation = global batch 128" in out
    assert "--no_ssh --node_rank 3 --master_addr 10.1.2.3" in out
    env = {
        **os.environ,
        "PYTHON": sys.executable,
        "DRY_RUN": "1",
        "NNODES": "2",
        "NODE_RANK": "2",
        "MASTER_ADDR": "x",
    }
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "scripts" / "v1_5" / "finetune_lora.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "NODE_RANK=2 is outside 0..1" in result.stderr


def test_two_nodes_launched_separately_train_together(pretrained, tmp_path):
    """Two "nodes" on 127.0.0.1, each started on its own as SLURM would (NODE_RANK 0 and 1, no ssh)."""
    out = tmp_path / "two-nodes"
    env = {
        **os.environ,
        **pretrained,
        "PYTHON": sys.executable,
        "CUDA_VISIBLE_DEVICES": "",
        "REPORT_TO": "",
        "OUTPUT_DIR": str(out),
        "NNODES": "2",
        "NUM_GPUS": "1",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }
    script = ["bash", str(REPO_ROOT / "scripts" / "v1_5" / "finetune_lora.sh"), "--max_steps", "2"]
    nodes = [
        subprocess.Popen(
            script,
            env={**env, "NODE_RANK": str(rank)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for rank in (0, 1)
    ]
    results = [node.communicate(timeout=900) for node in nodes]
    for node, (_, stderr) in zip(nodes, results):
        assert node.returncode == 0, stderr[-5000:]
        assert "2 process(es) x 16 per device x 4 accumulation = global batch 128" in stderr
    assert checkpoint_kind(out) == "lora" and (out / "non_lora_trainables.bin").is_file()
