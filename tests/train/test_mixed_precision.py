"""Mixed precision on CPU: ``--fp16``/``--bf16`` train float32 master weights, and configs record saved dtypes.

Each LoRA run goes through the steps of ``llava.train.train.main`` (``setup``, ``train``, ``save``) so
that the trainable weights can be copied before training and the compute dtype observed during it.
"""

import json

import pytest
import torch
from safetensors.torch import load_file
from tests_support import train_args as common_args

from llava.train.train import main, save, setup, train

PRECISIONS = {
    "fp32": ([], torch.float32),
    "fp16": (["--fp16", "True"], torch.float16),
    "bf16": (["--bf16", "True"], torch.bfloat16),
}
LORA = [
    "--lora_enable",
    "True",
    "--lora_r",
    "8",
    "--lora_alpha",
    "16",
    "--version",
    "v1",
    "--learning_rate",
    "2e-4",
    "--mm_projector_lr",
    "2e-5",
]  # the published learning rates


def trainable(model) -> dict[str, torch.nn.Parameter]:
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def config_dtype(folder) -> str:
    return json.loads((folder / "config.json").read_text())["dtype"]


def dtypes(state: dict[str, torch.Tensor]) -> set[str]:
    return {str(t.dtype).removeprefix("torch.") for t in state.values()}


@pytest.fixture(scope="module", params=sorted(PRECISIONS))
def lora_run(request, train_workspace, tmp_path_factory):
    """6 LoRA steps in one precision: (precision, run, weights before, dtypes of the projector's output, out)."""
    root, base, clip = train_workspace
    out = tmp_path_factory.mktemp(f"lora_{request.param}")
    flags, _ = PRECISIONS[request.param]
    run = setup(common_args(root, base, clip, out, *LORA, "--max_steps", "6", *flags))
    before = {name: p.detach().clone() for name, p in trainable(run.model).items()}
    seen: set[torch.dtype] = set()
    projector = run.model.base_model.model.get_model().mm_projector
    projector[0].register_forward_hook(lambda module, args, output: seen.add(output.dtype))
    train(run)
    save(run)
    return request.param, run, before, seen, out


def test_every_trainable_tensor_trains_and_stays_finite(lora_run):
    precision, run, before, _, _ = lora_run
    after = trainable(run.model)
    assert len(before) == 2 * 14 + 4  # lora_A and lora_B on 7 Linears x 2 layers, projector weights + biases
    changed = {name: (after[name].detach() != before[name]).float().mean().item() for name in before}
    slow = {name: round(fraction, 3) for name, fraction in changed.items() if fraction <= 0.9}
    assert not slow, f"{precision}: tensors with <= 90 % of their elements changed: {slow}"
    assert all(torch.isfinite(p).all() for p in after.values()), precision


def test_master_weights_are_float32_and_the_compute_is_16_bit(lora_run):
    precision, run, _, seen, _ = lora_run
    compute = PRECISIONS[precision][1]
    assert {p.dtype for p in trainable(run.model).values()} == {torch.float32}
    # frozen weights (CLIP tower, LLM base under LoRA) are stored in the compute dtype
    assert {p.dtype for p in run.model.parameters() if not p.requires_grad} == {compute}
    assert seen == {compute}  # float32 projector weights, autocast output in the compute dtype
    assert (run.trainer.accelerator.scaler is not None) == (precision == "fp16")  # loss scaling for fp16


def test_the_lora_config_records_the_dtype_written(lora_run):
    _, _, _, _, out = lora_run
    extras = torch.load(out / "non_lora_trainables.bin")
    adapter = load_file(out / "adapter_model.safetensors")
    assert dtypes(extras) == dtypes(adapter) == {config_dtype(out)} == {"float32"}


@pytest.mark.parametrize("kind", ["full", "projector"])
def test_full_and_projector_checkpoints_record_the_dtype_written(train_workspace, tmp_path, kind):
    root, base, clip = train_workspace
    extra = ["--tune_mm_mlp_adapter", "True", "--version", "plain"] if kind == "projector" else []
    main(
        common_args(
            root,
            base,
            clip,
            tmp_path,
            "--bf16",
            "True",
            "--max_steps",
            "2",
            "--learning_rate",
            "1e-4",
            *extra,
        )
    )
    state = (
        torch.load(tmp_path / "mm_projector.bin")
        if kind == "projector"
        else load_file(tmp_path / "model.safetensors")
    )
    assert dtypes(state) == {config_dtype(tmp_path)} == {"float32"}


def test_16_bit_weights_are_recorded_as_such(tiny_llava_dir, tmp_path):
    """DeepSpeed hands over its 16-bit weights for saving: the config must then say bfloat16."""
    from llava.model.loader import load_pretrained_model
    from llava.train.llava_trainer import save_lora_extras, save_projector

    _, model, _, _ = load_pretrained_model(str(tiny_llava_dir), device="cpu", dtype=torch.bfloat16)
    model.requires_grad_(False)
    model.get_model().mm_projector.requires_grad_(True)
    config = model.config
    config.dtype = torch.float32  # what a run's config says: it comes from the float32 base LLM's
    save_projector(model, str(tmp_path / "projector"), config, should_save=True)
    config.dtype = torch.float32
    save_lora_extras(model, str(tmp_path / "lora"), config, should_save=True)
    for folder, file in (("projector", "mm_projector.bin"), ("lora", "non_lora_trainables.bin")):
        state = torch.load(tmp_path / folder / file)
        assert dtypes(state) == {config_dtype(tmp_path / folder)} == {"bfloat16"}


def test_a_non_finite_loss_stops_the_run_before_any_update(train_workspace, tmp_path):
    root, base, clip = train_workspace
    run = setup(common_args(root, base, clip, tmp_path, *LORA, "--max_steps", "3", "--bf16", "True"))
    run.model.base_model.model.get_model().mm_projector[0].weight.data[0, 0] = float("nan")
    before = {name: p.detach().clone() for name, p in trainable(run.model).items() if "lora_" in name}
    with pytest.raises(FloatingPointError, match="Non-finite training loss .* at step 1"):
        train(run)
    after = trainable(run.model)
    assert all(torch.equal(after[name], value) for name, value in before.items())  # no optimizer step
    assert not any(tmp_path.iterdir())  # nothing written


def test_non_finite_weights_are_not_written(tiny_llava_dir, tmp_path):
    from llava.model.loader import load_pretrained_model
    from llava.train.llava_trainer import save_projector

    _, model, _, _ = load_pretrained_model(str(tiny_llava_dir), device="cpu")
    model.get_model().mm_projector[0].weight.data[1, 2] = float("inf")
    with pytest.raises(FloatingPointError, match="mm_projector.0.weight"):
        save_projector(model, str(tmp_path / "projector"), model.config, should_save=True)
    assert not (tmp_path / "projector").exists()
