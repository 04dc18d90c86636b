"""One declaration per benchmark, and the registry that ``llava.eval.report`` reads.

A benchmark is data plus two small functions: the generation side is a runner's ``load_questions``
(``llava.eval.model_vqa_loader`` serves every benchmark whose questions are one JSON line each), the
scoring side is the ``main`` of its scorer module. The data is a :class:`Benchmark`, declared in the
scorer module and registered there::

    BENCHMARK = register(Benchmark(name="pope", column="POPE", metric="mean_f1_percent", ...))

Every module ``llava/eval/eval_<name>.py`` is imported the first time the registry is read, so a
benchmark declared in such a module is known to the report without any list to edit; a benchmark
declared elsewhere (a test, a plugin) is known once its :func:`register` has run. Keep the
``eval_<name>.py`` modules light to import (no torch at module level): the report imports them all.

Score files. A scorer writes ``<answers stem>.scores.json`` through :meth:`Benchmark.stamp`, which puts
``"benchmark"`` (the declaration's name), ``"headline"`` (the key of the number the report shows) and
``"headline_name"`` (what that number is) in front of the figures. :func:`identify` reads a score file
back: by those fields, or, for files written before they existed, by the keys and folders the five
original benchmarks' declarations list as ``legacy_keys`` / ``legacy_folders``.

Server-scored benchmarks (VQAv2, MMBench) have no local metric: their ``eval_<name>.py`` writes a stub
(:func:`write_server_stub`) whose ``server_score`` is ``null`` until the server's number is written
there by hand.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llava.eval.io import read_json, read_jsonl, scores_path, write_json

# The answer-format instructions of LLaVA-1.5's evaluation (docs/Evaluation.md).
SHORT_ANSWER_SUFFIX = "Answer the question using a single word or phrase."
OPTION_LETTER_SUFFIX = {
    "en": "Answer with the option's letter from the given choices directly.",
    "cn": "请直接回答选项字母。",
}
SERVER_SCORE = "server_score"


@dataclass(frozen=True)
class Benchmark:
    """What the report, the docs and the tests need to know about one benchmark.

    Attributes:
        name: short id, written into its score files as ``"benchmark"`` (``"pope"``).
        column: the report's column (``"POPE"``).
        metric: key of the headline number in the score file (``"mean_f1_percent"``).
        metric_name: what that number computes, in words (``"mean F1 ... x100"``).
        runner: module that answers the questions (its ``load_questions(args)`` reads the question file).
        scorer: module whose ``main`` writes the score file (where the declaration lives).
        script: the ``scripts/v1_5/eval/`` script that runs both, if any.
        server_scored: no local metric; ``metric`` is filled in by hand from the server's answer.
        table1: position among the PruMerge paper's Table 1 columns; ``None``: not a Table 1 column (the
            report shows it after those, and only when some row has it).
        table3: position among the PruMerge paper's Table 3 columns (zero-shot video QA); the report shows
            these in their own table, never among Table 1's.
        second_metric: key of a second number shown after the headline (``"70.7 / 3.9"``), if any.
        prompt_suffix: the answer-format instruction each prompt ends with.
        suffix_flag: the runner flag that appends ``prompt_suffix``; ``None``: the question file's text
            already ends with it and the runner adds nothing.
        max_new_tokens: the runner's default generation length.
        parse_answer: how the scorer (or the upload converter) reads an answer text before comparing it;
            ``None`` when the raw text is scored elsewhere.
        fixed_answers_stem: the answers file's fixed name in this benchmark's layout (VQAv2's
            ``merge.jsonl``); the report then names the row after the folder that holds it.
        legacy_keys: keys that identify a score file written before files recorded ``"benchmark"``.
        legacy_folders: folder names that identify such an older server-scored stub.
    """

    name: str
    column: str
    metric: str
    metric_name: str
    runner: str
    scorer: str
    script: str | None = None
    server_scored: bool = False
    table1: int | None = None
    table3: int | None = None
    second_metric: str | None = None
    prompt_suffix: str = ""
    suffix_flag: str | None = None
    max_new_tokens: int = 128
    parse_answer: Callable[[str], str] | None = None
    fixed_answers_stem: str | None = None
    legacy_keys: tuple[str, ...] = ()
    legacy_folders: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for field_name in ("name", "column", "metric", "metric_name", "runner", "scorer"):
            if not getattr(self, field_name):
                raise ValueError(f"Benchmark {self.name!r}: {field_name} must not be empty")

    def stamp(self, scores: dict[str, Any]) -> dict[str, Any]:
        """``scores`` with ``benchmark``, ``headline`` and ``headline_name`` in front (what scorers write).

        Raises:
            KeyError: ``scores`` has no ``metric`` entry (the declaration and the scorer disagree).
        """
        if self.metric not in scores:
            raise KeyError(
                f"{self.name}: the scores have no headline {self.metric!r} (keys {sorted(scores)})"
            )
        return {"benchmark": self.name, "headline": self.metric, "headline_name": self.metric_name, **scores}


_REGISTRY: dict[str, Benchmark] = {}
_discovered = False


def register(benchmark: Benchmark) -> Benchmark:
    """Adds ``benchmark`` (replacing an earlier declaration of the same name) and returns it.

    Raises:
        ValueError: another benchmark already has that column.
    """
    for other in _REGISTRY.values():
        if other.name != benchmark.name and other.column == benchmark.column:
            raise ValueError(
                f"benchmarks {other.name!r} and {benchmark.name!r} both use column {other.column!r}"
            )
    _REGISTRY[benchmark.name] = benchmark
    return benchmark


def unregister(name: str) -> None:
    """Removes the benchmark called ``name`` (tests that declare their own)."""
    _REGISTRY.pop(name, None)


def discover() -> None:
    """Imports every ``llava.eval.eval_<name>`` module once, so that their declarations register."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import llava.eval

    for module in pkgutil.iter_modules(llava.eval.__path__):
        if module.name.startswith("eval_"):
            importlib.import_module(f"llava.eval.{module.name}")


