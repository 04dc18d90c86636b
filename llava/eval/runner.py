"""Shared machinery of the generation runners (``model_vqa_loader``, ``model_vqa_science``, ``model_vqa_mmbench``).

Each runner turns its question file into a list of :class:`Question` and hands it to
:func:`run_questions`, which

- keeps this process's shard (``--num-chunks`` / ``--chunk-idx``: shard k is the k-th contiguous slice of
  size ``ceil(N / chunks)``, as upstream's ``get_chunk``);
- resumes: the question ids already in ``--answers-file`` are skipped, a truncated last line left by a
  killed run is dropped and rewritten, answers for questions that are not in this shard stop the run
  before the file is touched;
- records what produced the answers (model path and base, dtype, every other option, and the token
  reduction the loaded model runs) in ``<answers file>.settings.json``, and refuses to resume a file
  made with other settings, naming each difference;
- checks that every image file still to be read exists, before the model is loaded;
- loads the model in ``--dtype`` (``auto``: float16 on CUDA, as upstream, float32 on CPU);
- generates in batches of ``--batch-size`` with left padding (greedy at ``--temperature 0``) and appends
  one JSON line per question, flushed after every batch; with an in-LLM reduction (FastV, ATP) each line
  also records the visual tokens of every decoder layer and their mean (:func:`layer_accounting`).

Question ids need not be unique (MME asks two questions per image under one id): the answers file is
matched against the questions as a multiset, occurrence by occurrence, in question order.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch

from llava.constants import DEFAULT_IMAGE_TOKEN
from llava.conversation import conv_templates
from llava.dtypes import add_dtype_arg, resolve_dtype
from llava.mm_utils import get_model_name_from_path, load_image, process_images
from llava.model.token_reduction import ReductionConfig
from llava.model.token_reduction.args import add_reduction_args, reduction_changes
from llava.prompting import batch_prompt_ids, build_prompt, check_generation_args, generation_kwargs

USAGE_ERROR = 2

T = TypeVar("T")


class ImageSource(Protocol):
    """Where a question's image comes from."""

    def exists(self) -> bool:
        """False when the image can be known missing without decoding it."""

    def load(self) -> Any:
        """The decoded image (a PIL image)."""

    def describe(self) -> str:
        """A short name for error messages (the file path)."""


@dataclass(frozen=True)
class ImageFile:
    """An image file on disk (the question's ``image`` joined to ``--image-folder``)."""

    path: Path

    def exists(self) -> bool:
        return self.path.is_file()

    def load(self) -> Any:
        return load_image(self.path)

    def describe(self) -> str:
        return str(self.path)


@dataclass
class Question:
    """One question to answer.

    Attributes:
        question_id: written to the answer line as is (any JSON value; need not be unique).
        text: the user's turn; starts with ``<image>\\n`` when ``image`` is set (no ``<image>`` otherwise).
        image: the image, or None for a text-only question (no visual tokens at all).
        head: answer-line fields written before ``text`` (``question_id``, ``prompt`` ...).
        tail: answer-line fields written after ``text`` (MMBench's ``options`` ...).
        where: the question's place in its file for error messages, e.g. ``q.jsonl line 12``.
    """

    question_id: Any
    text: str
    image: ImageSource | None
    head: dict[str, Any]
    tail: dict[str, Any] = field(default_factory=dict)
    where: str = ""


