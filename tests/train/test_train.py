"""Training on CPU: LoRA with PruMerge+ learns, pretraining saves only the projector, checkpoints load and resume."""

import json
import shutil

import pytest
import torch
from PIL import Image
from tests_support import REPO_ROOT
from tests_support import train_args as common_args

from llava.train.train import main

COLOURS = {"red": (220, 30, 30), "blue": (30, 60, 220), "green": (30, 170, 60)}


def losses(out) -> dict[int, float]:
    state = (
        json.loads((out / "trainer_state.json").read_text())
        if (out / "trainer_state.json").is_file()
        else None
    )
    history = state["log_history"] if state else []
    return {h["step"]: h["loss"] for h in history if "loss" in h}


def test_lora_with_prumerge_plus_lowers_the_loss_and_loads(train_workspace, tmp_path):
    root, base, clip = train_workspace
    out = tmp_path / "lora"
    run = main(
        common_args(
            root,
            base,
            clip,
            out,
            "--lora_enable",
            "True",
            "--lora_r",
            "8",
            "--lora_alpha",
            "16",
            "--learning_rate",
            "1e-2",
            "--mm_projector_lr",
            "5e-3",
            "--max_steps",
            "30",
            "--version",
            "v1",
            "--token_reduction",
            "prumerge_plus",
            "--group_by_modality_length",
            "True",
            "--save_strategy",
            "steps",
            "--save_steps",
            "15",
        )
    )
    history = json.loads((out / "checkpoint-30" / "trainer_state.json").read_text())["log_history"]
    loss = [h["loss"] for h in history if "loss" in h]
    assert sum(loss[-5:]) / 5 < sum(loss[:5]) / 5 - 0.4, loss  # a random 2-layer LLM learns slowly under LoRA
    for folder in (out, out / "checkpoint-15"):
        assert (folder / "adapter_config.json").is_file() and (folder / "non_lora_trainables.bin").is_file()
        config = json.loads((folder / "config.json").read_text())
        assert config["mm_token_reduction"]["method"] == "prumerge_plus"

    projector = run.model.base_model.model.get_model().mm_projector
    projector_params = {id(p) for p in projector.parameters()}
    for group in run.trainer.optimizer.param_groups:
        is_projector = {id(p) in projector_params for p in group["params"]}
        assert len(is_projector) == 1  # a group is all projector or all LoRA
        assert group["initial_lr"] == (5e-3 if is_projector == {True} else 1e-2)

    from llava.model.loader import load_pretrained_model

    merged = tmp_path / "merged"  # save -> merge -> load -> generate
    from importlib.util import module_from_spec, spec_from_file_location

    spec = spec_from_file_location("merge", REPO_ROOT / "scripts" / "merge_lora_weights.py")
    merge = module_from_spec(spec)
    spec.loader.exec_module(merge)
    merge.main(["--model-path", str(out), "--model-base", str(base), "--save-model-path", str(merged)])
    tokenizer, model, processor, _ = load_pretrained_model(str(merged), device="cpu")
    assert model.get_vision_tower().reduction.method == "prumerge_plus"
    from llava.mm_utils import process_images, tokenizer_image_token

    prompt = "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the user's questions. USER: <image>\nWhat colour is the square? ASSISTANT:"
    ids = tokenizer_image_token(prompt, tokenizer, return_tensors="pt")[None]
    pixels = process_images([Image.open(root / "images" / "0.png")], processor)
    answer = model.generate(ids, images=pixels, max_new_tokens=4, do_sample=False)
    assert answer.shape[0] == 1 and answer.shape[1] >= 1
    trained = run.model.eval()  # the adapter as trained, unmerged: the merged model computes the same
    with torch.no_grad():
        expected = trained(input_ids=ids, images=pixels).logits
        torch.testing.assert_close(model(input_ids=ids, images=pixels).logits, expected, rtol=1e-4, atol=1e-4)


def test_pretraining_saves_only_the_projector(train_workspace, tmp_path):
    root, base, clip = train_workspace
    out = tmp_path / "pretrain"
    main(
        common_args(
            root,
            base,
            clip,
            out,
            "--tune_mm_mlp_adapter",
            "True",
            "--version",
            "plain",
            "--learning_rate",
            "1e-3",
            "--max_steps",
            "4",
            "--save_strategy",
            "steps",
            "--save_steps",
            "2",
        )
    )
    assert sorted(p.name for p in out.iterdir() if p.is_file()) == sorted(
        ["config.json", "mm_projector.bin", "tokenizer.json", "tokenizer_config.json"]
    )
    assert sorted(p.name for p in (out / "checkpoint-2").iterdir()) == [
        "config.json",
        "mm_projector.bin",
        "trainer_state.json",
    ]
    state = torch.load(out / "mm_projector.bin")
    assert sorted(state) == [
        "model.mm_projector.0.bias",
        "model.mm_projector.0.weight",
        "model.mm_projector.2.bias",
        "model.mm_projector.2.weight",
    ]


