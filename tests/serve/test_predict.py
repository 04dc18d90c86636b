"""Tests of the Cog predictor (``predict.py`` at the repo root) on a tiny random checkpoint, without cog."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from PIL import Image
from tests_support import REPO_ROOT

from llava.model import available_reducers

QUESTION = "What is in the image?"
VICUNA_PROMPT = (
    "A chat between a curious user and an artificial intelligence assistant. The assistant gives helpful, "
    "detailed, and polite answers to the user's questions. USER: <image>\n{question} ASSISTANT:"
)


def import_predict() -> ModuleType:
    """Imports ``predict.py`` from its file path (the repo root is not a package)."""
    spec = importlib.util.spec_from_file_location("llava_cog_predict", REPO_ROOT / "predict.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def ckpt(tiny_prumerge_dir: Path) -> Path:
    return tiny_prumerge_dir


@pytest.fixture(scope="module")
def image_file(shapes_image: Path) -> Path:
    return shapes_image


@pytest.fixture(scope="module")
def predictor(ckpt: Path):
    """``Predictor()`` after ``setup()`` with ``LLAVA_MODEL_PATH`` pointing at the tiny checkpoint."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAVA_MODEL_PATH", str(ckpt))
        mp.delenv("LLAVA_MODEL_BASE", raising=False)
        module = import_predict()
        instance = module.Predictor()
        instance.setup()
    return instance


def greedy_answer(ckpt: Path, image_file: Path, reduction: str, max_new_tokens: int) -> str:
    """The model's own greedy answer to ``QUESTION``, loaded independently with ``reduction``."""
    from llava.mm_utils import process_images, tokenizer_image_token
    from llava.model.loader import load_pretrained_model

    tokenizer, model, processor, _ = load_pretrained_model(str(ckpt), device="cpu", token_reduction=reduction)
    pixels = process_images([Image.open(image_file)], processor, "pad")
    ids = tokenizer_image_token(VICUNA_PROMPT.format(question=QUESTION), tokenizer, return_tensors="pt")[None]
    with torch.no_grad():
        out = model.generate(
            ids,
            images=pixels,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        )
    return tokenizer.decode(out[0], skip_special_tokens=True).strip()


def test_import_needs_no_cog_and_lists_reducers() -> None:
    """Without cog the stand-ins are used; the choices are ``checkpoint`` plus every registered reducer."""
    module = import_predict()
    assert module.REDUCTION_CHOICES == ["checkpoint", *available_reducers()]
    if "cog" not in sys.modules:
        assert module.Input(description="x", default=3) == 3
        assert module.Path is Path


def test_setup_reads_env_and_keeps_checkpoint_reduction(predictor) -> None:
    """``setup()`` loads the checkpoint named by ``LLAVA_MODEL_PATH`` and remembers its reduction."""
    assert predictor.checkpoint_reduction.method == "prumerge"
    assert predictor.model.config.mm_token_reduction["method"] == "prumerge"


def test_predict_matches_greedy_answer(predictor, ckpt: Path, image_file: Path) -> None:
    """At temperature 0 the answer equals the model's own greedy answer under the chosen reducer."""
    answer = predictor.predict(
        image=image_file, prompt=QUESTION, temperature=0, max_tokens=4, token_reduction="prumerge_plus"
    )
    assert isinstance(answer, str)
    assert predictor.model.config.mm_token_reduction["method"] == "prumerge_plus"
    assert answer == greedy_answer(ckpt, image_file, "prumerge_plus", 4)


def test_checkpoint_choice_restores_checkpoint_reduction(predictor, ckpt: Path, image_file: Path) -> None:
    """``token_reduction="checkpoint"`` goes back to the checkpoint's PruMerge after another reducer."""
    predictor.predict(image=image_file, prompt=QUESTION, temperature=0, max_tokens=2, token_reduction="none")
    answer = predictor.predict(
        image=image_file, prompt=QUESTION, temperature=0, max_tokens=4, token_reduction="checkpoint"
    )
    assert predictor.model.config.mm_token_reduction["method"] == "prumerge"
    assert answer == greedy_answer(ckpt, image_file, "prumerge", 4)


