"""The shared ``--dtype`` option (``llava.dtypes``) and its effect on the real models the front ends load."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

from llava.dtypes import DTYPE_CHOICES, DTYPE_HELP, add_dtype_arg, resolve_dtype


@pytest.fixture
def no_bf16_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """A CUDA GPU without bfloat16, as far as ``torch.cuda.is_bf16_supported`` tells."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)


@pytest.fixture
def loaded_models(monkeypatch: pytest.MonkeyPatch) -> list:
    """The models ``load_pretrained_model`` returns during a test: the real loader runs, each model is kept."""
    from llava.model import loader

    real, models = loader.load_pretrained_model, []

    def keep(*args, **kwargs):
        result = real(*args, **kwargs)
        models.append(result[1])
        return result

    monkeypatch.setattr(loader, "load_pretrained_model", keep)
    return models


def parameter_dtypes(model) -> set[torch.dtype]:
    """The dtypes of every parameter of ``model`` (vision tower and projector included)."""
    return {p.dtype for p in model.parameters()}


# ---------------------------------------------------------------------------------------------
# resolve_dtype
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_auto_on_cpu_is_float32(device):
    assert resolve_dtype("auto", device) is torch.float32


@pytest.mark.parametrize("device", [torch.device("cuda"), "cuda", "cuda:1", torch.device("cuda", 0)])
def test_auto_on_cuda_is_float16(device):
    assert resolve_dtype("auto", device) is torch.float16


def test_none_name_is_auto_and_none_device_follows_cuda_availability(monkeypatch):
    assert resolve_dtype(None, "cpu") is torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_dtype("auto", None) is torch.float32
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_dtype("auto", None) is torch.float16


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("float16", torch.float16),
        ("bfloat16", torch.bfloat16),
        ("float32", torch.float32),
        ("BFloat16", torch.bfloat16),
    ],
)
def test_explicit_names_on_cpu(name, expected):
    """float16 on CPU is allowed (slow), and so is bfloat16."""
    assert resolve_dtype(name, "cpu") is expected


@pytest.mark.parametrize("name", ["fp8", "float64", "", "half precision"])
def test_unknown_name_lists_the_choices(name):
    with pytest.raises(ValueError, match=r"--dtype must be one of auto, float16, bfloat16, float32") as err:
        resolve_dtype(name, "cpu")
    assert repr(name) in str(err.value)


def test_bf16_on_a_cuda_gpu_without_it_is_a_clear_error(no_bf16_gpu):
    with pytest.raises(ValueError) as err:
        resolve_dtype("bfloat16", torch.device("cuda"))
    message = str(err.value)
    assert "--dtype bfloat16" in message and "does not support bfloat16" in message
    assert "use --dtype float16" in message


def test_bf16_error_names_the_setting_as_the_front_end_spells_it(no_bf16_gpu):
    with pytest.raises(ValueError, match=r"dtype=bfloat16 was asked for.*use dtype=float16"):
        resolve_dtype("bfloat16", "cuda:0", option="dtype")


def test_bf16_check_only_applies_to_cuda_and_bfloat16(no_bf16_gpu, monkeypatch):
    assert resolve_dtype("bfloat16", "cpu") is torch.bfloat16
    assert resolve_dtype("float16", "cuda") is torch.float16
    assert resolve_dtype("auto", "cuda") is torch.float16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert resolve_dtype("bfloat16", "cuda") is torch.bfloat16


def test_bad_device_name_is_a_value_error():
    with pytest.raises(ValueError, match="'gpu0' is not a device name"):
        resolve_dtype("auto", "gpu0")


# ---------------------------------------------------------------------------------------------
# The option
# ---------------------------------------------------------------------------------------------


def test_add_dtype_arg_default_choices_and_bad_value(capsys):
    parser = argparse.ArgumentParser()
    add_dtype_arg(parser)
    assert parser.parse_args([]).dtype == "auto"
    assert parser.parse_args(["--dtype", "bfloat16"]).dtype == "bfloat16"
    with pytest.raises(SystemExit) as exit_info:
        parser.parse_args(["--dtype", "bf16"])
    assert exit_info.value.code == 2
    assert "invalid choice: 'bf16'" in capsys.readouterr().err
    assert DTYPE_CHOICES == ("auto", "float16", "bfloat16", "float32")


