"""Tests of the roofline cost model ``llava.analysis`` (pure arithmetic, CPU, well under a second)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from llava.analysis import (
    DEVICES,
    LLM_PRESETS,
    estimate,
    format_schedule,
    mean_tokens,
    parse_device,
    parse_schedule,
    video_tokens,
)
from llava.analysis.__main__ import main

# PruMerge (arXiv 2403.15388) Table 2, V100: (TFLOPs, prefill ms, "total memory" GB, activation GB).
PAPER = {
    ("vicuna-7b", "fp16", 576): (9.3, 88.6, 23.3, 4.60),
    ("vicuna-7b", "fp16", 32): (0.91, 15.3, 13.7, 0.28),
    ("vicuna-7b", "int4", 576): (2.3, 143.1, 5.9, 1.20),
    ("vicuna-7b", "int4", 32): (0.28, 15.0, 3.5, 0.07),
    ("vicuna-13b", "fp16", 576): (18.2, 170.5, 41.6, 7.30),
    ("vicuna-13b", "fp16", 32): (1.80, 29.5, 26.6, 0.44),
    ("vicuna-13b", "int4", 576): (4.6, 294.9, 10.5, 1.80),
    ("vicuna-13b", "int4", 32): (0.45, 29.0, 6.8, 0.11),
}
COLUMNS = ("flops_fp16_equiv_tera", "prefill_ms", "memory_traffic_gb", "activation_memory_gb")
# The table's four columns all fit prompts of 700 tokens (unreduced) and 70 tokens (PruMerge) counted with
# LLM-Viewer's operator conventions (docs/Efficiency.md): 660 + 40 and 30 + 40 visual + text tokens.
PAPER_PROMPT = {576: (660, 40), 32: (30, 40)}


@pytest.mark.parametrize("key", sorted(PAPER))
def test_table2_rows_within_10_percent(key: tuple[str, str, int]) -> None:
    llm, precision, visual = key
    est = estimate(
        LLM_PRESETS[llm], DEVICES["v100"], precision, *PAPER_PROMPT[visual], convention="llm-viewer"
    ).as_dict()
    for column, paper in zip(COLUMNS, PAPER[key]):
        if key == ("vicuna-7b", "int4", 32) and column == "flops_fp16_equiv_tera":
            # Printed 0.28; every other INT4 row is exactly its FP16 row / 4 (0.91 / 4 = 0.23).
            paper = PAPER[("vicuna-7b", "fp16", 32)][0] / 4
        assert est[column] == pytest.approx(paper, rel=0.10), (key, column, est[column], paper)


def test_exact_convention_charges_the_swiglu_on_the_mlp_width() -> None:
    llm, dev = LLM_PRESETS["vicuna-7b"], DEVICES["v100"]
    exact = estimate(llm, dev, "fp16", 576, 40)
    viewer = estimate(llm, dev, "fp16", 576, 40, convention="llm-viewer")
    # Per token and layer the activation output is 11008 (exact) or 4096 (LLM-Viewer) elements of 2 bytes.
    diff = (exact.activation_memory_gb - viewer.activation_memory_gb) * 1e9
    assert diff == pytest.approx((11008 - 4096) * 2 * 616 * 32, rel=1e-9)
    assert exact.flops_tera > viewer.flops_tera
    with pytest.raises(ValueError, match="convention"):
        estimate(llm, dev, "fp16", 576, 40, convention="nonsense")


def test_prefill_reduction_factor_is_large() -> None:
    full = estimate(LLM_PRESETS["vicuna-7b"], DEVICES["v100"], "fp16", 576, 40)
    pm = estimate(LLM_PRESETS["vicuna-7b"], DEVICES["v100"], "fp16", 32, 40)
    assert full.flops_tera / pm.flops_tera > 8
    assert full.prefill_ms / pm.prefill_ms > 4.5


def test_json_output_parses(capsys: pytest.CaptureFixture[str]) -> None:
    argv = (
        "--llm vicuna-7b --device v100 --precision fp16 --visual-tokens 576 --text-tokens 40 --json".split()
    )
    assert main(argv) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1
    row = json.loads(lines[0])
    for key in ("flops_tera", "prefill_ms", "total_memory_gb", "activation_memory_gb"):
        assert row[key] > 0


def test_presets_give_one_row_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["visual_tokens"] for r in rows] == [576, 32, 144]


def test_help_documents_options() -> None:
    proc = subprocess.run([sys.executable, "-m", "llava.analysis", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    for option in (
        "--llm",
        "--device",
        "--device-spec",
        "--precision",
        "--visual-tokens",
        "--text-tokens",
        "--convention",
        "--json",
    ):
        assert option in proc.stdout


def test_custom_device(tmp_path, capsys: pytest.CaptureFixture[str]) -> None:
    dev = parse_device("toy:10:100")
    assert (dev.fp16_tflops, dev.bandwidth_gbps) == (10.0, 100.0)
    spec = tmp_path / "toy.json"
    spec.write_text(json.dumps({"name": "toy", "fp16_tflops": 10, "bandwidth_gbps": 100}))
    assert parse_device(str(spec)) == dev
    assert main(["--device-spec", "toy:10:100", "--json", "--reduction", "none"]) == 0
    slow = json.loads(capsys.readouterr().out)
    fast = estimate(LLM_PRESETS["vicuna-7b"], DEVICES["v100"], "fp16", 576, 40)
    assert slow["device"] == "toy" and slow["prefill_ms"] > 5 * fast.prefill_ms
    assert main(["--device", "nonsense"]) == 2


def test_config_json_llm(tmp_path) -> None:
    cfg = {
        "num_hidden_layers": 2,
        "hidden_size": 64,
        "intermediate_size": 128,
        "num_attention_heads": 4,
        "vocab_size": 100,
    }
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    assert main(["--llm", str(tmp_path), "--json"]) == 0


def test_flops_linear_in_tokens_at_small_n() -> None:
    llm, dev = LLM_PRESETS["vicuna-7b"], DEVICES["v100"]
    f = [estimate(llm, dev, "fp16", n, 0).flops_tera for n in (16, 32, 64)]
    assert (f[2] - f[1]) / (f[1] - f[0]) == pytest.approx(2.0, rel=0.02)


def test_decode_is_memory_bound_at_batch_1() -> None:
    est = estimate(LLM_PRESETS["vicuna-13b"], DEVICES["a100"], "fp16", 576, 40)
    assert est.decode_memory_ms > 10 * est.decode_compute_ms
    assert est.decode_ms_per_token == pytest.approx(est.decode_memory_ms, rel=0.01)


# --- per-layer schedules (FastV, ATP-LLaVA) and the video shape ----------------------------------------


def test_schedule_compact_form_round_trips_and_bad_forms_raise() -> None:
    counts = parse_schedule("576x4,106x10,81x10,19x8")
    assert len(counts) == 32 and counts[3:5] == [576, 106] and counts[-1] == 19
    assert mean_tokens(counts) == pytest.approx((4 * 576 + 10 * 106 + 10 * 81 + 8 * 19) / 32)
    assert format_schedule(counts) == "576x4,106x10,81x10,19x8"
    assert parse_schedule("576, 288x2") == [576, 288, 288] and format_schedule([576, 288, 288]) == "576,288x2"
    for bad in ("576x", "x4", "576x0", "-1x2", "a,b"):
        with pytest.raises(ValueError, match="schedule"):
            parse_schedule(bad)


@pytest.mark.parametrize("device", ["v100", "h100"])
def test_constant_schedule_equals_that_token_count(device: str) -> None:
    llm = LLM_PRESETS["vicuna-7b"]
    for n in (576, 144):
        flat = estimate(llm, DEVICES[device], "fp16", n, 40, batch=4).as_dict()
        scheduled = estimate(llm, DEVICES[device], "fp16", 0, 40, batch=4, schedule=[n] * 32).as_dict()
        assert scheduled.pop("schedule") == f"{n}x32" and flat.pop("schedule") is None
        assert scheduled == flat
    with pytest.raises(ValueError, match="32 layers"):
        estimate(llm, DEVICES[device], "fp16", schedule=[576] * 31)


def test_fastv_and_atp_schedules_cost_between_their_extremes(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--device", "h100", "--json", "--reduction", "none", "--fastv", "2:0.5"]
    assert (
        main([*args, "--schedule", "all=576x32", "atp=576x4,106x10,81x10,19x8", "--visual-tokens", "576"])
        == 0
    )
    rows = {r["reduction"]: r for r in map(json.loads, capsys.readouterr().out.strip().splitlines())}
    none, fastv, atp = rows["tokens=576"], rows["fastv K=2 R=0.5"], rows["atp"]
    for key in ("flops_tera", "prefill_ms", "kv_cache_gb", "memory_traffic_gb", "decode_ms_per_token"):
        assert rows["all"][key] == pytest.approx(none[key], rel=1e-12)  # all 576 = no reduction
        assert atp[key] < fastv[key] < none[key], key
    assert fastv["visual_tokens"] == 576 and fastv["schedule"] == "576x3,288x29"  # layers 0..K = 0..2
    assert fastv["mean_visual_tokens"] == (3 * 576 + 29 * 288) / 32
    # each layer is costed on its own tokens: more than at N̄ (attention is quadratic), less than at 576
    at_mean = estimate(
        LLM_PRESETS["vicuna-7b"], DEVICES["h100"], "fp16", round(atp["mean_visual_tokens"]), 40
    )
    assert at_mean.flops_tera < atp["flops_tera"] < 1.02 * at_mean.flops_tera
    ratio = (atp["mean_visual_tokens"] + 40) / (576 + 40)  # the KV cache is linear in each layer's tokens
    assert atp["kv_cache_gb"] == pytest.approx(none["kv_cache_gb"] * ratio, rel=1e-9)
    assert (
        main(["--schedule", "576x31"]) == 2
        and main(["--fastv", "40:0.5"]) == 2
        and main(["--fastv", "2"]) == 2
    )


def test_video_shape_presets_and_tower(capsys: pytest.CaptureFixture[str]) -> None:
    assert video_tokens(8, 257) == {"none": 2056, "prumerge": 272, "prumerge_plus": 528}
    assert main(["--frames", "8", "--tokens-per-frame", "257", "--json", "--fastv", "2:0.5"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert [r["visual_tokens"] for r in rows] == [2056, 272, 528, 2056]
    assert rows[3]["schedule"] == "2056x3,1028x29"
    clip_8_frames = rows[0]["clip_flops_tera"]
    assert clip_8_frames == pytest.approx(
        8 * estimate(LLM_PRESETS["vicuna-7b"], DEVICES["v100"], clip_tokens=257).clip_flops_tera
    )
    assert rows[0]["flops_tera"] > 3 * estimate(LLM_PRESETS["vicuna-7b"], DEVICES["v100"]).flops_tera
