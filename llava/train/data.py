"""Training data: the LLaVA conversation format, label masking from character spans, and the collator.

Samples are ``{"id", "image"?, "conversations": [{"from": "human"|"gpt", "value"}, ...]}`` in a JSON
list, a JSON Lines file, or a Hugging Face ``datasets`` folder (``save_to_disk``). Image paths are
relative to ``--image_folder``. Text-only samples get no image and no image tokens at all.

Labels come from the rendered conversation itself: it is tokenised once (split only at ``<image>``, as
at inference) with character offsets, and a token is trained on when it overlaps an assistant answer,
its ``</s>`` or the space that joins the answer to ``ASSISTANT:`` (Llama's tokenizers fold that space
into the answer's first token). No length arithmetic, so no "tokenization mismatch" and no sample is
silently dropped.
"""

from __future__ import annotations

import codecs
import json
import logging
import multiprocessing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from llava.constants import DEFAULT_IMAGE_TOKEN, IGNORE_INDEX, IMAGE_TOKEN_INDEX
from llava.conversation import Conversation, SeparatorStyle, get_conv_template

logger = logging.getLogger(__name__)


class BadSampleError(ValueError):
    """A training sample that cannot be used; the message names the file, line and sample id."""


@dataclass
class Sample:
    """One validated sample and where it came from."""

    record: dict[str, Any]
    where: str  # "<file> line N (id X)"

    @property
    def image(self) -> str | None:
        return self.record.get("image")


# ---------------------------------------------------------------------------------------------
# Reading and validating
# ---------------------------------------------------------------------------------------------


def read_records(data_path: str | Path) -> list[tuple[int, dict[str, Any] | BadSampleError]]:
    """``(line or index, record)`` pairs; a malformed JSON Lines line gives a ``BadSampleError`` instead."""
    path = Path(data_path)
    if path.is_dir():
        import datasets

        return list(enumerate(datasets.load_from_disk(str(path)).to_list(), start=1))
    if not path.is_file():
        raise FileNotFoundError(f"--data_path {path} does not exist.")
    if path.suffix == ".jsonl":
        return list(_read_jsonl(path))
    records = _read_json(path)
    if not isinstance(records, list):
        raise BadSampleError(f"{path}: expected a JSON list of samples.")
    return list(enumerate(records, start=1))


def check_turns(turns: list[Any], where: str) -> None:
    """Raises ``BadSampleError`` unless the turns are what :func:`render` and the model can use.

    Every turn is ``{"from": "human" | "gpt", "value": str}``; from the first human turn on, roles
    alternate human/gpt; ``<image>`` appears at most once, in that first human turn (the model splices
    one image at one placeholder, so an ``<image>`` in a later turn or in an answer would fail in the
    middle of training).
    """
    for i, turn in enumerate(turns):
        if not isinstance(turn, dict) or turn.get("from") not in ("human", "gpt"):
            raise BadSampleError(
                f"{where}: turn {i} is not a {{'from': 'human'|'gpt', 'value': ...}} object."
            )
        if not isinstance(turn.get("value"), str):
            raise BadSampleError(f"{where}: turn {i} has no text 'value'.")
    if not any(t["from"] == "gpt" for t in turns):
        raise BadSampleError(f"{where}: no 'gpt' turn, nothing to train on.")
    start = next((i for i, t in enumerate(turns) if t["from"] == "human"), len(turns))
    for i in range(start, len(turns)):
        expected = "human" if (i - start) % 2 == 0 else "gpt"
        if turns[i]["from"] != expected:
            raise BadSampleError(
                f"{where}: turn {i} is from {turns[i]['from']!r}; roles must alternate human/gpt."
            )
    for i, turn in enumerate(turns):
        count = turn["value"].count(DEFAULT_IMAGE_TOKEN)
        if count and (i != start or count > 1):
            place = "an answer" if turn["from"] == "gpt" else f"human turn {i}"
            raise BadSampleError(
                f"{where}: <image> appears in {place} ({count}x); it belongs once in the first human turn."
            )