def front_end_parsers() -> dict[str, argparse.ArgumentParser]:
    """The parser of every command-line front end."""
    from llava import visualize
    from llava.eval import model_vqa_loader, model_vqa_mmbench, model_vqa_science
    from llava.serve import cli, gradio_demo

    return {
        "cli": cli.build_parser(),
        "model_vqa_loader": model_vqa_loader.parser(),
        "model_vqa_science": model_vqa_science.parser(),
        "model_vqa_mmbench": model_vqa_mmbench.parser(),
        "visualize": visualize.build_parser(),
        "gradio_demo": gradio_demo.build_parser(),
    }


@pytest.mark.parametrize("name", list(front_end_parsers()))
def test_every_front_end_has_the_same_dtype_option(name):
    parser = front_end_parsers()[name]
    (action,) = [a for a in parser._actions if "--dtype" in a.option_strings]
    assert (action.option_strings, action.default, tuple(action.choices), action.help) == (
        ["--dtype"],
        "auto",
        DTYPE_CHOICES,
        DTYPE_HELP,
    )


# ---------------------------------------------------------------------------------------------
# End to end: the model really is bfloat16
# ---------------------------------------------------------------------------------------------


def test_cli_query_in_bfloat16(tiny_prumerge_dir: Path, shapes_image: Path, loaded_models, capsys):
    from llava.serve import cli

    argv = [
        "--model-path",
        str(tiny_prumerge_dir),
        "--image-file",
        str(shapes_image),
        "--query",
        "What is this?",
    ]
    code = cli.main(
        [*argv, "--temperature", "0", "--max-new-tokens", "3", "--device", "cpu", "--dtype", "bfloat16"]
    )
    out = capsys.readouterr().out.splitlines()
    assert code == 0
    assert len(out) == 2 and out[0].startswith("[llava] image: 3 x 336 x 336 -> ")  # then the answer line
    (model,) = loaded_models
    assert model.dtype == torch.bfloat16
    assert parameter_dtypes(model) == {torch.bfloat16}
    assert model.get_vision_tower().dtype == torch.bfloat16


def test_cli_session_default_is_float32_on_cpu(tiny_prumerge_dir: Path, shapes_image: Path):
    from llava.serve import cli

    argv = ["--model-path", str(tiny_prumerge_dir), "--image-file", str(shapes_image), "--device", "cpu"]
    session = cli.open_session(cli.build_parser().parse_args(argv))
    assert parameter_dtypes(session.model) == {torch.float32}
    assert session.pixels.dtype == torch.float32


def loader_argv(checkpoint: Path, questions: Path, answers: Path) -> list[str]:
    return [
        "--model-path",
        str(checkpoint),
        "--question-file",
        str(questions),
        "--answers-file",
        str(answers),
    ]


def test_eval_runner_in_bfloat16(
    tiny_prumerge_dir: Path, shapes_image: Path, loaded_models, tmp_path, capsys
):
    from llava.eval import model_vqa_loader

    rows = [{"question_id": i, "image": shapes_image.name, "text": "What is this?"} for i in range(3)]
    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(json.dumps(row) + "\n" for row in rows))
    answers = tmp_path / "answers.jsonl"
    argv = loader_argv(tiny_prumerge_dir, questions, answers)
    argv += ["--image-folder", str(shapes_image.parent), "--max_new_tokens", "3", "--batch-size", "2"]
    assert model_vqa_loader.main([*argv, "--device", "cpu", "--dtype", "bfloat16"]) == 0
    lines = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [line["question_id"] for line in lines] == [0, 1, 2]
    assert all(line["num_visual_tokens"] > 0 for line in lines)
    (model,) = loaded_models
    assert parameter_dtypes(model) == {torch.bfloat16}
    assert "dtype bfloat16" in capsys.readouterr().err


def test_eval_runner_refuses_bf16_on_a_gpu_without_it_before_loading(
    tiny_prumerge_dir: Path, loaded_models, no_bf16_gpu, monkeypatch, tmp_path, capsys
):
    from llava.eval import model_vqa_loader

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    questions = tmp_path / "questions.jsonl"
    questions.write_text(json.dumps({"question_id": 0, "text": "hi"}) + "\n")
    answers = tmp_path / "answers.jsonl"
    argv = loader_argv(tiny_prumerge_dir, questions, answers)
    assert model_vqa_loader.main([*argv, "--device", "cuda", "--dtype", "bfloat16"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --dtype bfloat16 was asked for") and "--dtype float16" in err
    assert loaded_models == [] and not answers.exists()
