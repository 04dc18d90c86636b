"""Training ATP-LLaVA on the CPU: the budget loss moves N̄ to its target while the language model learns;
the ATP modules are saved in every checkpoint, restored on resume and used at inference."""

import json
import shutil

import pytest
import torch
from tests_support import prompt_ids
from tests_support import train_args as common_args

from llava.train.train import main

LAYERS = (1, 3, 5)  # insertion layers of the 8-layer base
TOKENS = 64  # 8x8 patches of the 112-pixel tower
TARGET = TOKENS // 4
ATP = [
    "--token_reduction",
    "atp",
    "--reduction_atp_layers",
    ",".join(map(str, LAYERS)),
    "--reduction_atp_target_tokens",
    str(TARGET),
    "--version",
    "v1",
]


@pytest.fixture(scope="module")
def atp_workspace(tiny_tokenizer_dir, tmp_path_factory):
    """Coloured squares, an 8-layer width-64 base LLM and a 4-layer tower at 112 pixels (64 tokens)."""
    from llava.tiny import save_tiny_train_workspace

    root = tmp_path_factory.mktemp("atp_train")
    base, clip = save_tiny_train_workspace(root, tiny_tokenizer_dir, num_layers=8, image_size=112)
    return root, base, clip


@pytest.fixture(scope="module")
def atp_run(atp_workspace, tmp_path_factory):
    """A full finetuning with ATP: 24 steps, ATP modules at 4e-3."""
    root, base, clip = atp_workspace
    out = tmp_path_factory.mktemp("atp_full") / "out"
    args = ["--learning_rate", "2e-3", "--atp_lr", "4e-3", "--max_steps", "24", *ATP]
    run = main(common_args(root, base, clip, out, *args))
    return run, out


def predictor_state(model) -> dict[str, torch.Tensor]:
    modules = model.get_model().atp_modules
    return {k: v.detach().float().clone() for k, v in modules.state_dict().items()}


def test_budget_loss_moves_the_average_to_the_target_while_the_lm_loss_falls(atp_run, atp_workspace):
    run, out = atp_run
    logs = [h for h in run.trainer.state.log_history if "loss" in h]
    assert {"lm_loss", "atp_loss", "atp_mean_tokens", "atp_kept_layer1", "atp_kept_layer5"} <= set(logs[0])
    nbar = [h["atp_mean_tokens"] for h in logs]
    lm = [h["lm_loss"] for h in logs]
    assert nbar[0] >= 0.9 * TOKENS, nbar  # untrained modules keep almost every token
    last = sum(nbar[-5:]) / 5
    assert abs(last - TARGET) <= 0.25 * TARGET, nbar
    assert sum(lm[-5:]) / 5 < sum(lm[:5]) / 5 - 1.0, lm  # the language model still learns
    for h in logs:  # the logged total is the LM loss plus the weighted ATP terms
        assert h["loss"] == pytest.approx(h["lm_loss"] + h["atp_loss"], abs=2e-3)
    kept = [(h["atp_kept_layer1"], h["atp_kept_layer3"], h["atp_kept_layer5"]) for h in logs]
    assert all(a >= b >= c for a, b, c in kept)  # no token revived by a later module

    # the checkpoint holds the trained modules; loaded, ATP predicts its thresholds and prunes
    config = json.loads((out / "config.json").read_text())
    assert config["mm_atp_layers"] == list(LAYERS)
    assert config["mm_token_reduction"]["atp_target_tokens"] == TARGET
    from llava.model.loader import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(out), device="cpu")
    trained = predictor_state(run.model)
    for key, value in predictor_state(model).items():
        torch.testing.assert_close(value, trained[key])
    root = atp_workspace[0]
    from PIL import Image

    from llava.mm_utils import process_images

    images = [Image.open(root / "images" / f"{i}.png") for i in range(3)]
    pixels = process_images(images, processor)
    ids = prompt_ids(tokenizer, "What colour is the square?")[None].expand(3, -1)
    with torch.no_grad():
        model(input_ids=ids, images=pixels)
    schedule = model.visual_token_schedule().float()
    assert schedule.shape == (3, 8) and bool((schedule[:, 0] == TOKENS).all())
    assert float(schedule.mean()) < 0.5 * TOKENS  # pruned hard, as trained
    thresholds = model.pruning_thresholds()  # predicted per image by the trained modules
    assert sorted(thresholds) == list(LAYERS) and all(len(pairs) == 3 for pairs in thresholds.values())
    assert all(0 < theta < 1 for pairs in thresholds.values() for pair in pairs for theta in pair)