def test_the_seed_fixes_the_new_weights(train_workspace, tmp_path):
    root, base, clip = train_workspace
    args = [
        "--tune_mm_mlp_adapter",
        "True",
        "--version",
        "plain",
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "1",
    ]
    states = []
    for name in ("a", "b"):
        torch.rand(1000)  # a different global random state before each run
        main(common_args(root, base, clip, tmp_path / name, *args))
        states.append(torch.load(tmp_path / name / "mm_projector.bin"))
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_lora_resume_reproduces_the_uninterrupted_losses(train_workspace, tmp_path):
    root, base, clip = train_workspace
    args = [
        "--lora_enable",
        "True",
        "--lora_r",
        "8",
        "--learning_rate",
        "1e-3",
        "--max_steps",
        "6",
        "--save_strategy",
        "steps",
        "--save_steps",
        "3",
        "--token_reduction",
        "prumerge",
    ]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    main(common_args(root, base, clip, full, *args))
    # An interrupted run: only its checkpoint-3 survives. Resume it and compare the next losses.
    shutil.copytree(full / "checkpoint-3", resumed / "checkpoint-3")
    assert (resumed / "checkpoint-3" / "non_lora_trainables.bin").is_file()
    main(
        common_args(
            root, base, clip, resumed, *args, "--resume_from_checkpoint", str(resumed / "checkpoint-3")
        )
    )
    expected = losses(full / "checkpoint-6")
    got = losses(resumed / "checkpoint-6")
    assert [round(got[s], 4) for s in (4, 5, 6)] == [round(expected[s], 4) for s in (4, 5, 6)]

    # Killed while writing checkpoint-6 (no trainer state yet): "True" resumes from checkpoint-3.
    killed = tmp_path / "killed"
    shutil.copytree(full / "checkpoint-3", killed / "checkpoint-3")
    shutil.copytree(full / "checkpoint-6", killed / "checkpoint-6")
    (killed / "checkpoint-6" / "trainer_state.json").unlink()
    main(common_args(root, base, clip, killed, *args, "--resume_from_checkpoint", "True"))
    again = losses(killed / "checkpoint-6")
    assert [round(again[s], 4) for s in (4, 5, 6)] == [round(expected[s], 4) for s in (4, 5, 6)]

    # A LoRA checkpoint without its projector is refused, not resumed with a reset projector.
    (resumed / "checkpoint-3" / "non_lora_trainables.bin").unlink()
    with pytest.raises(FileNotFoundError, match="non_lora_trainables.bin"):
        main(
            common_args(
                root, base, clip, resumed, *args, "--resume_from_checkpoint", str(resumed / "checkpoint-3")
            )
        )


def test_lora_checkpoints_write_the_projector_before_the_trainer_state(
    train_workspace, tmp_path, monkeypatch
):
    """A run killed as the trainer state is written leaves the projector already on disk."""
    from transformers import TrainerState

    def killed(self, path):
        raise KeyboardInterrupt(path)

    monkeypatch.setattr(TrainerState, "save_to_json", killed)
    root, base, clip = train_workspace
    with pytest.raises(KeyboardInterrupt):
        main(
            common_args(
                root,
                base,
                clip,
                tmp_path,
                "--lora_enable",
                "True",
                "--lora_r",
                "4",
                "--max_steps",
                "2",
                "--save_strategy",
                "steps",
                "--save_steps",
                "2",
            )
        )
    assert (tmp_path / "checkpoint-2" / "non_lora_trainables.bin").is_file()


def test_truncated_samples_are_counted(train_workspace, tmp_path):
    root, base, clip = train_workspace
    run = main(
        common_args(
            root,
            base,
            clip,
            tmp_path / "short",
            "--max_steps",
            "2",
            "--lora_enable",
            "True",
            "--model_max_length",
            "64",
        )
    )
    assert run.trainer.num_truncated > 0  # 576 visual tokens do not fit in 64


def test_modality_grouped_order():
    from llava.train.llava_trainer import modality_grouped_indices

    lengths = [5, -3, 7, 2, -4, 9, 1, -8, 6, 3, -2, 4, 8]  # > 0: image samples, < 0: text only
    order = modality_grouped_indices(lengths, batch=2, world=2, generator=torch.Generator().manual_seed(0))
    assert sorted(order) == list(range(len(lengths)))
    steps = [order[i : i + 4] for i in range(0, len(order), 4)]
    mixed = [s for s in steps if len({lengths[i] > 0 for i in s}) > 1]
    assert len(mixed) <= 1 and (not mixed or mixed[0] == steps[-1] or steps.index(mixed[0]) >= len(steps) - 2)


class CountingLengths(list):
    """A list of lengths that counts how often it is read from start to end."""

    passes = 0

    def __iter__(self):
        type(self).passes += 1
        return super().__iter__()


def test_modality_grouped_order_reads_the_lengths_a_fixed_number_of_times():
    """Building the order is linear: the dataset's lengths are walked a few times, not once per megabatch."""
    import hashlib
    import random

    from llava.train.llava_trainer import modality_grouped_indices

    rng = random.Random(3)
    lengths = CountingLengths(rng.choice([-1, 1]) * rng.randint(5, 900) for _ in range(5000))
    CountingLengths.passes = 0
    order = modality_grouped_indices(lengths, batch=4, world=8, generator=torch.Generator().manual_seed(0))
    assert CountingLengths.passes <= 2  # 157 megabatches: the quadratic version walked it once for each
    # the same order as before the change (recorded from the quadratic version)
    assert hashlib.sha256(str(order).encode()).hexdigest()[:16] == "9989dac0b0379642"
