"""The lmms-eval model plugin (``llava.lmms_eval_plugin``) on a tiny checkpoint, without lmms-eval.

Requests are built here as lmms-eval builds them (objects with ``.args``) over a fake ``task_dict``;
nothing is downloaded.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image

from llava.lmms_eval_plugin import LlavaPruMerge, cut_at_stop, manifest, parse_dtype, user_turn

TASK, SPLIT = "task", "test"
COLOURS = [(220, 30, 30), (30, 60, 220), (30, 170, 60)]
QUESTIONS = ["What is in the image?", "What is this?", "Describe it in detail."]
HAS_LMMS_EVAL = importlib.util.find_spec("lmms_eval") is not None


@dataclass
class Request:
    """Stands in for ``lmms_eval.api.instance.Instance``: the plugin only reads ``.args``."""

    request_type: str
    arguments: tuple
    idx: int = 0
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def args(self) -> tuple:
        return self.arguments


def doc_to_visual(doc: dict[str, Any]) -> list[Any]:
    return [doc["image"]]


def no_visual(doc: dict[str, Any]) -> list[Any]:
    return []


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from llava.tiny import build_tiny_llava

    out_dir = tmp_path_factory.mktemp("tiny_prumerge")
    build_tiny_llava(out_dir, reduction="prumerge")
    return out_dir


@pytest.fixture(scope="module")
def docs() -> list[dict[str, Any]]:
    return [
        {"image": Image.new("RGB", (60 + 20 * i, 48), c), "question": q}
        for i, (c, q) in enumerate(zip(COLOURS, QUESTIONS))
    ]


def make_model(checkpoint: Path, docs: list[dict[str, Any]], **model_args: Any) -> LlavaPruMerge:
    model = LlavaPruMerge(pretrained=str(checkpoint), device="cpu", **model_args)
    model.task_dict = {TASK: {SPLIT: docs}}  # lmms-eval sets it after building the model
    return model


@pytest.fixture(scope="module")
def plugin(checkpoint: Path, docs: list[dict[str, Any]]) -> LlavaPruMerge:
    return make_model(checkpoint, docs, batch_size="1")


def gen_requests(
    docs: list[dict[str, Any]], gen_kwargs: dict[str, Any], visual=doc_to_visual
) -> list[Request]:
    return [
        Request("generate_until", (d["question"], dict(gen_kwargs), visual, i, TASK, SPLIT), idx=i)
        for i, d in enumerate(docs)
    ]


def ll_requests(docs: list[dict[str, Any]], answers: list[str]) -> list[Request]:
    return [
        Request("loglikelihood", (d["question"], a, doc_to_visual, i, TASK, SPLIT), idx=i)
        for i, (d, a) in enumerate(zip(docs, answers))
    ]


GREEDY = {"max_new_tokens": 4, "temperature": 0, "do_sample": False}


def test_base_attributes(plugin: LlavaPruMerge) -> None:
    assert (plugin.rank, plugin.world_size) == (0, 1)
    assert plugin.reduction.method == "prumerge"
    assert plugin.model.dtype == torch.float32  # dtype auto on the CPU
    with pytest.raises(NotImplementedError, match="multi-round"):
        plugin.generate_until_multi_round([])


def test_generate_batch_size_two_equals_one(plugin: LlavaPruMerge, checkpoint: Path, docs) -> None:
    one = plugin.generate_until(gen_requests(docs, GREEDY))
    two = make_model(checkpoint, docs, batch_size=2).generate_until(gen_requests(docs, GREEDY))
    assert one == two
    assert len(one) == len(docs) and all(isinstance(t, str) for t in one)


def test_generate_text_only_and_mixed_kwargs(plugin: LlavaPruMerge, docs) -> None:
    requests = gen_requests(docs[:1], GREEDY, visual=no_visual) + gen_requests(
        docs[1:2], {"max_new_tokens": 1}
    )
    texts = plugin.generate_until(requests)
    assert len(texts) == 2 and all(isinstance(t, str) for t in texts)


def test_generate_honours_until(plugin: LlavaPruMerge, docs) -> None:
    full = plugin.generate_until(gen_requests(docs[:1], GREEDY))[0]
    if len(full) < 2:
        pytest.skip("the tiny model's answer is too short to cut")
    stop = full[1:3]
    cut = plugin.generate_until(gen_requests(docs[:1], {**GREEDY, "until": [stop, "\u2603"]}))[0]
    assert cut == full[: full.find(stop)]
    assert plugin.generate_until(gen_requests(docs[:1], {**GREEDY, "until": stop}))[0] == cut


def test_cut_at_stop_and_user_turn() -> None:
    assert cut_at_stop("a. b\n\nc", ["\n\n", "."]) == "a"
    assert cut_at_stop("abc", []) == "abc"
    assert user_turn("Q?", 0) == "Q?"
    assert user_turn("Q?", 2) == "<image>\n<image>\nQ?"
    assert user_turn("<image>\nQ?", 1) == "<image>\nQ?"
    assert user_turn("<image>\nQ?", 0) == "Q?"
    assert user_turn(" Q? ", 0) == " Q? "


def favour_word_starts(model: LlavaPruMerge) -> None:
    """Zeroes the output rows of every token that does not start a word (``▁...``), EOS included.

    The random tiny model otherwise answers in byte pieces that no string tokenizes back to, while a
    real LLaVA answers ``▁The ...``: the continuation is tokenized as the word-initial text it is.
    """
    tok = model.tokenizer
    head = model.model.get_output_embeddings().weight
    assert head.data_ptr() != model.model.get_input_embeddings().weight.data_ptr()
    with torch.no_grad():
        for index, piece in enumerate(tok.convert_ids_to_tokens(list(range(head.shape[0])))):
            if not piece.startswith("\u2581") or piece == "\u2581":
                head[index] = 0


def test_loglikelihood_greedy_and_not(checkpoint: Path, docs) -> None:
    plugin = make_model(checkpoint, docs, batch_size=2)
    favour_word_starts(plugin)
    greedy = plugin.generate_until(gen_requests(docs, GREEDY))
    tok = plugin.tokenizer
    encoded = [tok(t, add_special_tokens=False)["input_ids"] for t in greedy]
    assert all(len(ids) == 4 for ids in encoded), (greedy, encoded)  # 4 new tokens, re-encoded alike
    scored = plugin.loglikelihood(ll_requests(docs, greedy))
    assert all(ok for _, ok in scored), (greedy, scored)
    prefix = plugin.loglikelihood(ll_requests(docs, [t.rsplit(" ", 1)[0] for t in greedy]))
    assert all(ok for _, ok in prefix)
    scored_other = plugin.loglikelihood(ll_requests(docs, [f"{t} cat" for t in greedy]))
    scored_other += plugin.loglikelihood(ll_requests(docs, ["It is a flag"] * len(docs)))
    for logprob, _ in scored + prefix + scored_other:
        assert isinstance(logprob, float) and math.isfinite(logprob) and logprob < 0
    assert not any(ok for _, ok in scored_other), scored_other
    for (whole, _), (part, _) in zip(scored, prefix):
        assert part > whole  # a prefix is more likely than the whole answer


def test_loglikelihood_batched_matches(plugin: LlavaPruMerge, checkpoint: Path, docs) -> None:
    answers = ["a cat", "It is a flag next to a cup of coffee.", "12345"]
    one = plugin.loglikelihood(ll_requests(docs, answers))
    two = make_model(checkpoint, docs, batch_size="3").loglikelihood(ll_requests(docs, answers))
    for (a, ga), (b, gb) in zip(one, two):
        assert a == pytest.approx(b, abs=1e-4) and ga == gb


def test_string_model_args(checkpoint: Path, docs) -> None:
    model = make_model(
        checkpoint,
        docs,
        token_reduction="prumerge_plus",
        reduction_budget="None",
        model_base="None",
        dtype="float32",
        batch_size="2",
        max_new_tokens="7",
        max_batch_size=None,
    )
    assert model.reduction.method == "prumerge_plus" and model.reduction.budget is None
    assert model.model.config.mm_token_reduction["method"] == "prumerge_plus"
    assert (model.batch_size, model.max_new_tokens) == (2, 7)
    budget = make_model(checkpoint, docs, reduction_budget="32")
    assert (budget.reduction.method, budget.reduction.budget) == ("prumerge", 32)
    with pytest.raises(ValueError, match="reduction_budget"):
        make_model(checkpoint, docs, reduction_budget="many")
    with pytest.raises(TypeError, match="unknown model_args"):
        make_model(checkpoint, docs, temperature="0")


@pytest.mark.parametrize(
    ("value", "device", "expected"),
    [
        (None, "cpu", torch.float32),
        ("None", "cpu", torch.float32),
        ("auto", "cpu", torch.float32),
        ("auto", "cuda", torch.float16),
        ("bf16", "cpu", torch.bfloat16),
        ("fp16", "cpu", torch.float16),
        ("torch.bfloat16", "cpu", torch.bfloat16),
        ("Float32", "cpu", torch.float32),
        (torch.float64, "cpu", torch.float64),
    ],
)
def test_parse_dtype(value, device, expected) -> None:
    assert parse_dtype(value, device) is expected


def test_parse_dtype_errors(monkeypatch) -> None:
    with pytest.raises(ValueError, match=r"dtype must be one of auto, float16, bfloat16, float32; got 'fp8'"):
        parse_dtype("fp8", "cpu")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    with pytest.raises(ValueError, match=r"dtype=bfloat16 was asked for.*use dtype=float16"):
        parse_dtype("bf16", "cuda")


def test_bfloat16_model_arg_generates(checkpoint: Path, docs) -> None:
    model = make_model(checkpoint, docs, dtype="bfloat16")
    assert {p.dtype for p in model.model.parameters()} == {torch.bfloat16}
    answers = model.generate_until(gen_requests(docs[:2], GREEDY))
    assert len(answers) == 2 and all(isinstance(text, str) for text in answers)


@pytest.mark.skipif(HAS_LMMS_EVAL, reason="lmms-eval is installed")
def test_manifest_without_lmms_eval() -> None:
    with pytest.raises(ImportError, match="lmms-eval"):
        manifest()


@pytest.mark.skipif(not HAS_LMMS_EVAL, reason="lmms-eval is not installed")
def test_manifest_with_lmms_eval() -> None:  # pragma: no cover - needs lmms-eval
    entry = manifest()
    assert entry.model_id == "llava_prumerge"
    assert entry.simple_class_path == "llava.lmms_eval_plugin.LlavaPruMerge"


def test_entry_point_metadata() -> None:
    points = [
        e for e in importlib.metadata.entry_points(group="lmms_eval.models") if e.name == "llava_prumerge"
    ]
    if not points:
        pytest.skip("the lmms_eval.models entry point is not in the installed package's metadata yet")
    assert points[0].value == "llava.lmms_eval_plugin:manifest"
    assert points[0].load() is manifest