WIDE_BOMS = (codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)


def _reject_wide(head: bytes, path: Path) -> None:
    if head.startswith(WIDE_BOMS):
        raise BadSampleError(
            f"{path} is UTF-16/32 encoded: save it as UTF-8 (e.g. iconv -f utf-16 -t utf-8)."
        )


def _decode(raw: bytes, path: Path, line: int | None = None) -> str:
    """UTF-8 text (a byte-order mark is accepted); any other encoding is a ``BadSampleError`` naming the line."""
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        where = line if line is not None else raw[: err.start].count(b"\n") + 1
        raise BadSampleError(
            f"{path} line {where}: not UTF-8 (byte 0x{raw[err.start]:02x}); save the file as UTF-8 "
            "(e.g. iconv -f latin1 -t utf-8)."
        ) from None


def _read_json(path: Path) -> Any:
    raw = path.read_bytes()
    _reject_wide(raw[:4], path)
    try:
        return json.loads(_decode(raw, path))
    except json.JSONDecodeError as err:
        raise BadSampleError(f"{path} line {err.lineno}: not valid JSON ({err.msg}); fix the file.") from err


def _read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any] | BadSampleError]]:
    """``(line, record)``; a line that is not UTF-8 or not JSON gives a ``BadSampleError`` for that line."""
    with path.open("rb") as handle:
        _reject_wide(handle.read(4), path)
        handle.seek(0)
        for number, raw in enumerate(handle, start=1):
            try:
                line = _decode(raw, path, number)
                if line.strip():
                    yield number, json.loads(line)
            except BadSampleError as err:
                yield number, err
            except json.JSONDecodeError as err:
                yield number, BadSampleError(f"{path} line {number}: not valid JSON ({err.msg})")


def check_record(record: Any, where: str, image_folder: Path | None, image_missing: bool = False) -> None:
    """Raises ``BadSampleError`` for a sample the trainer cannot use (``image_missing``: its file is not there)."""
    if not isinstance(record, dict) or not isinstance(record.get("conversations"), list):
        raise BadSampleError(f"{where}: no 'conversations' list.")
    turns = record["conversations"]
    check_turns(turns, where)
    mentions = sum(t["value"].count(DEFAULT_IMAGE_TOKEN) for t in turns)
    image = record.get("image")
    if image is not None and not isinstance(image, str):
        raise BadSampleError(f"{where}: 'image' must be a file name (a string), got {image!r}.")
    if mentions and not image:
        raise BadSampleError(f"{where}: the text has <image> but the sample names no image file.")
    if image and not mentions:
        raise BadSampleError(f"{where}: the sample names an image but no turn holds <image>.")
    if image and image_missing:
        raise BadSampleError(f"{where}: image file {image_folder / image} is missing (check --image_folder).")


