"""Tests of ``python -m llava.serve.cli`` on a tiny random checkpoint (CPU, a few seconds each)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image
from tests_support import REPO_ROOT

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.args import reduction_from_args
from llava.prompting import generation_kwargs
from llava.serve import cli

TOKEN_LINE = re.compile(r"^\[llava\] image: 3 x 336 x 336 -> (\d+) visual tokens \((.+)\)$", re.MULTILINE)
VICUNA_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\n{question} ASSISTANT:"
)


@pytest.fixture(scope="module")
def ckpt(tiny_prumerge_dir: Path) -> Path:
    return tiny_prumerge_dir


@pytest.fixture(scope="module")
def image_file(shapes_image: Path) -> Path:
    return shapes_image


@pytest.fixture(scope="module")
def loaded(ckpt: Path, image_file: Path):
    """``(tokenizer, model, pixels)`` loaded independently of the CLI."""
    from llava.mm_utils import process_images
    from llava.model.loader import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(ckpt), device="cpu")
    pixels = process_images([Image.open(image_file)], processor, "pad")
    return tokenizer, model, pixels


def tower_count(model, pixels: torch.Tensor, reduction: dict) -> int:
    """Visual tokens the vision tower keeps for ``pixels`` under ``reduction``."""
    previous = model.config.mm_token_reduction
    model.set_token_reduction(reduction)
    try:
        with torch.no_grad():
            return int(model.get_vision_tower()(pixels).lengths[0])
    finally:
        model.set_token_reduction(previous)


def run_cli(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    """Runs ``python -m llava.serve.cli`` in a fresh interpreter."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-m", "llava.serve.cli", *args],
        input=stdin if stdin is not None else "",
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env=env,
        timeout=120,
    )


def base_args(ckpt: Path, image_file: Path, *extra: str) -> list[str]:
    return ["--model-path", str(ckpt), "--image-file", str(image_file), "--temperature", "0", *extra]


def greedy_answer(loaded, question: str, max_new_tokens: int) -> str:
    """The greedy answer through the model's own ``generate(images=...)`` with the literal vicuna prompt."""
    from llava.mm_utils import tokenizer_image_token

    tokenizer, model, pixels = loaded
    ids = tokenizer_image_token(VICUNA_PROMPT.format(question=question), tokenizer, return_tensors="pt")[None]
    out = model.generate(
        ids,
        images=pixels,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=max_new_tokens,
        do_sample=False,
    )
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def test_query_subprocess_reports_tower_count_and_answers(ckpt, image_file, loaded):
    _, model, pixels = loaded
    expected = tower_count(model, pixels, {"method": "prumerge", "variant": "reference"})
    question = "What is in the image?"
    result = run_cli(base_args(ckpt, image_file, "--query", question, "--max-new-tokens", "4"))
    assert result.returncode == 0, result.stderr
    match = TOKEN_LINE.search(result.stdout)
    assert match is not None, result.stdout
    assert int(match.group(1)) == expected
    assert 1 <= expected < 576
    assert match.group(2) == "prumerge/reference"
    lines = result.stdout.splitlines()
    assert lines[0] == match.group(0)
    assert len(lines) == 2
    assert lines[1] == greedy_answer(loaded, question, 4)
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("flags", "reduction", "described"),
    [
        (
            ["--token-reduction", "prumerge_plus", "--reduction-variant", "reference"],
            {"method": "prumerge_plus", "variant": "reference"},
            "prumerge_plus/reference/adaptive",
        ),
        (
            ["--token-reduction", "prumerge_plus", "--reduction-form", "fixed"],
            {"method": "prumerge_plus", "form": "fixed"},
            "prumerge_plus/reference/fixed",
        ),
        (["--reduction-variant", "paper"], {"method": "prumerge", "variant": "paper"}, "prumerge/paper"),
        (["--reduction-budget", "40"], {"method": "prumerge", "budget": 40}, "prumerge/reference/budget=40"),
        (["--token-reduction", "none"], {"method": "none"}, "none"),
    ],
)
def test_reduction_flags_change_the_count(ckpt, image_file, loaded, capsys, flags, reduction, described):
    _, model, pixels = loaded
    expected = tower_count(model, pixels, reduction)
    assert expected != tower_count(model, pixels, {"method": "prumerge"}) or reduction["method"] == "prumerge"
    code = cli.main(base_args(ckpt, image_file, "--query", "What is this?", "--max-new-tokens", "1", *flags))
    out = capsys.readouterr().out
    assert code == 0
    match = TOKEN_LINE.search(out)
    assert match is not None, out
    assert (int(match.group(1)), match.group(2)) == (expected, described)
    if reduction["method"] == "none":
        assert expected == 576


