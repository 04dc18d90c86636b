"""Tests of ``benchmarks/bench_e2e.py`` and ``benchmarks/render_efficiency.py`` on the tiny shape (CPU, seconds)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import bench_e2e, render_efficiency
from llava.analysis import DEVICES, LLM_PRESETS, estimate

BUDGETS = (64, 128, 192)
TEXT_TOKENS = 40
NEW_TOKENS = 32


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One benchmark run on the tiny shape: batch sizes 1 and 2, every setting."""
    out = tmp_path_factory.mktemp("bench_e2e") / "tiny.json"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny ops: extra threads only spin, and slow down badly on a shared CPU
    try:
        results = bench_e2e.main(
            [
                "--shape",
                "tiny",
                "--device",
                "cpu",
                "--batch-sizes",
                "1",
                "2",
                "--repeats",
                "2",
                "--warmup",
                "0",
                "--overhead-batch",
                "2",
                "--reduce-repeats",
                "2",
                "--new-tokens",
                str(NEW_TOKENS),
                "--text-tokens",
                str(TEXT_TOKENS),
                "--out",
                str(out),
            ]
        )
    finally:
        torch.set_num_threads(threads)
    return results, out


def rows_by_key(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in results["rows"]}


def test_json_layout(tiny_run: tuple[dict[str, Any], Path]) -> None:
    results, out = tiny_run
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert set(results) >= {"machine", "config", "rows", "video_rows", "total_runtime_s"}
    assert "load_average_1_5_15min" in results["machine"] and results["machine"]["device"] == "cpu"
    cfg = results["config"]
    assert cfg["llm_layers"] == cfg["llm_layers_full"] == 2
    assert cfg["device_slug"] == "cpu" and cfg["batch_sizes"] == [1, 2]
    assert not any("TRUNCATED" in note for note in cfg["notes"])
    keys = ["none", "prumerge", "prumerge_plus", *(f"prumerge_b{b}" for b in BUDGETS)]
    assert [row["key"] for row in results["rows"]] == keys
    assert results["total_runtime_s"] > 0


def test_visual_tokens(tiny_run: tuple[dict[str, Any], Path]) -> None:
    rows = rows_by_key(tiny_run[0])
    assert rows["none"]["visual_tokens"] == {"mean": 576.0, "min": 576, "max": 576}
    assert rows["prumerge"]["visual_tokens"]["max"] < 576
    assert rows["prumerge_plus"]["visual_tokens"]["max"] < 576
    # PruMerge+ adds spatially sampled tokens to PruMerge's outliers
    assert rows["prumerge_plus"]["visual_tokens"]["mean"] > rows["prumerge"]["visual_tokens"]["mean"]
    for budget in BUDGETS:
        row = rows[f"prumerge_b{budget}"]
        assert row["visual_tokens"]["min"] == row["visual_tokens"]["max"] == budget
        assert row["prefill_visual_tokens"] == budget
        assert row["mm_token_reduction"]["budget"] == budget
    for row in rows.values():
        assert row["prefill_text_tokens"] == TEXT_TOKENS
        assert row["prefill_tokens"] == row["prefill_visual_tokens"] + TEXT_TOKENS


