"""``benchmarks/gpu_check.sh --smoke``: the GPU check's code, run on the CPU at tiny sizes."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from tests_support import REPO_ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> tuple[dict, subprocess.CompletedProcess]:
    out = tmp_path_factory.mktemp("gpu_check") / "smoke.json"
    result = subprocess.run(
        ["bash", str(REPO_ROOT / "benchmarks" / "gpu_check.sh"), "--smoke", "--out", str(out)],
        env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert out.is_file(), result.stderr[-3000:]
    return json.loads(out.read_text()), result


def test_the_smoke_run_passes_every_section(smoke):
    results, process = smoke
    assert process.returncode == 0, (results["problems"], process.stdout[-3000:])
    assert results["problems"] == [] and results["smoke"] is True
    assert set(results["sections"]) == {"inference", "fastv_sdpa", "lora_zero2", "bench_e2e", "bench_atp"}
    assert all(section["ok"] for section in results["sections"].values())


def test_every_reducer_answers_the_same_batched_and_alone_in_float32(smoke):
    from llava.model.token_reduction import available_reducers

    rows = smoke[0]["sections"]["inference"]["float32"]
    assert sorted({key.split("/")[0] for key in rows}) == available_reducers()
    for key, row in rows.items():
        assert row["batched_equals_single"] and row["samples_equal"] == 3, key
        assert row["first_token_max_abs_logit_diff"] < 1e-3 * max(row["first_token_max_abs_logit"], 1.0), key
    assert set(smoke[0]["sections"]["inference"]) == {"float32", "bfloat16", "ok", "section_seconds"}


def test_fastv_runs_sdpa_and_prunes_the_later_cache(smoke):
    fastv = smoke[0]["sections"]["fastv_sdpa"]
    assert fastv["attn_implementation"] == "sdpa" and fastv["sdpa_calls"] == fastv["decoder_layers"]
    full, *later = fastv["cached_tokens_per_layer"]
    assert full == fastv["prompt_tokens"] and later and all(n < full for n in later)


def test_zero2_lora_steps_and_the_benchmark_ran(smoke):
    lora, bench = smoke[0]["sections"]["lora_zero2"], smoke[0]["sections"]["bench_e2e"]
    assert (
        lora["returncode"] == 0 and lora["steps"] == 4 and len(lora["losses"]) == 4 and lora["losses_finite"]
    )
    assert lora["adapter_saved"]
    rows = json.loads(Path(bench["json"]).read_text())["rows"]
    assert {row["key"] for row in rows} >= {"none", "prumerge", "prumerge_plus"}
    assert bench["video_visual_tokens"]["none"] == 2056 and bench["video_visual_tokens"]["prumerge"] == 272


def test_the_atp_benchmark_ran(smoke):
    atp = smoke[0]["sections"]["bench_atp"]
    assert atp["returncode"] == 0 and atp["json"]
    n_bar = atp["mean_visual_tokens"]
    assert set(n_bar) == {"none@None", "atp_keep_all@None", "atp@144.0", "fastv@144.0", "prumerge@144.0"}
    assert n_bar["none@None"] == 576 and abs(n_bar["prumerge@144.0"] - n_bar["atp@144.0"]) <= 0.5