def test_interactive_subprocess_stops_on_empty_line(ckpt, image_file):
    result = run_cli(base_args(ckpt, image_file, "--max-new-tokens", "3"), stdin="What is this?\n\n")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "USER: What is this?"
    assert TOKEN_LINE.fullmatch(lines[1])
    assert lines[2].startswith("ASSISTANT: ")
    assert lines[3:] == ["USER: ", "exit..."]


def test_interactive_multi_turn_in_process(ckpt, image_file, loaded, capsys, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("What is this?\nDescribe it in detail.\nexit\n"))
    code = cli.main(base_args(ckpt, image_file, "--max-new-tokens", "4"))
    out = capsys.readouterr().out
    assert code == 0
    assert len(TOKEN_LINE.findall(out)) == 1  # reported once, with the first answer
    assert out.count("ASSISTANT: ") == 2
    assert out.count("USER: ") == 3
    assert out.rstrip().endswith("exit...")
    first_answer = out.split("ASSISTANT: ")[1].split("\n")[0].strip()
    assert first_answer == greedy_answer(loaded, "What is this?", 4)


def test_session_keeps_history_and_image_only_in_first_turn(ckpt, image_file, capsys):
    args = cli.build_parser().parse_args(base_args(ckpt, image_file, "--max-new-tokens", "3"))
    session = cli.open_session(args)
    assert session.conv.system.startswith("A chat between a curious user")  # vicuna_v1 for this folder name
    first = session.ask("What is this?")
    second = session.ask("Describe it in detail.")
    user, assistant = session.conv.roles
    assert session.conv.messages == [
        [user, f"{DEFAULT_IMAGE_TOKEN}\nWhat is this?"],
        [assistant, first],
        [user, "Describe it in detail."],
        [assistant, second],
    ]
    assert first and second  # the tiny model's greedy answers here are not empty
    expected_prompt = (
        VICUNA_PROMPT.format(question="What is this?") + f" {first}</s>USER: Describe it in detail. "
    )
    assert session.conv.get_prompt() == expected_prompt + f"ASSISTANT: {second}</s>"
    assert len(TOKEN_LINE.findall(capsys.readouterr().out)) == 1


def test_conv_mode_default_and_override(ckpt, image_file, tmp_path):
    named = tmp_path / "llava-v1.5-tiny"
    named.symlink_to(ckpt, target_is_directory=True)
    session = cli.open_session(cli.build_parser().parse_args(base_args(named, image_file)))
    assert session.conv.system.startswith("A chat between a curious human")  # llava_v1 for "v1" names
    args = cli.build_parser().parse_args(base_args(named, image_file, "--conv-mode", "vicuna_v1"))
    assert cli.open_session(args).conv.system.startswith("A chat between a curious user")


def test_generation_kwargs_greedy_and_sampling(loaded):
    tokenizer = loaded[0]
    greedy = generation_kwargs(tokenizer, 7, 0.0)
    assert greedy["do_sample"] is False and "temperature" not in greedy
    assert (greedy["max_new_tokens"], greedy["eos_token_id"]) == (7, tokenizer.eos_token_id)
    sampled = generation_kwargs(tokenizer, 7, 0.7)
    assert (sampled["do_sample"], sampled["temperature"]) == (True, 0.7)


def test_reduction_from_args_merges_flags():
    args = cli.build_parser().parse_args(["--model-path", "m", "--image-file", "i"])
    recorded = ReductionConfig(method="spatial", grid=(5, 8), budget=40)
    assert reduction_from_args(recorded, args) is None
    args.token_reduction = "none"
    assert reduction_from_args(recorded, args) == ReductionConfig(method="none")
    args.token_reduction, args.reduction_budget = "prumerge_plus", 0
    assert reduction_from_args(recorded, args) == ReductionConfig(method="prumerge_plus")
    args.token_reduction, args.reduction_budget, args.reduction_form = None, 20, "fixed"
    with pytest.raises(ValueError, match="the 'spatial' reducer has none"):  # the fixed form is PruMerge+'s
        reduction_from_args(recorded, args)
    args.token_reduction = "prumerge_plus"  # a new method drops the recorded grid
    assert reduction_from_args(recorded, args) == ReductionConfig(
        method="prumerge_plus", budget=20, form="fixed"
    )
    args.token_reduction, args.reduction_form = "prumerge", None  # and the fixed form
    assert reduction_from_args(ReductionConfig("prumerge_plus", form="fixed"), args).form == "adaptive"