def test_video_case_runs_2056_tokens_and_the_per_frame_reductions(
    tiny_run: tuple[dict[str, Any], Path],
) -> None:
    results = tiny_run[0]
    video = results["config"]["video"]
    assert (video["frames"], video["grid"], video["visual_tokens_full"]) == (8, [16, 16], 2056)
    assert "synthetic" in video["inputs"] and any("SYNTHETIC" in note for note in results["config"]["notes"])
    rows = {row["key"]: row for row in results["video_rows"]}
    assert list(rows) == ["none", "prumerge", "prumerge_plus"]
    # Video-LLaVA-7B: 8 frames x (CLS + 256 patches); PruMerge 8 x (1 + 33) = 272; PruMerge+ at most 8 x (1 + 65)
    assert rows["none"]["visual_tokens"] == 2056 and rows["none"]["visual_tokens_per_frame"] == [257] * 8
    assert (
        rows["prumerge"]["visual_tokens"] == 272 and rows["prumerge"]["visual_tokens_per_frame"] == [34] * 8
    )
    assert rows["prumerge"]["mm_token_reduction"]["budget"] == 33
    plus = rows["prumerge_plus"]
    assert plus["mm_token_reduction"]["form"] == "fixed"
    assert 272 < plus["visual_tokens"] <= 528 and all(34 < n <= 66 for n in plus["visual_tokens_per_frame"])
    assert plus["visual_tokens"] == sum(plus["visual_tokens_per_frame"])
    for row in rows.values():
        assert row["frames"] == 8 and row["visual_tokens_full"] == 2056
        assert row["prefill_tokens"] == row["visual_tokens"] + TEXT_TOKENS
        assert row["prefill_ms"] > 0 and len(row["prefill_ms_all"]) == 2 and row["peak_memory_mib"] > 0
        assert row["analytical"]["visual_tokens"] == row["visual_tokens"]
    gflop = {key: row["analytical"]["measured_llm_prefill_gflop"] for key, row in rows.items()}
    assert gflop["none"] > gflop["prumerge_plus"] > gflop["prumerge"]
    assert "Video: 8 frames x 257 tokens" in bench_e2e.format_table(results)


def test_video_only_run_has_its_own_file() -> None:
    args = bench_e2e.parse_args(["--cases", "video"])
    assert args.cases == ["video"] and args.out.name == "cpu_video.json"
    assert bench_e2e.parse_args(["--cases", "video", "image"]).cases == ["image", "video"]
    assert bench_e2e.video_prompt([1, 5, bench_e2e.IMAGE_TOKEN_INDEX, 7], 3) == [1, 5, *[-200] * 3, 7]


def test_timings_and_generation(tiny_run: tuple[dict[str, Any], Path]) -> None:
    for row in tiny_run[0]["rows"]:
        assert row["new_tokens_generated"] == [NEW_TOKENS]
        assert min(row["llm_forwards_per_generate"]) >= NEW_TOKENS
        assert 0 < row["tower_reduce_ms"] < row["e2e_ms"]
        assert 0 < row["generate_ms"] < row["e2e_ms"]
        assert row["prefill_ms"] > 0 and row["decode_ms_per_token"] > 0
        assert len(row["e2e_ms_all"]) == 2 and len(row["prefill_ms_all"]) == 2
        assert row["peak_memory_mib"] > 0
        overhead = row["reducer_overhead"]
        assert overhead["batch_size"] == 2 and overhead["tower_none_ms"] > 0 and overhead["pct_of_tower"] >= 0
        analytical = row["analytical"]
        # no roofline device matches a CPU: FLOPs only
        assert analytical["device"] is None and analytical["prefill_ms"] is None
        assert analytical["visual_tokens"] == row["prefill_visual_tokens"]
        assert analytical["measured_llm_prefill_gflop"] > 0


def test_throughput_and_greedy_comparison(tiny_run: tuple[dict[str, Any], Path]) -> None:
    rows = rows_by_key(tiny_run[0])
    for row in rows.values():
        tput = row["throughput"]
        assert [t["batch_size"] for t in tput] == [1, 2]
        for entry in tput:
            assert entry["images_per_s"] > 0
            assert isinstance(entry["greedy_identical_to_batch1"], bool)
            assert 0 <= entry["mismatched_images"] <= entry["batch_size"]
            assert entry["greedy_identical_to_batch1"] == (entry["mismatched_images"] == 0)
            assert entry["greedy_identical_to_batch1"], (row["key"], entry)  # float32: batched = batch 1
        batch2 = tput[1]
        # the padded length holds the longest spliced prompt of the batch
        assert batch2["padded_length"] >= row["prefill_tokens"]
    assert rows["none"]["prefill_tokens"] > rows["prumerge"]["prefill_tokens"]
    gflop = {key: row["analytical"]["measured_llm_prefill_gflop"] for key, row in rows.items()}
    assert gflop["none"] > gflop["prumerge_b192"] > gflop["prumerge_b64"]


