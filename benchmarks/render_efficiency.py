"""Renders ``bench_e2e.py`` results as a markdown table and a latency-versus-visual-tokens plot.

Usage::

    python benchmarks/render_efficiency.py benchmarks/results/cpu.json [more.json ...] \\
        --md docs/efficiency_measured.md --png docs/images/efficiency_cpu.png [--inject README.md]

``--md`` writes a markdown page with one table per results file (one device each); ``--png`` a plot of
prefill and end-to-end latency against visual tokens per image, one line per results file, points
labelled with the setting; ``--inject FILE`` replaces the text between ``<!-- efficiency:measured:start -->``
and ``<!-- efficiency:measured:end -->`` in FILE with the same tables.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

START_MARKER = "<!-- efficiency:measured:start -->"
END_MARKER = "<!-- efficiency:measured:end -->"

#: Short names of the settings for the table and the plot labels.
SHORT = {
    "none": "none",
    "prumerge/reference": "prumerge",
    "prumerge_plus/reference/adaptive": "prumerge+",
}


def short_name(setting: str) -> str:
    """``prumerge/reference/budget=64`` -> ``prumerge b=64``; the adaptive settings by their usual names."""
    if setting in SHORT:
        return SHORT[setting]
    match = re.fullmatch(r"prumerge/reference/budget=(\d+)", setting)
    return f"prumerge b={match.group(1)}" if match else setting


def load(path: Path) -> dict[str, Any]:
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if data.get("benchmark") != "bench_e2e.py":
        raise ValueError(
            f"{path} is not a bench_e2e.py result (its 'benchmark' field is {data.get('benchmark')!r})."
        )
    data["_path"] = str(path)
    return data


def device_label(data: dict[str, Any]) -> str:
    """``cpu (float32, 7b, LLM 1/32 layers)``: the device slug, dtype, shape and LLM depth."""
    cfg = data["config"]
    layers = f"LLM {cfg['llm_layers']}/{cfg['llm_layers_full']} layers"
    return f"{cfg['device_slug']} ({cfg['dtype']}, {cfg['shape']}, {layers})"


def fmt(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:,.{digits}f}"


def table(data: dict[str, Any]) -> str:
    """One device's markdown section: a heading, the conditions and the table."""
    cfg, machine = data["config"], data["machine"]
    batches = cfg["batch_sizes"]
    lines = [f"### {device_label(data)}", ""]
    load_avg = machine.get("load_average_1_5_15min")
    lines.append(
        f"{machine['device_name']}, {machine.get('cpu_count')} CPUs, torch {machine['torch']}, "
        f"transformers {machine['transformers']}, measured {machine['date'][:10]}"
        + (f", load average before the run {load_avg[0]}" if load_avg else "")
        + f". Random weights at the `{cfg['shape']}` shapes; {cfg['text_tokens']} text tokens, "
        f"{cfg['new_tokens']} new tokens (greedy); source: `{Path(data['_path']).name}`."
    )
    lines.append("")
    if cfg["llm_layers"] < cfg["llm_layers_full"]:
        lines += [
            f"**Truncated language model: {cfg['llm_layers']} of {cfg['llm_layers_full']} decoder layers.** "
            "Prefill, decode, end-to-end, memory and throughput figures are not those of the full model; "
            "the vision tower and reducers are full size.",
            "",
        ]
    if data.get("skipped"):
        lines += [f"Not (fully) measured: {data['skipped']}", ""]
    if not data["rows"]:
        return "\n".join(lines)
    head = [
        "setting",
        "visual tokens",
        "tower + reduce ms",
        "prefill ms",
        "decode ms/token",
        "e2e ms",
        "peak MiB",
        *[f"img/s @{b}" for b in batches],
        "same greedy as batch 1",
        "reduce step % of tower",
        "roofline prefill ms",
    ]
    lines += ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * (len(head) - 1)) + "|"]
    for row in data["rows"]:
        tokens = row["visual_tokens"]
        spread = "" if tokens["min"] == tokens["max"] else f" ({tokens['min']}–{tokens['max']})"
        tput = {t["batch_size"]: t for t in row["throughput"]}
        rates = [fmt(tput.get(b, {}).get("images_per_s"), 3) for b in batches]
        differing = [
            f"{t['mismatched_images']}/{b} differ @{b}"
            for b, t in tput.items()
            if b > 1 and "greedy_identical_to_batch1" in t and not t["greedy_identical_to_batch1"]
        ]
        same = "no: " + ", ".join(differing) if differing else "yes"
        cells = [
            f"`{short_name(row['setting'])}`",
            f"{tokens['mean']:g}{spread}",
            fmt(row["tower_reduce_ms"]),
            fmt(row["prefill_ms"]),
            fmt(row["decode_ms_per_token"], 2),
            fmt(row["e2e_ms"]),
            fmt(row["peak_memory_mib"], 0),
            *rates,
            same,
            fmt(row["reducer_overhead"]["pct_of_tower"], 2),
            fmt(row["analytical"]["prefill_ms"], 2),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    overhead_batch = (
        data["rows"][0]["reducer_overhead"]["batch_size"] if data["rows"] else cfg["overhead_batch"]
    )
    device_name = data["rows"][0]["analytical"]["device"] if data["rows"] else None
    lines += [
        "",
        f"Medians; batch-1 figures over {max(cfg['repeats'], max(batches))} runs cycling over "
        f"{max(batches)} images, batched figures over {cfg['batch_repeats']} run(s). `tower + reduce`: the "
        "vision tower and reducer inside the end-to-end run; `prefill`: one LLM forward on the spliced "
        "prompt; `decode`: mean time per generated token after the first; `e2e`: pixels to "
        f"{cfg['new_tokens']} new tokens for one image; `reduce step % of tower`: the reducer's extra work "
        f"at batch {overhead_batch} relative to the tower with no reduction; `roofline prefill`: "
        + (
            f"`llava.analysis` estimate for the full {cfg['shape']} LLM on {device_name} (fp16, batch 1)."
            if device_name
            else "not given (no matching `llava.analysis` device for this machine)."
        ),
        "",
    ]
    return "\n".join(lines)


def markdown(results: list[dict[str, Any]], title: bool = True) -> str:
    """The tables of every results file; with ``title``, a whole page."""
    parts = []
    if title:
        parts += [
            "# Measured end-to-end efficiency",
            "",
            "Generated by `benchmarks/render_efficiency.py` from `benchmarks/bench_e2e.py` results "
            "(see `benchmarks/README.md`). Do not edit by hand.",
            "",
        ]
    parts += [table(data) for data in results]
    return "\n".join(parts).rstrip() + "\n"


def inject(path: Path, text: str) -> None:
    """Replaces what lies between the two markers in ``path`` with ``text``."""
    content = path.read_text(encoding="utf-8")
    start, end = content.find(START_MARKER), content.find(END_MARKER)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"{path} lacks the markers {START_MARKER} ... {END_MARKER} (in that order).")
    head = content[: start + len(START_MARKER)]
    path.write_text(head + "\n" + text.strip() + "\n" + content[end:], encoding="utf-8")