def missing_images(records: list[tuple[int, Any]], folder: Path | None) -> set[int]:
    """The record numbers whose image file is not in ``folder``, checked once per run.

    In a multi-process run (torch.distributed initialised) rank 0 looks at the files and shares the
    answer, so a 625K-image dataset on a network file system is not ``stat``-ed by every rank.
    """
    import torch.distributed as dist

    def look() -> list[int]:
        return sorted(
            number
            for number, record in records
            if isinstance(record, dict)
            and isinstance(record.get("image"), str)
            and record["image"]
            and not (folder / record["image"]).is_file()
        )

    if folder is None:
        return set()
    if not (dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
        return set(look())
    box = [look() if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return set(box[0])


def load_samples(
    data_path: str, image_folder: str | None, skip_bad: bool, check_images: bool = True
) -> tuple[list[Sample], int]:
    """Validated samples and the number skipped (``skip_bad``), or the first bad sample's error.

    ``check_images``: fail (or skip) now on samples whose image file is missing; without it, a missing
    file surfaces when the sample is drawn (a stop naming it, or a counted skip with ``skip_bad``).
    """
    folder = Path(image_folder) if image_folder else None
    samples, skipped = [], 0
    records = read_records(data_path)
    missing = missing_images(records, folder) if check_images else set()
    for number, record in records:
        label = "line" if str(data_path).endswith(".jsonl") else "sample"
        sample_id = record.get("id", "?") if isinstance(record, dict) else "?"
        where = f"{data_path} {label} {number} (id {sample_id})"
        try:
            if isinstance(record, BadSampleError):
                raise record
            check_record(record, where, folder, image_missing=number in missing)
        except BadSampleError as err:
            if not skip_bad:
                raise BadSampleError(
                    f"{err} Fix it, or pass --skip_bad_samples True to skip such samples."
                ) from None
            logger.warning("Skipping a bad sample: %s", err)
            skipped += 1
            continue
        samples.append(Sample(record, where))
    if not samples:
        raise BadSampleError(f"{data_path} holds no usable sample.")
    return samples, skipped


# ---------------------------------------------------------------------------------------------
# Rendering and labels
# ---------------------------------------------------------------------------------------------


def render(turns: list[dict[str, Any]], template: Conversation) -> tuple[str, list[tuple[int, int]]]:
    """The conversation as one string, and the character spans the loss falls on.

    The text is the template's own rendering (:meth:`Conversation.render`, the code that renders the
    generation prompt at inference), so a conversation's prompt ids are those of inference.
    ``TWO`` templates (``v1``/``vicuna_v1``): each answer plus its ``sep2`` (``</s>``), starting at the
    space that follows ``ASSISTANT:``. ``PLAIN``: the first caption and its newline, after ``<image>``
    (the question is dropped, as upstream's pretraining samples).
    Turns are taken from the first human turn on; roles must alternate human/gpt.
    """
    start = next((i for i, t in enumerate(turns) if t.get("from") == "human"), len(turns))
    turns = turns[start:]
    for i, turn in enumerate(turns):
        expected = "human" if i % 2 == 0 else "gpt"
        if turn.get("from") != expected:
            raise BadSampleError(f"turn {start + i} is from {turn.get('from')!r}, expected {expected!r}")
    conv = template.copy()
    conv.messages = []
    user, assistant = conv.roles
    if conv.sep_style == SeparatorStyle.PLAIN:
        question = str(turns[0].get("value", "")) if turns else ""
        caption = next((str(t.get("value", "")) for t in turns if t.get("from") == "gpt"), "")
        if DEFAULT_IMAGE_TOKEN in question:
            conv.append_message(user, question)
        conv.append_message(assistant, caption)
        text, spans = conv.render()
        return text, spans[-1:]
    for i, turn in enumerate(turns):
        conv.append_message(assistant if i % 2 else user, str(turn.get("value", "")))
    text, spans = conv.render()
    return text, spans[1::2]


def tokenize_with_labels(text: str, spans: list[tuple[int, int]], tokenizer) -> tuple[list[int], list[int]]:
    """Token ids of ``text`` (one ``IMAGE_TOKEN_INDEX`` per ``<image>``, one BOS) and their labels.

    A token is labelled with its own id when its characters overlap one of ``spans``, else ``IGNORE_INDEX``.
    """
    ids: list[int] = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    labels: list[int] = [IGNORE_INDEX] * len(ids)
    offset = 0
    for k, chunk in enumerate(text.split(DEFAULT_IMAGE_TOKEN)):
        if k:
            ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
            offset += len(DEFAULT_IMAGE_TOKEN)
        if chunk:
            encoded = tokenizer(chunk, add_special_tokens=False, return_offsets_mapping=True)
            for token, (a, b) in zip(encoded["input_ids"], encoded["offset_mapping"]):
                a, b = a + offset, b + offset
                ids.append(token)
                labels.append(token if any(a < end and b > begin for begin, end in spans) else IGNORE_INDEX)
        offset += len(chunk)
    return ids, labels


def modality_length(record: dict[str, Any]) -> int:
    """Upstream's length for grouping: words over all turns, negative for text-only samples."""
    words = sum(len(str(t.get("value", "")).split()) for t in record["conversations"])
    return words if record.get("image") else -words


# ---------------------------------------------------------------------------------------------
# Dataset and collator
# ---------------------------------------------------------------------------------------------


class LazySupervisedDataset(Dataset):
    """Tokenises each sample and loads its image when it is drawn.

    A corrupt image stops training with the sample named, or, with ``skip_bad``, is replaced by the next
    usable sample and counted in :attr:`corrupt_images` (shared with data-loader workers).
    """

    def __init__(
        self,
        data_path: str,
        tokenizer,
        image_processor,
        conv_version: str,
        image_folder: str | None,
        image_aspect_ratio: str = "square",
        skip_bad: bool = False,
        check_images: bool = True,
    ) -> None:
        self.samples, self.skipped = load_samples(data_path, image_folder, skip_bad, check_images)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.template = get_conv_template(conv_version)
        self.image_folder = Path(image_folder) if image_folder else None
        self.image_aspect_ratio = image_aspect_ratio
        self.skip_bad = skip_bad
        self.corrupt_images = multiprocessing.Value("i", 0)

    def __len__(self) -> int:
        return len(self.samples)

    @property
    def modality_lengths(self) -> list[int]:
        return [modality_length(s.record) for s in self.samples]

    def __getitem__(self, index: int) -> dict[str, Any]:
        for attempt in range(len(self.samples)):
            sample = self.samples[(index + attempt) % len(self.samples)]
            try:
                return self._build(sample)
            except BadSampleError as err:
                if not self.skip_bad:
                    raise
                logger.warning("Skipping a bad sample: %s", err)
                with self.corrupt_images.get_lock():
                    self.corrupt_images.value += 1
        raise BadSampleError("No sample of the dataset could be loaded.")

    def _build(self, sample: Sample) -> dict[str, Any]:
        from llava.mm_utils import load_image, process_images

        try:
            text, spans = render(sample.record["conversations"], self.template)
        except BadSampleError as err:
            raise BadSampleError(f"{sample.where}: {err}") from None
        ids, labels = tokenize_with_labels(text, spans, self.tokenizer)
        item: dict[str, Any] = {"input_ids": torch.tensor(ids), "labels": torch.tensor(labels)}
        if sample.image:
            try:
                image = load_image(self.image_folder / sample.image if self.image_folder else sample.image)
            except (OSError, ValueError) as err:
                raise BadSampleError(f"{sample.where}: {err}") from None
            item["image"] = process_images([image], self.image_processor, self.image_aspect_ratio)[0]
        return item


@dataclass
class DataCollatorForSupervisedDataset:
    """Right-pads ids (pad id) and labels (``IGNORE_INDEX``) and stacks the images.

    ``images`` holds one entry per sample that has an image, in batch order, matching the placeholders.
    Truncation to ``model_max_length`` happens in the model, after the visual tokens are spliced in, where
    it is counted (``truncated`` in the model's output).
    """

    pad_token_id: int = 0

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        width = max(len(it["input_ids"]) for it in items)
        ids = torch.full((len(items), width), self.pad_token_id, dtype=torch.long)
        labels = torch.full((len(items), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros(len(items), width, dtype=torch.long)
        for row, it in enumerate(items):
            n = len(it["input_ids"])
            ids[row, :n], labels[row, :n], mask[row, :n] = it["input_ids"], it["labels"], 1
        batch = {"input_ids": ids, "labels": labels, "attention_mask": mask}
        images = [it["image"] for it in items if "image" in it]
        if images:
            batch["images"] = torch.stack(images)
        return batch
