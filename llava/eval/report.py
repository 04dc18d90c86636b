"""Gather ``*.scores.json`` files into the PruMerge paper's Table 1 and Table 3 layouts (markdown and JSON).

Usage::

    python -m llava.eval.report --results playground/data/eval [more dirs or score files] \\
        [--out report.md] [--json report.json] [--server-score NAME:VQAv2=78.5 ...] [--video]

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
the answers that have an image (text-only ScienceQA items have none), and, when every one of those answers
records ``mean_visual_tokens`` (in-LLM reductions: FastV, ATP), their mean N̄: the visual tokens per
decoder layer averaged over all layers and answers. The token table shows N̄ where it exists, marked
``(N̄)``, and the spliced count elsewhere (which every layer runs on).

Video QA (the paper's Table 3: MSVD-QA, MSRVTT-QA, ActivityNet-QA, declared with ``table3``) gets its own
table after Table 1's: each cell is the judge's ``accuracy / average score`` (``70.7 / 3.9``) from
``merge.scores.json``, the row is the folder of ``merge.jsonl``, and the token table gives the mean
``num_visual_tokens`` per video with the mean ``kept_fraction`` of the answers file. ``--video`` prints only
that table. The judge models the server reported are listed under it.
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
    """Table 1's columns, then every other declared image benchmark's column that some row of ``table`` has
    (Table 3's video columns have their own table, :func:`video_columns`)."""
    present = {column for row in table.values() for column in row}
    table1, table3 = benchmarks.table1_columns(), benchmarks.table3_columns()
    return table1 + tuple(
        b.column
        for b in benchmarks.benchmarks()
        if b.column not in table1 and b.column not in table3 and b.column in present
    )


def video_columns(table: dict[str, dict]) -> tuple[str, ...]:
    """Table 3's columns when some row of ``table`` has one of them, else none."""
    present = {column for row in table.values() for column in row}
    table3 = benchmarks.table3_columns()
    return table3 if present & set(table3) else ()


def _has_cell(row: dict, columns: tuple[str, ...]) -> bool:
    return any(row.get(c, {}).get("file") or row.get(c, {}).get("score") is not None for c in columns)


NBAR_MARK = "(N̄)"
NBAR_NOTE = (
    f"{NBAR_MARK}: N̄, the visual tokens each decoder layer ran on, averaged over all layers (the unpruned "
    "ones included) and answers: in-LLM reductions (FastV, ATP), whose prompts hold every visual token. "
    "Other cells: the visual tokens spliced into the prompt, which every layer runs on."
)


def token_means(answers: Path) -> tuple[float | None, float | None]:
    """``(mean num_visual_tokens, mean of mean_visual_tokens)`` over the answers with an image.

    The second is None unless every such answer records ``mean_visual_tokens`` (answers of an in-LLM
    reduction; older files and other reductions have none).
    """
    if not answers.is_file():
        return None, None
    lines = [a for a in iter_jsonl(answers) if a.get("num_visual_tokens")]
    if not lines:
        return None, None
    spliced = sum(a["num_visual_tokens"] for a in lines) / len(lines)
    if not all(a.get("mean_visual_tokens") is not None for a in lines):
        return spliced, None
    return spliced, sum(a["mean_visual_tokens"] for a in lines) / len(lines)


def mean_kept_fraction(answers: Path) -> float | None:
    """The mean ``kept_fraction`` of an answers file (video QA), None when its answers have none."""
    if not answers.is_file():
        return None
    values = [a["kept_fraction"] for a in iter_jsonl(answers) if a.get("kept_fraction") is not None]
    return sum(values) / len(values) if values else None


def video_fields(column: str, scores: dict, answers: Path) -> dict:
    """A Table 3 cell's extra fields: the second metric (average score), the mean kept fraction, and the
    judge models the server reported."""
    benchmark = benchmarks.by_column(column)
    if benchmark is None or benchmark.table3 is None:
        return {}
    second = scores.get(benchmark.second_metric) if benchmark.second_metric else None
    judge = scores.get("judge") or {}
    return {
        "second": None if second is None else float(second),
        "kept_fraction": mean_kept_fraction(answers),
        "judge_models": sorted(judge.get("models_reported") or {}),
    }


def collect(paths: list[str], server: dict[tuple[str, str], float] | None = None) -> dict[str, dict]:
    """``{row name: {column: {"score", "visual_tokens", "mean_visual_tokens", "file"}}}``; Table 3 cells also
    have ``second`` (the average score), ``kept_fraction`` and ``judge_models``."""
    table: dict[str, dict] = {}
    for path in find_score_files(paths):
        scores = json.loads(path.read_text())
        cell = classify(path, scores)
        if cell is None:
            continue
        name, column, score = cell
        answers = path.with_name(path.name[: -len(SCORES_SUFFIX)] + ".jsonl")
        spliced, nbar = token_means(answers)
        table.setdefault(name, {})[column] = {
            "score": score,
            "visual_tokens": spliced,
            "mean_visual_tokens": nbar,
            "file": str(path),
            **video_fields(column, scores, answers),
        }
    for (name, column), value in (server or {}).items():
        empty = {"visual_tokens": None, "mean_visual_tokens": None, "file": None}
        table.setdefault(name, {}).setdefault(column, empty)["score"] = value
    columns = shown_columns(table) + video_columns(table)
    for row in table.values():
        for column in columns:
            row.setdefault(
                column, {"score": None, "visual_tokens": None, "mean_visual_tokens": None, "file": None}
            )
    return table


def fmt(column: str, cell: dict) -> str:
    """The score; ``server`` for a server-scored benchmark that was run but whose score is not given yet,
    ``-`` for a benchmark that was not run."""
    if cell["score"] is None:
        benchmark = benchmarks.by_column(column)
        return "server" if benchmark is not None and benchmark.server_scored and cell.get("file") else "-"
    return f"{cell['score']:.1f}"


def fmt_tokens(cell: dict) -> str:
    """N̄ marked ``(N̄)`` when the answers record it, else the mean spliced count, else ``-``."""
    if cell.get("mean_visual_tokens") is not None:
        return f"{cell['mean_visual_tokens']:.1f} {NBAR_MARK}"
    return "-" if cell.get("visual_tokens") is None else f"{cell['visual_tokens']:.1f}"


def _head(columns: tuple[str, ...]) -> str:
    return "| Model | " + " | ".join(columns) + " |\n|---|" + "---|" * len(columns) + "\n"


def to_markdown(table: dict[str, dict], video_only: bool = False) -> str:
    """Table 1's layout (rows with an image benchmark), then Table 3's when some row has a video benchmark;
    ``video_only``: Table 3's alone."""
    video = video_markdown(table)
    if video_only or (video and not any(_has_cell(row, shown_columns(table)) for row in table.values())):
        return video
    columns = shown_columns(table)
    rows = {name: row for name, row in table.items() if not video or _has_cell(row, columns)}
    head = _head(columns)
    scores = "".join(
        f"| {name} | " + " | ".join(fmt(c, row.get(c, {"score": None})) for c in columns) + " |\n"
        for name, row in rows.items()
    )
    tokens = "".join(
        f"| {name} | " + " | ".join(fmt_tokens(row.get(c, {})) for c in columns) + " |\n"
        for name, row in rows.items()
    )
    nbar = any(cell.get("mean_visual_tokens") is not None for row in rows.values() for cell in row.values())
    note = f"\n{NBAR_NOTE}\n" if nbar else ""
    image = f"Scores\n\n{head}{scores}\nAverage visual tokens per image\n\n{head}{tokens}{note}"
    return f"{image}\n{video}" if video else image


def fmt_video(cell: dict) -> str:
    """``accuracy / average score`` to one decimal each (Table 3's cells); ``-`` when not run."""
    if cell.get("score") is None:
        return "-"
    second = "-" if cell.get("second") is None else f"{cell['second']:.1f}"
    return f"{cell['score']:.1f} / {second}"


def fmt_video_tokens(cell: dict) -> str:
    """Mean visual tokens per video, with the mean kept fraction in percent when recorded."""
    if cell.get("visual_tokens") is None:
        return "-"
    kept = cell.get("kept_fraction")
    return f"{cell['visual_tokens']:.1f}" + ("" if kept is None else f" ({100 * kept:.1f}%)")


def video_markdown(table: dict[str, dict]) -> str:
    """Table 3's layout for the rows that have a video benchmark; empty when none has."""
    columns = video_columns(table)
    rows = {name: row for name, row in table.items() if _has_cell(row, columns)}
    if not rows:
        return ""
    head = _head(columns)
    scores = "".join(
        f"| {name} | " + " | ".join(fmt_video(row.get(c, {})) for c in columns) + " |\n"
        for name, row in rows.items()
    )
    tokens = "".join(
        f"| {name} | " + " | ".join(fmt_video_tokens(row.get(c, {})) for c in columns) + " |\n"
        for name, row in rows.items()
    )
    judges = sorted(
        {m for row in rows.values() for c in columns for m in row.get(c, {}).get("judge_models", [])}
    )
    judged = f"\nJudge models reported by the server: {', '.join(judges)}\n" if judges else ""
    return (
        f"Zero-shot video QA (LLM judge): accuracy % / average score (0-5)\n\n{head}{scores}\n"
        f"Mean visual tokens per video (kept fraction of the patch tokens)\n\n{head}{tokens}{judged}"
    )


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--results", nargs="+", required=True, help="folders (searched recursively) or score files"
    )
    parser.add_argument("--out", default=None, help="write the markdown here (always printed)")
    parser.add_argument("--video", action="store_true", help="only the zero-shot video-QA table (Table 3)")
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
    markdown = to_markdown(table, video_only=args.video)
    print(markdown)
    if args.out:
        Path(args.out).write_text(markdown)
    if args.json:
        write_json(args.json, table)
    return markdown


if __name__ == "__main__":
    main()