def test_lora_atp_checkpoints_hold_the_modules_and_resume(atp_run, atp_workspace, tmp_path):
    root, _, clip = atp_workspace
    _, full_out = atp_run
    # start from the trained ATP checkpoint, as upstream's 2023 uploads name their type ("llava")
    llava_base = tmp_path / "llava_base"
    shutil.copytree(full_out, llava_base)
    config = json.loads((llava_base / "config.json").read_text())
    (llava_base / "config.json").write_text(json.dumps({**config, "model_type": "llava"}))
    args = ["--lora_enable", "True", "--lora_r", "4", "--learning_rate", "1e-3", "--atp_lr", "1e-3"]
    args += ["--max_steps", "4", "--save_strategy", "steps", "--save_steps", "2", *ATP]
    first, resumed = tmp_path / "first", tmp_path / "resumed"
    run = main(common_args(root, llava_base, clip, first, *args))
    from llava.model.loader import load_pretrained_model

    start = predictor_state(load_pretrained_model(str(full_out), device="cpu").model)
    for folder in (first / "checkpoint-2", first):
        extras = torch.load(folder / "non_lora_trainables.bin")
        atp_keys = sorted(k for k in extras if ".atp_modules." in k)
        assert len(atp_keys) == 4 * len(LAYERS), sorted(extras)
    final = predictor_state(run.model.base_model.model)
    assert any(not torch.equal(final[k], start[k]) for k in start)  # the modules trained on

    # an interrupted run resumes with its ATP modules, not fresh ones: the same final weights
    shutil.copytree(first / "checkpoint-2", resumed / "checkpoint-2")
    again = main(
        common_args(
            root, llava_base, clip, resumed, *args, "--resume_from_checkpoint", str(resumed / "checkpoint-2")
        )
    )
    for key, value in predictor_state(again.model.base_model.model).items():
        torch.testing.assert_close(value, final[key], atol=1e-6, rtol=1e-5)

    # loaded with --model-base, the adapter's checkpoint predicts with its own modules
    loaded = load_pretrained_model(str(first), str(llava_base), device="cpu").model
    for key, value in predictor_state(loaded).items():
        torch.testing.assert_close(value, final[key])
    assert loaded.token_reduction.method == "atp" and loaded.model.in_llm_method().modules is not None


def test_bad_atp_training_flags_fail_before_loading(atp_workspace, tmp_path):
    root, base, clip = atp_workspace
    no_target = [a for a in ATP if a not in ("--reduction_atp_target_tokens", str(TARGET))]
    with pytest.raises(ValueError, match="--reduction_atp_target_tokens"):
        main(common_args(root, base, clip, tmp_path / "a", "--max_steps", "1", *no_target))
    fixed = [*ATP, "--reduction_atp_redundancy_threshold", "0.5", "--reduction_atp_spatial_threshold", "0.9"]
    with pytest.raises(ValueError, match="training learns the thresholds"):
        main(common_args(root, base, clip, tmp_path / "b", "--max_steps", "1", *fixed))
    reentrant = [
        "--gradient_checkpointing",
        "True",
        "--gradient_checkpointing_kwargs",
        '{"use_reentrant": true}',
    ]
    with pytest.raises(ValueError, match="reentrant"):
        main(common_args(root, base, clip, tmp_path / "c", "--max_steps", "1", *ATP, *reentrant))


def test_logged_losses_add_up_with_gradient_accumulation(atp_workspace, tmp_path):
    root, base, clip = atp_workspace
    args = [
        "--max_steps",
        "2",
        "--gradient_accumulation_steps",
        "2",
        "--per_device_train_batch_size",
        "2",
        *ATP,
    ]
    run = main(common_args(root, base, clip, tmp_path / "ga", *args))
    logs = [h for h in run.trainer.state.log_history if "loss" in h]
    assert len(logs) == 2
    for h in logs:  # the LM loss is per optimizer step, as the Trainer's own loss (not per micro-batch)
        assert h["loss"] == pytest.approx(h["lm_loss"] + h["atp_loss"], abs=2e-3)
        assert h["lm_loss"] > 4.0  # an untrained model's loss, not half of it