def test_sampling_with_top_p_samples(predictor, image_file: Path) -> None:
    """Sampling (temperature > 0, top_p < 1) draws: the same seed repeats its answer, other seeds differ."""
    ask = {"image": image_file, "prompt": QUESTION, "temperature": 1.0, "top_p": 0.95, "max_tokens": 6}
    answers = []
    for seed in (0, 1, 2, 3, 0):
        torch.manual_seed(seed)
        answers.append(predictor.predict(**ask))
    assert answers[0] == answers[-1]  # reproducible under a seed
    assert len(set(answers[:4])) > 1  # a random tiny model's near-flat logits: greedy would repeat itself


def test_unknown_reduction_raises_listing_valid_ones(predictor, image_file: Path) -> None:
    """An unknown ``token_reduction`` raises ``ValueError`` naming the valid choices."""
    with pytest.raises(ValueError, match="not_a_reducer") as err:
        predictor.predict(image=image_file, prompt=QUESTION, token_reduction="not_a_reducer")
    for name in ("checkpoint", "prumerge", "prumerge_plus"):
        assert name in str(err.value)


@pytest.mark.parametrize(
    ("field", "value"), [("temperature", -1.0), ("top_p", 0.0), ("top_p", 1.5), ("max_tokens", 0)]
)
def test_bad_generation_options_raise(predictor, image_file: Path, field: str, value: float) -> None:
    """Out-of-range generation options raise ``ValueError`` before generating."""
    with pytest.raises(ValueError, match=field):
        predictor.predict(image=image_file, prompt=QUESTION, **{field: value})


def test_dtype_input_reloads_only_when_it_changes(ckpt: Path, image_file: Path) -> None:
    """``dtype="bfloat16"`` reloads the checkpoint in bfloat16 (the reducer choice still applies); the same
    dtype again keeps the loaded model; ``auto`` goes back to float32 on the CPU."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LLAVA_MODEL_PATH", str(ckpt))
        mp.delenv("LLAVA_MODEL_BASE", raising=False)
        instance = import_predict().Predictor()
        instance.setup()
    assert {p.dtype for p in instance.model.parameters()} == {torch.float32}
    ask = {"image": image_file, "prompt": QUESTION, "temperature": 0, "max_tokens": 2}
    answer = instance.predict(**ask, token_reduction="prumerge_plus", dtype="bfloat16")
    assert isinstance(answer, str)
    assert {p.dtype for p in instance.model.parameters()} == {torch.bfloat16}
    assert instance.model.config.mm_token_reduction["method"] == "prumerge_plus"
    assert instance.checkpoint_reduction.method == "prumerge"
    bf16_model = instance.model
    instance.predict(**ask, dtype="bfloat16")
    assert instance.model is bf16_model
    instance.predict(**ask, dtype="auto")
    assert {p.dtype for p in instance.model.parameters()} == {torch.float32}


def test_unknown_dtype_raises_before_any_reload(predictor, image_file: Path) -> None:
    model = predictor.model
    with pytest.raises(ValueError, match=r"dtype must be one of auto, float16, bfloat16, float32; got 'fp8'"):
        predictor.predict(image=image_file, prompt=QUESTION, dtype="fp8")
    predictor.predict(image=image_file, prompt=QUESTION, temperature=0, max_tokens=1, dtype="float32")
    assert predictor.model is model  # float32 is what auto loaded on the CPU: no reload


def test_cog_yaml_points_at_predictor() -> None:
    """``cog.yaml`` keeps its build section and names ``predict.py:Predictor``."""
    text = (REPO_ROOT / "cog.yaml").read_text()
    assert "build:" in text
    assert 'predict: "predict.py:Predictor"' in text