def test_render_table_png_and_inject(tiny_run: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    _, out = tiny_run
    md, png, readme = tmp_path / "measured.md", tmp_path / "plot.png", tmp_path / "README.md"
    readme.write_text(
        "# Title\n\nbefore\n\n"
        f"{render_efficiency.START_MARKER}\nold text\n{render_efficiency.END_MARKER}\n\nafter\n"
    )
    args = [str(out), "--md", str(md), "--png", str(png), "--inject", str(readme)]
    render_efficiency.main(args)
    text = md.read_text()
    assert "| setting | visual tokens | tower + reduce ms | prefill ms | decode ms/token | e2e ms |" in text
    assert "img/s @1 | img/s @2" in text and "roofline prefill ms" in text
    table_rows = [line for line in text.splitlines() if line.startswith("| `")]
    assert len(table_rows) == 6
    assert table_rows[0].startswith("| `none` | 576 |")
    assert any(line.startswith("| `prumerge b=128` | 128 |") for line in table_rows)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    injected = readme.read_text()
    assert "old text" not in injected and injected.count("| `none` | 576 |") == 1
    assert injected.startswith("# Title\n\nbefore\n\n") and injected.endswith("\n\nafter\n")
    render_efficiency.main([*args[:1], "--no-png", "--inject", str(readme)])  # idempotent
    assert readme.read_text() == injected


def test_truncated_table_is_flagged(tiny_run: tuple[dict[str, Any], Path]) -> None:
    data = json.loads(json.dumps(tiny_run[0]))
    data["config"]["llm_layers_full"] = 32
    data["_path"] = "x.json"
    assert "Truncated language model: 2 of 32 decoder layers" in render_efficiency.table(data)


def test_inject_needs_markers(tmp_path: Path) -> None:
    path = tmp_path / "doc.md"
    path.write_text("no markers here\n")
    with pytest.raises(ValueError, match="markers"):
        render_efficiency.inject(path, "table")


def test_gpu_names_and_roofline_device() -> None:
    assert bench_e2e.gpu_slug("NVIDIA H100 80GB HBM3") == "h100"
    assert bench_e2e.gpu_slug("NVIDIA H200") == "h200"
    assert bench_e2e.gpu_slug("NVIDIA A100-SXM4-80GB") == "a100"
    assert bench_e2e.gpu_slug("NVIDIA GeForce RTX 4090") == "nvidia_geforce_rtx_4090"
    specs = {"full": LLM_PRESETS["vicuna-7b"], "measured": LLM_PRESETS["vicuna-7b"]}
    got = bench_e2e.analytical(specs, 576, 40, argparse.Namespace(slug="h100", shape="7b"))
    want = estimate(LLM_PRESETS["vicuna-7b"], DEVICES["h100"], "fp16", 576, 40, 1)
    assert got["device"] == "h100" and got["prefill_ms"] == pytest.approx(want.prefill_ms, rel=1e-3)
    assert got["clip_ms"] == pytest.approx(want.clip_ms, rel=1e-3)


def test_cpu_defaults() -> None:
    args = bench_e2e.parse_args([])
    assert (args.shape, args.dtype, args.llm_layers, args.batch_sizes) == ("7b", "float32", 1, [1, 4])
    assert args.out.name == "cpu.json" and args.overhead_batch == 4 and args.cases == ["image", "video"]
    assert args.methods == [
        "none",
        "prumerge",
        "prumerge_plus",
        "prumerge_b64",
        "prumerge_b128",
        "prumerge_b192",
    ]
    assert bench_e2e.parse_args(["--shape", "13b"]).out.name == "cpu_13b.json"
    with pytest.raises(SystemExit):
        bench_e2e.parse_args(["--methods", "fastv"])
    config = bench_e2e.llava_config("7b", 32)
    assert abs(bench_e2e.parameter_count(config) / 1e9 - 7.06) < 0.05  # Vicuna-7B + CLIP-L + projector


def test_skipped_run_renders_note(tiny_run: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    data = json.loads(json.dumps(tiny_run[0]))
    data["rows"], data["skipped"] = [], "skipped: the weights need 26.0 GiB"
    path = tmp_path / "skipped.json"
    path.write_text(json.dumps(data))
    md = tmp_path / "skipped.md"
    render_efficiency.main([str(path), "--md", str(md), "--png", str(tmp_path / "skipped.png")])
    text = md.read_text()
    assert "Not (fully) measured: skipped: the weights need 26.0 GiB" in text and "| `none`" not in text
    assert "skipped: the weights need" in bench_e2e.format_table(data)
