"""Reading and writing helpers shared by the evaluation scorers.

Answer and question files are JSON Lines: one JSON object per line. :func:`read_jsonl` reads them
and, for a line that is not a JSON object, raises :class:`JSONLError` naming the file and the
1-based line number, so that a truncated or hand-edited answer file is easy to locate.

Score files: every scorer prints its figures and also writes them as JSON *beside the result
file*, replacing the result file's last suffix with ``.scores.json``
(``answers/llava-v1.5-13b.jsonl`` → ``answers/llava-v1.5-13b.scores.json``); see
:func:`scores_path` and :func:`write_scores`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SCORES_SUFFIX = ".scores.json"


class JSONLError(ValueError):
    """A line of a JSON Lines file is not a JSON object; the message names the file and line."""


def iter_numbered_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(1-based line number, JSON object)`` for every non-blank line of ``path``.

    Raises:
        JSONLError: a line is not valid JSON or is valid JSON but not an object; the message
            reads ``<path>:<line number>: ...``.
    """
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise JSONLError(f"{path}:{line_number}: not valid JSON ({err.msg}): {line[:80]!r}") from err
            if not isinstance(record, dict):
                raise JSONLError(f"{path}:{line_number}: expected a JSON object, got {type(record).__name__}")
            yield line_number, record


def iter_jsonl(path: str | Path) -> Iterator[dict[str, Any]]:
    """Yield the JSON object of every non-blank line of ``path`` (see :func:`iter_numbered_jsonl`)."""
    for _, record in iter_numbered_jsonl(path):
        yield record


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """Return the JSON objects of ``path``, one per non-blank line, in file order."""
    return list(iter_jsonl(path))


def read_json(path: str | Path) -> Any:
    """Load a whole-file JSON document, naming the file if it does not parse."""
    path = Path(path)
    with path.open(encoding="utf-8") as handle:
        try:
            return json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err


def write_json(path: str | Path, data: Any, indent: int | None = 2) -> Path:
    """Write ``data`` as JSON to ``path`` (creating its folder) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        json.dump(data, handle, indent=indent)
        if indent is not None:
            handle.write("\n")
    return path


def scores_path(result_file: str | Path) -> Path:
    """The score file that belongs to ``result_file``: same folder and stem, suffix ``.scores.json``."""
    result_file = Path(result_file)
    return result_file.with_name(result_file.stem + SCORES_SUFFIX)


def write_scores(result_file: str | Path, scores: dict[str, Any]) -> Path:
    """Write ``scores`` beside ``result_file`` (see :func:`scores_path`) and return where."""
    return write_json(scores_path(result_file), scores)
