"""Tests of ``benchmarks/bench_atp.py`` on the tiny preset (CPU, a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from benchmarks import bench_atp

TEXT_TOKENS = 40
TARGET = 144
LAYERS = 32
FASTV_K = 2


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """One run on the tiny preset: one text length, one N̄ target, one timed run of everything."""
    out = tmp_path_factory.mktemp("bench_atp") / "atp_tiny.json"
    args = [
        "--preset",
        "tiny",
        "--device",
        "cpu",
        "--text-tokens",
        str(TEXT_TOKENS),
        "--targets",
        str(TARGET),
    ]
    args += ["--calibration-steps", "4", "--repeats", "1", "--warmup", "0", "--module-repeats", "1"]
    args += ["--threads", "1", "--out", str(out)]  # tiny ops: extra threads only spin on a shared CPU
    return bench_atp.main(args), out


def rows_by_key(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["key"]: row for row in results["cases"][0]["rows"]}


def test_json_layout(tiny_run: tuple[dict[str, Any], Path]) -> None:
    results, out = tiny_run
    assert json.loads(out.read_text()) == json.loads(json.dumps(results))
    assert set(results) >= {"benchmark", "machine", "config", "cases", "total_runtime_s"}
    machine, cfg = results["machine"], results["config"]
    assert machine["device"] == "cpu" and machine["torch"] and "load_average_at_end" in machine
    assert cfg["preset"] == "tiny" and cfg["llm"]["num_hidden_layers"] == LAYERS
    assert cfg["atp_layers"] == [4, 14, 24] and cfg["repeats"] == 1 and cfg["notes"]
    (case,) = results["cases"]
    assert (case["text_tokens"], case["visual_tokens"]) == (TEXT_TOKENS, 576)
    assert case["sequence_length"] == 576 + TEXT_TOKENS
    assert [row["key"] for row in case["rows"]] == ["none", "atp_keep_all", "atp", "fastv", "prumerge"]
    for row in case["rows"]:
        assert row["prefill_ms"] > 0 and len(row["prefill_ms_all"]) == 1 and row["speedup_vs_none"] > 0
    assert "N̄" in bench_atp.format_table(results)


def test_mean_visual_tokens_is_the_mean_of_the_schedule(tiny_run: tuple[dict[str, Any], Path]) -> None:
    rows = rows_by_key(tiny_run[0])
    for row in rows.values():
        schedule = row["schedule"]
        assert len(schedule) == LAYERS
        assert row["mean_visual_tokens"] == pytest.approx(sum(schedule) / LAYERS, abs=1e-3)
        # every layer caches its visual tokens plus the 40 text tokens
        assert row["kv_cache_tokens_per_layer"] == [n + TEXT_TOKENS for n in schedule]
    assert rows["none"]["schedule"] == rows["atp_keep_all"]["schedule"] == [576] * LAYERS
    atp, fastv, prumerge = rows["atp"]["schedule"], rows["fastv"]["schedule"], rows["prumerge"]["schedule"]
    assert atp[:4] == [576] * 4 and all(a >= b for a, b in zip(atp, atp[1:]))
    assert len(set(atp[4:14])) == len(set(atp[14:24])) == len(set(atp[24:])) == 1  # one count per segment
    assert fastv[: FASTV_K + 1] == [576] * (FASTV_K + 1) and len(set(fastv[FASTV_K + 1 :])) == 1
    assert len(set(prumerge)) == 1 and prumerge[0] == rows["prumerge"]["prefill_visual_tokens"]
    # equal N̄ up to rounding one count: FastV's kept tokens change N̄ by 29/32 per token
    n_bar = rows["atp"]["mean_visual_tokens"]
    assert abs(rows["prumerge"]["mean_visual_tokens"] - n_bar) <= 0.5
    assert abs(rows["fastv"]["mean_visual_tokens"] - n_bar) <= 0.5
    assert rows["atp"]["target"] == TARGET and rows["atp"]["calibration"]
    assert rows["atp"]["mm_token_reduction"]["atp_redundancy_threshold"] == rows["atp"]["theta_r"]


def test_module_timings_are_positive(tiny_run: tuple[dict[str, Any], Path]) -> None:
    rows = rows_by_key(tiny_run[0])
    for key in ("atp_keep_all", "atp"):
        modules = rows[key]["modules"]
        assert [m["insertion_layer"] for m in modules] == [4, 14, 24]
        assert [m["scored_layer"] for m in modules] == [3, 13, 23]
        for module in modules:
            assert set(module["ms"]) == set(bench_atp.STEPS)
            assert all(ms > 0 for ms in module["ms"].values()), module["ms"]
            assert module["decoder_layer_ms"] > 0 and module["module_ms_fixed_thresholds"] > 0
            assert module["module_ms_with_predictor"] > module["module_ms_fixed_thresholds"]
            assert module["visual_tokens_kept"] <= module["visual_tokens_in"]
            assert module["sequence_length"] == module["visual_tokens_in"] + TEXT_TOKENS
    assert all(m["visual_tokens_kept"] == 576 for m in rows["atp_keep_all"]["modules"])
    # each module runs on what the one before kept, and its decision is the schedule's next segment
    atp = rows["atp"]
    kept = [m["visual_tokens_kept"] for m in atp["modules"]]
    assert [m["visual_tokens_in"] for m in atp["modules"]] == [576, *kept[:-1]]
    assert kept == [atp["schedule"][4], atp["schedule"][14], atp["schedule"][24]]


def test_helpers_and_defaults() -> None:
    assert bench_atp.fastv_kept(198, 2, 32, 576) == 159  # (3·576 + 29·159) / 32 = 198.1
    assert bench_atp.fastv_kept(144, 2, 32, 576) == 99
    assert bench_atp.fastv_kept(10, 2, 32, 576) == 1  # below FastV's floor: one token
    assert bench_atp.mean_tokens([576] * 4 + [144] * 28) == 198.0
    assert bench_atp.schedule_text([576] * 4 + [130] * 10 + [65] * 18) == "576x4 130x10 65x18"
    args = bench_atp.parse_args([])
    assert (args.preset, args.dtype, args.text_tokens, args.targets) == (
        "small",
        "float32",
        [40, 60],
        [198, 144],
    )
    assert args.out.name == "atp_cpu.json" and args.threads is None
    assert bench_atp.parse_args(["--preset", "tiny"]).out.name == "atp_cpu_tiny.json"
    with pytest.raises(SystemExit):
        bench_atp.parse_args(["--atp-layers", "14", "4"])
    with pytest.raises(SystemExit):
        bench_atp.parse_args(["--atp-layers", "4", "32"])