def benchmarks() -> list[Benchmark]:
    """Every declared benchmark: Table 1's in the paper's column order, then the others as registered."""
    discover()
    listed = list(_REGISTRY.values())
    table1 = sorted((b for b in listed if b.table1 is not None), key=lambda b: b.table1)
    return table1 + [b for b in listed if b.table1 is None]


def get(name: str) -> Benchmark | None:
    """The benchmark declared as ``name``, or None."""
    discover()
    return _REGISTRY.get(name)


def by_column(column: str) -> Benchmark | None:
    """The benchmark shown in ``column``, or None."""
    return next((b for b in benchmarks() if b.column == column), None)


def table1_columns() -> tuple[str, ...]:
    """The columns of the paper's Table 1, in its order."""
    return tuple(b.column for b in benchmarks() if b.table1 is not None)


def table3_columns() -> tuple[str, ...]:
    """The columns of the paper's Table 3 (zero-shot video QA), in its order."""
    listed = sorted((b for b in benchmarks() if b.table3 is not None), key=lambda b: b.table3)
    return tuple(b.column for b in listed)


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def identify(path: Path, scores: dict[str, Any]) -> tuple[Benchmark, float | None] | None:
    """The benchmark of one score file and its headline number (None: a server score not given yet).

    A file that names its ``benchmark`` is read by its ``headline``; an older file by the declarations'
    ``legacy_keys`` (local scorers) or, for a ``server_scored`` stub, ``legacy_folders`` (the nearest
    folder of ``path`` that one of them names). None when the file is no declared benchmark's.
    """
    if "benchmark" in scores:
        benchmark = get(str(scores["benchmark"]))
        if benchmark is None:
            return None
        return benchmark, _number(scores.get(scores.get("headline", benchmark.metric)))
    for benchmark in benchmarks():
        for key in benchmark.legacy_keys:
            if key in scores:
                return benchmark, _number(scores[key])
    if scores.get("server_scored"):
        for part in reversed([p.lower() for p in path.parts]):
            for benchmark in benchmarks():
                if part in benchmark.legacy_folders:
                    return benchmark, _number(scores.get(SERVER_SCORE))
    return None


def write_server_stub(
    benchmark: Benchmark, result_file: str | Path, upload_file: str | Path
) -> tuple[Path, dict[str, Any]]:
    """Writes ``<result stem>.scores.json`` for a server-scored benchmark, keeping a ``server_score``
    already written there; returns the path and what was written."""
    path = scores_path(result_file)
    old = read_json(path) if path.exists() else {}
    stub = benchmark.stamp(
        {
            "server_scored": True,
            SERVER_SCORE: old.get(SERVER_SCORE),
            "answers": len(read_jsonl(result_file)),
            "upload_file": str(upload_file),
        }
    )
    write_json(path, stub)
    return path, stub


def server_stub_main(benchmark: Benchmark, argv: list[str] | None = None) -> dict[str, Any]:
    """Command line of a server-scored benchmark's ``eval_<name>`` module (see :func:`write_server_stub`)."""
    parser = argparse.ArgumentParser(
        prog=f"python -m {benchmark.scorer}",
        description=f"Write the {benchmark.column} score stub ({benchmark.metric_name}) beside the answers.",
    )
    parser.add_argument("--result-file", required=True, help="the model's answers (JSONL)")
    parser.add_argument("--upload-file", required=True, help="the file to upload to the server")
    args = parser.parse_args(argv)
    path, stub = write_server_stub(benchmark, args.result_file, args.upload_file)
    print(f"scores stub written to {path}; put the server's number under {SERVER_SCORE!r} once you have it")
    return stub