def plot(results: list[dict[str, Any]], path: Path) -> None:
    """Prefill and end-to-end latency versus visual tokens, one line per results file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    new_tokens = results[0]["config"]["new_tokens"]
    panels = [
        ("prefill_ms", "prefill_visual_tokens", "Prefill (one LLM forward, batch 1)"),
        ("e2e_ms", None, f"End to end: one image, {new_tokens} new tokens"),
    ]
    spans = []
    for ax, (key, x_key, title) in zip(axes, panels, strict=True):
        for data in results:
            rows = sorted(data["rows"], key=lambda r: r[x_key] if x_key else r["visual_tokens"]["mean"])
            if not rows:
                continue
            xs = [r[x_key] if x_key else r["visual_tokens"]["mean"] for r in rows]
            ys = [r[key] for r in rows]
            spans += ys
            (line,) = ax.plot(xs, ys, marker="o", label=device_label(data))
            near = 0.04 * (max(xs) - min(xs) or 1)
            for x, y, r in zip(xs, ys, rows, strict=True):
                # a label goes below its point when a neighbour (close in x) lies higher, else above
                higher = any(abs(x2 - x) <= near and y2 > y for x2, y2 in zip(xs, ys, strict=True))
                ax.annotate(
                    short_name(r["setting"]),
                    (x, y),
                    textcoords="offset points",
                    xytext=(4, -11 if higher else 5),
                    fontsize=7,
                    color=line.get_color(),
                )
        ax.set_title(title)
        ax.set_xlabel("visual tokens per image")
        ax.set_ylabel("ms")
        ax.grid(alpha=0.3)
    if spans and max(spans) / max(min(spans), 1e-9) > 30:
        for ax in axes:
            ax.set_yscale("log")
    if axes[0].lines:
        axes[0].legend(fontsize=8, loc="upper left")
    if any(d["config"]["llm_layers"] < d["config"]["llm_layers_full"] for d in results):
        fig.text(
            0.5,
            0.005,
            "Random weights. Lines marked 'LLM k/n layers' with k < n use a truncated language model.",
            ha="center",
            fontsize=8,
        )
    fig.tight_layout(rect=(0, 0.03, 1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("results", type=Path, nargs="+", help="bench_e2e.py JSON files (one per device)")
    parser.add_argument("--md", type=Path, default=None, help="markdown page to write")
    parser.add_argument(
        "--png",
        type=Path,
        default=None,
        help="plot to write (default with one results file: docs/images/efficiency_<device>.png)",
    )
    parser.add_argument("--no-png", action="store_true", help="write no plot")
    parser.add_argument("--inject", type=Path, default=None, help="markdown file with the efficiency markers")
    args = parser.parse_args(argv)
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    results = [load(path) for path in args.results]
    if args.md is not None:
        args.md.parent.mkdir(parents=True, exist_ok=True)
        args.md.write_text(markdown(results), encoding="utf-8")
        print(f"Wrote {args.md}")
    if args.inject is not None:
        inject(args.inject, markdown(results, title=False))
        print(f"Updated {args.inject}")
    if args.md is None and args.inject is None:
        print(markdown(results))
    png = args.png
    if png is None and not args.no_png:
        slug = "_".join(data["config"]["device_slug"] for data in results)
        png = Path(__file__).resolve().parents[1] / "docs" / "images" / f"efficiency_{slug}.png"
    if png is not None and not args.no_png:
        plot(results, png)
        print(f"Wrote {png}")


if __name__ == "__main__":
    main()
