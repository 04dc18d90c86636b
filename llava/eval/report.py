"""Gather ``*.scores.json`` files into the PruMerge paper's Table 1 layout (markdown and JSON).

Usage::

    python -m llava.eval.report --results playground/data/eval [more dirs or score files] \\
        [--out report.md] [--json report.json] [--server-score NAME:VQAv2=78.5 ...]

Nothing here names a benchmark: the columns, the score keys and which benchmarks are server-scored
come from the declarations in :mod:`llava.eval.benchmarks` (one per ``llava/eval/eval_<name>.py``, plus
any registered by the caller). Every score file found (directories are searched recursively) is one
cell: its benchmark and number come from the ``benchmark`` / ``headline`` fields the scorer wrote, or,
for files written before those existed, from the declarations' legacy keys and folders (see
:func:`llava.eval.benchmarks.identify`). The row is the result file's stem (the parent folder's name
when the stem is the benchmark's fixed answers name, VQAv2's ``merge``). The columns are Table 1's
(VQAv2, SQA-IMG, TextVQA, POPE, MME, MMB), then any other declared benchmark that some row has.
Server-scored benchmarks show ``server`` when their stub exists but no number is given (in the stub's
``server_score`` or with ``--server-score``); a benchmark that was not run shows ``-``. Each cell also
gets the mean ``num_visual_tokens`` of the answers file beside the score file (``<stem>.jsonl``), over
the answers that have an image (text-only ScienceQA items have none).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llava.eval import benchmarks
from llava.eval.io import SCORES_SUFFIX, iter_jsonl, write_json

# Table 1's columns, in the paper's order (from the declarations; kept for llava.hub).
COLUMNS = benchmarks.table1_columns()


def find_score_files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for path in map(Path, paths):
        found += sorted(path.rglob(f"*{SCORES_SUFFIX}")) if path.is_dir() else [path]
    return found


def classify(path: Path, scores: dict) -> tuple[str, str, float | None] | None:
    """``(row name, column, score)`` of one score file, or None when it is no declared benchmark's."""
    found = benchmarks.identify(path, scores)
    if found is None:
        if "benchmark" in scores:
            print(
                f"note: {path} is a score file of {scores['benchmark']!r}, which is not declared here; skipped",
                file=sys.stderr,
            )
        return None
    benchmark, score = found
    stem = path.name[: -len(SCORES_SUFFIX)]
    name = path.parent.name if stem == benchmark.fixed_answers_stem else stem
    return name, benchmark.column, score


def shown_columns(table: dict[str, dict]) -> tuple[str, ...]:
    """Table 1's columns, then every other declared benchmark's column that some row of ``table`` has."""
    present = {column for row in table.values() for column in row}
    table1 = benchmarks.table1_columns()
    return table1 + tuple(
        b.column for b in benchmarks.benchmarks() if b.column not in table1 and b.column in present
    )


def mean_visual_tokens(answers: Path) -> float | None:
    if not answers.is_file():
        return None
    counts = [a["num_visual_tokens"] for a in iter_jsonl(answers) if a.get("num_visual_tokens")]
    return sum(counts) / len(counts) if counts else None


def collect(paths: list[str], server: dict[tuple[str, str], float] | None = None) -> dict[str, dict]:
    """``{row name: {column: {"score", "visual_tokens", "file"}}}``."""
    table: dict[str, dict] = {}
    for path in find_score_files(paths):
        cell = classify(path, json.loads(path.read_text()))
        if cell is None:
            continue
        name, column, score = cell
        answers = path.with_name(path.name[: -len(SCORES_SUFFIX)] + ".jsonl")
        table.setdefault(name, {})[column] = {
            "score": score,
            "visual_tokens": mean_visual_tokens(answers),
            "file": str(path),
        }
    for (name, column), value in (server or {}).items():
        table.setdefault(name, {}).setdefault(column, {"visual_tokens": None, "file": None})["score"] = value
    columns = shown_columns(table)
    for row in table.values():
        for column in columns:
            row.setdefault(column, {"score": None, "visual_tokens": None, "file": None})
    return table


def fmt(column: str, cell: dict) -> str:
    """The score; ``server`` for a server-scored benchmark that was run but whose score is not given yet,
    ``-`` for a benchmark that was not run."""
    if cell["score"] is None:
        benchmark = benchmarks.by_column(column)
        return "server" if benchmark is not None and benchmark.server_scored and cell.get("file") else "-"
    return f"{cell['score']:.1f}"


def to_markdown(table: dict[str, dict]) -> str:
    columns = shown_columns(table)
    head = "| Model | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"
    scores = "".join(
        f"| {name} | " + " | ".join(fmt(c, row.get(c, {"score": None})) for c in columns) + " |\n"
        for name, row in table.items()
    )
    tokens = "".join(
        f"| {name} | "
        + " | ".join(
            "-" if row.get(c, {}).get("visual_tokens") is None else f"{row[c]['visual_tokens']:.1f}"
            for c in columns
        )
        + " |\n"
        for name, row in table.items()
    )
    return f"Scores\n\n{head}{scores}\nAverage visual tokens per image\n\n{head}{tokens}"


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--results", nargs="+", required=True, help="folders (searched recursively) or score files"
    )
    parser.add_argument("--out", default=None, help="write the markdown here (always printed)")
    parser.add_argument("--json", default=None, help="write the table as JSON here")
    parser.add_argument(
        "--server-score",
        action="append",
        default=[],
        metavar="NAME:COLUMN=VALUE",
        help="a server-scored number, e.g. llava-v1.5-7b-prumerge:VQAv2=72.0",
    )
    args = parser.parse_args(argv)
    server = {}
    for item in args.server_score:
        key, _, value = item.partition("=")
        name, _, column = key.rpartition(":")
        if benchmarks.by_column(column) is None or not name:
            known = tuple(b.column for b in benchmarks.benchmarks())
            parser.error(f"--server-score {item!r}: expected NAME:COLUMN=VALUE with COLUMN in {known}")
        server[(name, column)] = float(value)
    table = collect(args.results, server)
    markdown = to_markdown(table)
    print(markdown)
    if args.out:
        Path(args.out).write_text(markdown)
    if args.json:
        write_json(args.json, table)
    return markdown


if __name__ == "__main__":
    main()