def id_key(question_id: Any) -> str:
    """A hashable, type-exact key for a question id (``1`` and ``"1"`` differ)."""
    return json.dumps(question_id, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Chunks
# ---------------------------------------------------------------------------------------------


def split_list(items: Sequence[T], num_chunks: int) -> list[Sequence[T]]:
    """Contiguous slices of size ``ceil(len(items) / num_chunks)`` (the last ones may be short or absent)."""
    size = max(1, math.ceil(len(items) / num_chunks))
    return [items[i : i + size] for i in range(0, len(items), size)]


def get_chunk(items: Sequence[T], num_chunks: int, chunk_idx: int) -> Sequence[T]:
    """Shard ``chunk_idx`` of ``num_chunks``: empty when there are fewer items than shards."""
    if num_chunks < 1 or not 0 <= chunk_idx < num_chunks:
        raise ValueError(f"--chunk-idx must be in [0, --num-chunks), got {chunk_idx} of {num_chunks}.")
    chunks = split_list(items, num_chunks)
    return chunks[chunk_idx] if chunk_idx < len(chunks) else items[:0]


# ---------------------------------------------------------------------------------------------
# Resuming from an existing answers file
# ---------------------------------------------------------------------------------------------


@dataclass
class AnswerFileState:
    """What an existing answers file already holds.

    Attributes:
        answered: how many answers each question id (see :func:`id_key`) already has.
        keep_bytes: length of the part made of complete lines; a truncated last line lies past it.
        needs_newline: the last complete record has no trailing newline.
    """

    answered: Counter
    keep_bytes: int = 0
    needs_newline: bool = False

    @property
    def count(self) -> int:
        return sum(self.answered.values())


def read_answer_file(path: Path, id_field: str = "question_id") -> AnswerFileState:
    """Reads the question ids of an answers file; a last line that is not JSON (a killed run) is dropped.

    ``id_field`` is the key that holds the question id (``question_id``; the video runner writes ``id``).

    Raises:
        ValueError: a line other than the last is not JSON, or a line has no ``id_field``.
    """
    if not path.exists():
        return AnswerFileState(Counter())
    data = path.read_bytes()
    pieces = data.split(b"\n")
    state, offset = AnswerFileState(Counter()), 0
    for lineno, raw in enumerate(pieces, start=1):
        last = lineno == len(pieces)
        if raw.strip():
            try:
                record = json.loads(raw)
            except ValueError as err:
                if last:  # a line cut short by a killed run: rewritten on resume
                    break
                raise ValueError(
                    f"{path} line {lineno} is not JSON ({err}); the answers file is corrupt. "
                    "Delete that line (or the file) and rerun."
                ) from err
            if not isinstance(record, dict) or id_field not in record:
                raise ValueError(f"{path} line {lineno} is not an answer line (no {id_field}).")
            state.answered[id_key(record[id_field])] += 1
            state.needs_newline = last
        offset += len(raw) + (0 if last else 1)
        state.keep_bytes = offset
    return state


def check_answers_belong(state: AnswerFileState, questions: Sequence[Question], path: Path) -> None:
    """Fails when the answers file holds ids that this shard of the question file does not ask."""
    expected = Counter(id_key(q.question_id) for q in questions)
    for key, count in state.answered.items():
        if expected[key] == 0:
            raise ValueError(
                f"The answers file {path} holds an answer for question_id {json.loads(key)!r}, which is not "
                "among the questions of this run: it is the answers file of another question set (or of "
                "another --chunk-idx). Pass another --answers-file or delete it; it was left unchanged."
            )
        if count > expected[key]:
            raise ValueError(
                f"The answers file {path} holds {count} answers for question_id {json.loads(key)!r} but "
                f"the questions of this run ask it {expected[key]} time(s); it was left unchanged."
            )


def pending_questions(questions: Sequence[Question], state: AnswerFileState) -> list[Question]:
    """The questions still to answer: for each id, its occurrences beyond those already answered."""
    left = Counter(state.answered)
    pending = []
    for question in questions:
        key = id_key(question.question_id)
        if left[key] > 0:
            left[key] -= 1
        else:
            pending.append(question)
    return pending


def open_for_append(path: Path, state: AnswerFileState):
    """Opens the answers file for appending, after cutting a truncated last line off."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and path.stat().st_size != state.keep_bytes:
        os.truncate(path, state.keep_bytes)
    handle = path.open("a", encoding="utf-8")
    if state.needs_newline:
        handle.write("\n")
    return handle


# Options that say where things are or how the work is split, not what the answers are.
NOT_SETTINGS = frozenset(
    {
        "answers_file",
        "question_file",
        "image_folder",
        "num_chunks",
        "chunk_idx",
        "batch_size",
        "device",
        "model_path",
        "model_base",
        "dtype",
    }
)
SETTINGS_SUFFIX = ".settings.json"


def settings_path(answers: Path) -> Path:
    """``<answers file>.settings.json``: what produced the answers (beside each shard's file)."""
    return answers.with_name(answers.name + SETTINGS_SUFFIX)


def model_source(name: str | None) -> str | None:
    """A local checkpoint as its absolute path (two ``checkpoint-500`` folders differ); a Hub id as given."""
    if name is None:
        return None
    local = Path(name).expanduser()
    return str(local.resolve()) if local.exists() else name


def requested_settings(
    args: argparse.Namespace, device: str, not_settings: frozenset[str] = NOT_SETTINGS
) -> dict[str, Any]:
    """Everything that decides the answers and is known before loading: model, base, dtype, options.

    Every command-line option but ``not_settings`` counts (reduction flags, generation settings, prompt
    mode, ...), so a new runner option is recorded without a change here. (Batched answers equal batch-1
    answers, so the batch size is not a setting.)
    """
    options = {k: v for k, v in sorted(vars(args).items()) if k not in not_settings}
    dtype = str(resolve_dtype(args.dtype, device)).removeprefix("torch.")
    return {
        "model_path": model_source(args.model_path),
        "model_base": model_source(args.model_base),
        "dtype": dtype,
        "options": options,
    }


def read_settings(path: Path) -> dict[str, Any] | None:
    file = settings_path(path)
    if not file.is_file():
        return None
    try:
        return json.loads(file.read_text())
    except ValueError as err:
        raise ValueError(
            f"{file} is not JSON ({err}); delete it to resume without the settings check."
        ) from err


def settings_difference(recorded: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``name: recorded -> current`` for every setting that differs (options compared one by one)."""
    flat_old = {**{k: v for k, v in recorded.items() if k != "options"}, **recorded.get("options", {})}
    flat_new = {**{k: v for k, v in current.items() if k != "options"}, **current.get("options", {})}
    keys = sorted(set(flat_old) | set(flat_new))
    return [
        f"{k}: {flat_old.get(k)!r} -> {flat_new.get(k)!r}" for k in keys if flat_old.get(k) != flat_new.get(k)
    ]


def check_same_settings(path: Path, state: AnswerFileState, recorded: dict | None, current: dict) -> None:
    """Refuses to add answers made with other settings to an answers file (nothing is changed)."""
    if not state.count:
        return
    if recorded is None:
        print(
            f"warning: {path} records no settings (written by an older version); resuming without the "
            "settings check.",
            file=sys.stderr,
        )
        return
    differs = settings_difference(
        {k: _normalised(k, recorded.get(k)) for k in current},
        {k: _normalised(k, v) for k, v in current.items()},
    )
    if differs:
        raise ValueError(
            f"{path} holds {state.count} answer(s) made with other settings ({'; '.join(differs)}). Resuming "
            "would mix the two: pass another --answers-file (the eval scripts name runs after their "
            "settings), or delete the file to start again. It was left unchanged."
        )


def _normalised(key: str, value: Any) -> Any:
    """A recorded reduction with every option filled in, so that options added since it was written (at
    their defaults) are no difference; other settings as they are."""
    if key == "reduction" and isinstance(value, dict):
        try:
            return ReductionConfig.from_value(value).to_dict()
        except ValueError:
            return value
    return value


def write_settings(path: Path, settings: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = settings_path(path).with_suffix(".tmp")
    tmp.write_text(json.dumps(settings, indent=2, default=str) + "\n")
    os.replace(tmp, settings_path(path))


@dataclass
class ShardPlan:
    """This process's shard of the questions, what its answers file holds, and what is left to answer.

    Attributes:
        path: the answers file.
        shard: the shard's questions (see :func:`get_chunk`).
        state: what the answers file already holds.
        recorded: the settings recorded beside it (None: none recorded).
        settings: the settings of this run (``reduction`` is added once the model is loaded).
        pending: the shard's questions without an answer yet, in question order.
    """

    path: Path
    shard: list[Question]
    state: AnswerFileState
    recorded: dict[str, Any] | None
    settings: dict[str, Any]
    pending: list[Question]


def plan_shard(
    args: argparse.Namespace,
    questions: Sequence[Question],
    device: str,
    id_field: str = "question_id",
    not_settings: frozenset[str] = NOT_SETTINGS,
) -> ShardPlan:
    """Takes this shard (``--num-chunks`` / ``--chunk-idx``) and checks ``--answers-file`` against it.

    Raises:
        ValueError: the answers file holds answers of other questions, or made with other settings.
    """
    shard = list(get_chunk(questions, args.num_chunks, args.chunk_idx))
    path = Path(args.answers_file).expanduser()
    state = read_answer_file(path, id_field)
    check_answers_belong(state, shard, path)
    recorded, settings = read_settings(path), requested_settings(args, device, not_settings)
    check_same_settings(path, state, recorded, settings)
    return ShardPlan(path, shard, state, recorded, settings, pending_questions(shard, state))


def record_settings(plan: ShardPlan, **resolved: Any) -> None:
    """Adds what the loaded model runs (``reduction=...`` and the like) to the settings, checks them against
    the recorded ones once more, and writes them beside the answers file."""
    plan.settings.update(resolved)
    if plan.recorded is not None:
        check_same_settings(plan.path, plan.state, plan.recorded, plan.settings)
    write_settings(plan.path, plan.settings)


def check_images_exist(questions: Iterable[Question]) -> None:
    """Fails on the first question whose image file is missing (before any model is loaded)."""
    for question in questions:
        if question.image is not None and not question.image.exists():
            hint = " Check --image-folder." if isinstance(question.image, ImageFile) else ""
            raise FileNotFoundError(
                f"Image not found: {question.image.describe()} (question_id {question.question_id!r}, "
                f"{question.where}).{hint}"
            )


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


def build_parser(prog: str, description: str, max_new_tokens: int) -> argparse.ArgumentParser:
    """The options every image runner shares (upstream's spellings; ``--max-new-tokens`` etc. also accepted)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    add_model_args(parser)
    parser.add_argument("--question-file", required=True)
    parser.add_argument("--answers-file", required=True, help="JSON lines; resumed when it exists")
    parser.add_argument("--conv-mode", default="vicuna_v1", choices=sorted(conv_templates))
    add_run_args(parser, max_new_tokens)
    return parser


def add_model_args(parser: argparse.ArgumentParser) -> None:
    """``--model-path`` and ``--model-base`` (also spelt with underscores, as upstream Video-LLaVA)."""
    parser.add_argument("--model-path", "--model_path", dest="model_path", required=True, help="checkpoint")
    parser.add_argument(
        "--model-base",
        "--model_base",
        dest="model_base",
        default=None,
        help="base LLM, for LoRA and projector-only checkpoints",
    )


def add_run_args(parser: argparse.ArgumentParser, max_new_tokens: int) -> None:
    """Sharding, generation, batch, device, dtype and token-reduction options (every runner's)."""
    parser.add_argument(
        "--num-chunks", "--num_chunks", dest="num_chunks", type=int, default=1, help="shards (one per GPU)"
    )
    parser.add_argument(
        "--chunk-idx", "--chunk_idx", dest="chunk_idx", type=int, default=0, help="this process's shard"
    )
    parser.add_argument("--temperature", type=float, default=0.0, help="0 = greedy decoding")
    parser.add_argument("--top_p", "--top-p", dest="top_p", type=float, default=None)
    parser.add_argument("--num_beams", "--num-beams", dest="num_beams", type=int, default=1)
    parser.add_argument(
        "--max_new_tokens", "--max-new-tokens", dest="max_new_tokens", type=int, default=max_new_tokens
    )
    parser.add_argument(
        "--batch-size", type=int, default=1, help="questions per forward (left padding; greedy answers match)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    add_dtype_arg(parser)
    add_reduction_args(parser)


def check_args(args: argparse.Namespace) -> str:
    """Fails on option values that are wrong whatever the checkpoint; returns the device to use.

    ``--dtype`` is checked against that device too (bfloat16 on a GPU without it fails here).
    """
    if args.batch_size < 1:
        raise ValueError(f"--batch-size must be at least 1, got {args.batch_size}.")
    if args.num_beams < 1:
        raise ValueError(f"--num_beams must be at least 1, got {args.num_beams}.")
    get_chunk([], args.num_chunks, args.chunk_idx)  # validates the shard options
    return check_generation_args(args)


def run_main(
    argv: list[str] | None,
    parser: argparse.ArgumentParser,
    load_questions: Callable[[argparse.Namespace], list[Question]],
    check: Callable[[argparse.Namespace], str] | None = None,
    run: Callable[[argparse.Namespace, list[Question], str], Any] | None = None,
) -> int:
    """Parses ``argv``, checks the arguments (``check``, default :func:`check_args`: returns the device),
    reads the questions and runs them (``run``, default :func:`run_questions`); returns 0, or 2 after
    printing ``error: ...``."""
    args = parser.parse_args(argv)
    try:
        device = (check or check_args)(args)
        (run or run_questions)(args, load_questions(args), device)
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return USAGE_ERROR
    return 0


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    """A model ready to answer: tokenizer, model, image processor and the name written as ``model_id``."""

    tokenizer: Any
    model: Any
    image_processor: Any
    model_name: str


def load_model(args: argparse.Namespace, device: str) -> Loaded:
    """Loads ``--model-path`` (+ ``--model-base``) in ``--dtype`` and applies the ``--token-reduction`` flags."""
    from llava.model.loader import load_pretrained_model

    model_name = get_model_name_from_path(args.model_path)
    dtype = resolve_dtype(args.dtype, device)
    tokenizer, model, processor, _ = load_pretrained_model(
        args.model_path,
        args.model_base,
        model_name,
        device=device,
        dtype=dtype,
        reduction_changes=reduction_changes(args),
    )
    reduction = model.token_reduction
    dtype_name = str(dtype).removeprefix("torch.")
    print(
        f"[llava] {model_name}: token reduction {reduction.describe()}, dtype {dtype_name}",
        file=sys.stderr,
        flush=True,
    )
    return Loaded(tokenizer, model, processor, model_name)


@torch.no_grad()
def generate_batch(
    loaded: Loaded, prompts: list[str], pixels: torch.Tensor, kwargs: dict[str, Any], videos: bool = False
) -> tuple[list[str], list[int], list[bool]]:
    """Answers a batch of prompts.

    Args:
        prompts: B prompt strings; each ``<image>`` takes the next image of ``pixels``.
        pixels: ``[I, 3, H, W]`` images in placeholder order (``I = 0`` for text-only batches), or with
            ``videos`` ``[V, 3, T, H, W]`` videos, T ``<image>`` placeholders each (Video-LLaVA's prompt).
        kwargs: ``generate`` arguments (see :func:`llava.prompting.generation_kwargs`).

    Returns:
        The B decoded answers (special tokens skipped, stripped), the visual tokens spliced into each
        prompt, and whether each prompt was cut at the model's context length.
    """
    tokenizer, model = loaded.tokenizer, loaded.model
    input_ids, mask = batch_prompt_ids(tokenizer, prompts)
    pixels = pixels.to(device=model.device, dtype=model.dtype)
    visual = {"videos": pixels} if videos else {"images": pixels}
    inputs = model.prepare_multimodal_inputs(
        input_ids.to(model.device), mask.to(model.device), padding_side="left", **visual
    )
    new_tokens = model.generate_spliced(inputs, **kwargs)
    texts = [t.strip() for t in tokenizer.batch_decode(new_tokens, skip_special_tokens=True)]
    return texts, inputs.num_visual_tokens.tolist(), inputs.truncated.tolist()


# ---------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------


@dataclass
class Batch:
    """Questions with their prompts and stacked images ``[I, 3, H, W]`` (I = questions with an image)."""

    questions: list[Question]
    prompts: list[str]
    pixels: torch.Tensor


def prepare_batch(questions: list[Question], loaded: Loaded, conv_mode: str) -> Batch:
    """Builds the prompts and decodes + preprocesses the images of one batch (runs in a worker thread).

    Raises:
        ValueError: an image cannot be read (the message names it, the question id and its place).
    """
    images = []
    for question in questions:
        if question.image is None:
            continue
        try:
            images.append(question.image.load())
        except (OSError, ValueError) as err:
            raise ValueError(f"{err} (question_id {question.question_id!r}, {question.where})") from err
    aspect = loaded.model.config.image_aspect_ratio
    pixels = process_images(images, loaded.image_processor, aspect) if images else torch.zeros(0, 3, 1, 1)
    prompts = [build_prompt(conv_mode, q.text) for q in questions]
    return Batch(list(questions), prompts, pixels)


def prefetched(items: Iterable[T], prepare: Callable[[T], Any]) -> Iterator[Any]:
    """``prepare(item)`` for each item in order, the next one computed in a thread while this one is used.

    An error of one item is raised when that item is reached, after every earlier item was yielded.
    """
    with ThreadPoolExecutor(max_workers=1) as pool:
        ahead = None
        for item in items:
            future = pool.submit(prepare, item)
            if ahead is not None:
                yield ahead.result()
            ahead = future
        if ahead is not None:
            yield ahead.result()


def answer_line(
    question: Question,
    text: str,
    model_name: str,
    num_visual_tokens: int,
    accounting: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The answer record: upstream's fields in upstream's order, plus ``num_visual_tokens`` and, for an
    in-LLM reduction, the ``accounting`` fields of :func:`layer_accounting`."""
    return {
        **question.head,
        "text": text,
        **question.tail,
        "answer_id": uuid.uuid4().hex,
        "model_id": model_name,
        "metadata": {},
        "num_visual_tokens": int(num_visual_tokens),
        **(accounting or {}),
    }


def layer_accounting(model: Any, counts: list[int]) -> list[dict[str, Any]]:
    """The per-layer visual-token fields of each answer of the batch just generated.

    With an in-LLM reduction (FastV, ATP) each sample gets ``visual_tokens_per_layer`` (its row of
    ``model.visual_token_schedule()``: the visual tokens each decoder layer ran on in the prefill) and
    ``mean_visual_tokens`` (N̄: their mean over all layers, the unpruned ones included). A batch that
    pruned nothing (text only) gets its spliced counts in every layer. With ATP each sample also gets
    ``atp_thresholds``: ``{insertion layer: [θ_r, θ_s]}``, the thresholds its modules predicted (or the
    fixed ones). Other reductions get no fields: every layer runs on ``num_visual_tokens``.

    Args:
        model: the model that generated the batch (its last prefill is read).
        counts: ``[B]`` visual tokens spliced into each prompt.
    """
    if not model.token_reduction.in_llm:
        return [{} for _ in counts]
    schedule = model.visual_token_schedule()  # [B * beams, num_layers] or None
    if schedule is None:
        rows = [[int(n)] * model.config.num_hidden_layers for n in counts]
    else:
        rows = schedule[:: schedule.shape[0] // len(counts)].tolist()  # beam search repeats each sample
    fields = [
        {"visual_tokens_per_layer": row, "mean_visual_tokens": round(sum(row) / len(row), 4)} for row in rows
    ]
    thresholds = model.pruning_thresholds() if schedule is not None else None  # ATP: {layer: [[θ_r, θ_s]]}
    if thresholds:
        step = len(next(iter(thresholds.values()))) // len(counts)
        for i, sample in enumerate(fields):
            sample["atp_thresholds"] = {
                str(layer): [round(t, 6) for t in pairs[i * step]] for layer, pairs in thresholds.items()
            }
    return fields


def run_questions(
    args: argparse.Namespace, questions: list[Question], device: str, loaded: Loaded | None = None
) -> int:
    """Answers this shard's questions that the answers file does not hold yet; returns how many.

    Everything that can fail cheaply (a foreign answers file, a missing image) fails before the model is
    loaded; the answers file is only changed once generation starts.
    """
    from tqdm import tqdm

    plan = plan_shard(args, questions, device)
    path, shard, state, pending = plan.path, plan.shard, plan.state, plan.pending
    if not pending:
        print(f"[llava] {path}: all {len(shard)} questions already answered.", file=sys.stderr)
        return 0
    check_images_exist(pending)
    loaded = loaded or load_model(args, device)
    # the reduction the loaded model runs, resolved from the checkpoint and flags
    record_settings(plan, reduction=dict(loaded.model.config.mm_token_reduction or {"method": "none"}))
    kwargs = generation_kwargs(
        loaded.tokenizer, args.max_new_tokens, args.temperature, args.top_p, args.num_beams
    )
    batches = [pending[i : i + args.batch_size] for i in range(0, len(pending), args.batch_size)]
    bar = tqdm(total=len(shard), initial=len(shard) - len(pending), unit="q", desc=path.name)
    start, images = time.perf_counter(), 0
    with open_for_append(path, state) as handle, bar:
        for batch in prefetched(batches, lambda b: prepare_batch(b, loaded, args.conv_mode)):
            texts, counts, cut = generate_batch(loaded, batch.prompts, batch.pixels, kwargs)
            layers = layer_accounting(loaded.model, counts)
            for question, text, count, was_cut, extra in zip(batch.questions, texts, counts, cut, layers):
                if was_cut:
                    bar.write(f"warning: question_id {question.question_id!r} was cut at the context length")
                line = answer_line(question, text, loaded.model_name, count, extra)
                handle.write(json.dumps(line) + "\n")
            handle.flush()
            images += len(batch.pixels)
            bar.update(len(batch.questions))
            bar.set_postfix(img_s=f"{images / max(time.perf_counter() - start, 1e-9):.2f}")
    return len(pending)


def prompt_with_image(text: str, has_image: bool) -> str:
    """``text`` without any ``<image>``; with ``<image>\\n`` in front when the question has an image."""
    text = text.replace(DEFAULT_IMAGE_TOKEN, "").strip()
    return f"{DEFAULT_IMAGE_TOKEN}\n{text}" if has_image else text


def require_fields(record: dict[str, Any], names: Sequence[str], where: str) -> None:
    """Fails when ``record`` lacks one of ``names``."""
    missing = [name for name in names if name not in record]
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing} (has {sorted(record)}).")
