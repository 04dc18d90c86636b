"""``benchmarks/bench_startup.py`` on a small synthetic mix (seconds): its steps run and its JSON says so."""

import json

from benchmarks import bench_startup


def test_startup_benchmark_runs_every_step(tmp_path):
    out = tmp_path / "startup.json"
    results = bench_startup.main(
        ["--samples", "300", "--work-dir", str(tmp_path / "work"), "--out", str(out)]
    )
    assert json.loads(out.read_text()) == results
    assert [s["step"].split(" ")[0] for s in results["steps"]] == ["dataset", "modality", "sampler:", "first"]
    checks = results["checks"]
    assert checks["samples"] == 300 and checks["order_is_a_permutation"]
    assert checks["first_batch_images"] in (0, 16)  # a global step is all image or all text samples
    assert results["config"]["with_images"] == round(300 * 625 / 665)
    assert all(s["peak_rss_mib"] > 0 and s["seconds"] >= 0 for s in results["steps"])
