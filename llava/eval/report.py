"""Gather ``*.scores.json`` files into the PruMerge paper's Table 1 layout (markdown and JSON).

Usage::

    python -m llava.eval.report --results playground/data/eval [more dirs or score files] \\
        [--out report.md] [--json report.json] [--server-score NAME:VQAv2=78.5 ...]

Every score file found (directories are searched recursively) is one cell: the benchmark comes from
the keys the scorer wrote (POPE ``mean_f1_percent``, SQA ``img_accuracy_percent``, TextVQA
``soft_accuracy_percent``, MME ``perception_score``) or, for the server-scored stubs that
``vqav2.sh`` / ``mmbench.sh`` write, from the path (``vqav2`` / ``mmbench``); the row is the result
file's stem (the parent folder's name for VQAv2's ``merge``). VQAv2 and MMB show ``server`` when their
stub exists but no number is given (in the stub's ``server_score`` or with ``--server-score``), and
``-`` when they were not run. Each cell also gets the mean ``num_visual_tokens`` of the answers file
beside the score file (``<stem>.jsonl``), over the answers that have an image (text-only ScienceQA items
have none).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from llava.eval.io import SCORES_SUFFIX, iter_jsonl, write_json

COLUMNS = ("VQAv2", "SQA-IMG", "TextVQA", "POPE", "MME", "MMB")
SCORE_KEYS = {
    "mean_f1_percent": "POPE",
    "img_accuracy_percent": "SQA-IMG",
    "soft_accuracy_percent": "TextVQA",
    "perception_score": "MME",
}
SERVER_PATHS = {"vqav2": "VQAv2", "mmbench": "MMB"}


def find_score_files(paths: list[str]) -> list[Path]:
    found: list[Path] = []
    for path in map(Path, paths):
        found += sorted(path.rglob(f"*{SCORES_SUFFIX}")) if path.is_dir() else [path]
    return found


def classify(path: Path, scores: dict) -> tuple[str, str, float | None] | None:
    """``(row name, column, score)`` of one score file, or None when it is no Table 1 benchmark."""
    stem = path.name[: -len(SCORES_SUFFIX)]
    name = path.parent.name if stem == "merge" else stem
    for key, column in SCORE_KEYS.items():
        if key in scores:
            return name, column, float(scores[key])
    if scores.get("server_scored"):
        for part in reversed([p.lower() for p in path.parts]):
            if part in SERVER_PATHS:
                value = scores.get("server_score")
                return name, SERVER_PATHS[part], None if value is None else float(value)
    return None


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
    for row in table.values():
        for column in COLUMNS:
            row.setdefault(column, {"score": None, "visual_tokens": None, "file": None})
    return table


def fmt(column: str, cell: dict) -> str:
    """The score; ``server`` for a server-scored benchmark that was run but whose score is not given yet,
    ``-`` for a benchmark that was not run."""
    if cell["score"] is None:
        return "server" if column in SERVER_PATHS.values() and cell.get("file") else "-"
    return f"{cell['score']:.1f}"


def to_markdown(table: dict[str, dict]) -> str:
    head = "| Model | " + " | ".join(COLUMNS) + " |\n|---|" + "---|" * len(COLUMNS) + "\n"
    scores = "".join(
        f"| {name} | " + " | ".join(fmt(c, row[c]) for c in COLUMNS) + " |\n" for name, row in table.items()
    )
    tokens = "".join(
        f"| {name} | "
        + " | ".join(
            "-" if row[c]["visual_tokens"] is None else f"{row[c]['visual_tokens']:.1f}" for c in COLUMNS
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
        if column not in COLUMNS or not name:
            parser.error(f"--server-score {item!r}: expected NAME:COLUMN=VALUE with COLUMN in {COLUMNS}")
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