def test_missing_image_fails_in_a_subprocess(ckpt, tmp_path):
    missing = tmp_path / "no_such_image.png"
    result = run_cli(base_args(ckpt, missing, "--query", "hi"))
    assert result.returncode == 2
    assert str(missing) in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr
    assert result.stdout == ""


def test_unknown_reducer_lists_valid_methods(ckpt, image_file, capsys):
    code = cli.main(base_args(ckpt, image_file, "--query", "hi", "--token-reduction", "prumerge_pls"))
    err = capsys.readouterr().err
    assert code == 2
    assert "'prumerge_pls'" in err
    from llava.model import available_reducers

    assert ", ".join(available_reducers()) in err and "prumerge_plus" in err


def test_lora_folder_without_base_asks_for_model_base(ckpt, image_file, tmp_path, capsys):
    lora = tmp_path / "lora"
    lora.mkdir()
    (lora / "config.json").write_text((ckpt / "config.json").read_text())
    (lora / "adapter_config.json").write_text(json.dumps({"peft_type": "LORA"}))
    code = cli.main(base_args(lora, image_file, "--query", "hi"))
    err = capsys.readouterr().err
    assert code == 2
    assert "--model-base" in err and str(lora) in err
    assert err.startswith("error: ")


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--temperature", "-1"], "--temperature must be >= 0"),
        (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
        (["--token-reduction", "none", "--reduction-budget", "5"], "keeps every token"),
    ],
)
def test_bad_values_exit_2(ckpt, image_file, capsys, flags, message):
    code = cli.main(base_args(ckpt, image_file, "--query", "hi", *flags))
    assert code == 2
    assert message in capsys.readouterr().err


def test_context_overflow_is_a_clear_error(ckpt, image_file, capsys, monkeypatch):
    args = cli.build_parser().parse_args(base_args(ckpt, image_file, "--max-new-tokens", "2"))
    session = cli.open_session(args)
    session.context_len = 50  # fewer than the visual tokens alone
    with pytest.raises(cli.ConversationTooLong, match="context of 50 tokens"):
        session.ask("What is this?")
    assert session.conv.messages == []  # the turn that did not fit is not kept


def test_reduction_flags_apply_together():
    import argparse

    flags = argparse.Namespace(
        token_reduction="spatial", reduction_variant=None, reduction_form=None, reduction_budget=36
    )
    assert reduction_from_args(ReductionConfig("prumerge"), flags) == ReductionConfig("spatial", budget=36)


def test_dtype_float16_on_cpu_is_allowed(ckpt, image_file):
    args = cli.build_parser().parse_args(
        base_args(ckpt, image_file, "--max-new-tokens", "3", "--device", "cpu", "--dtype", "float16")
    )
    session = cli.open_session(args)
    assert session.model.dtype == torch.float16 and session.pixels.dtype == torch.float16
    assert isinstance(session.ask("What is this?"), str)


def test_bf16_on_a_gpu_without_it_exits_2_before_loading(ckpt, image_file, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    code = cli.main(base_args(ckpt, image_file, "--query", "hi", "--device", "cuda", "--dtype", "bfloat16"))
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("error: --dtype bfloat16 was asked for") and "use --dtype float16" in err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--token-reduction", "spatial", "--reduction-budget", "700"], "at most 576"),
        (["--token-reduction", "prumerge", "--reduction-budget", "577"], "at most 576"),
        (
            ["--token-reduction", "spatial", "--reduction-budget", "500"],
            "does not fit the 24 x 24 patch grid",
        ),
        (["--token-reduction", "prumerge", "--reduction-form", "fixed"], "the 'prumerge' reducer has none"),
    ],
)
def test_impossible_reduction_options_are_one_error_line(ckpt, image_file, capsys, flags, message):
    code = cli.main(base_args(ckpt, image_file, "--query", "hi", *flags))
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert code == 2 and last.startswith("error: ") and message in last and "Traceback" not in err
