"""The quickstart trains through the repository's scripts: installed without them, it says what is missing."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
from tests_support import REPO_ROOT

from llava.quickstart import pipeline


def test_a_clone_has_the_training_scripts():
    assert pipeline.SCRIPTS == REPO_ROOT / "scripts" / "v1_5"
    pipeline.check_training_scripts()


def test_a_missing_script_is_named_with_the_fix(tmp_path):
    scripts = tmp_path / "scripts" / "v1_5"
    with pytest.raises(pipeline.StageError) as err:
        pipeline.check_training_scripts(scripts)
    message = str(err.value)
    assert f"{scripts / 'pretrain.sh'} was not found next to the llava package" in message
    assert "clone of the repository" in message and "pip install -e ." in message


def test_the_run_stops_before_writing_anything(tmp_path, monkeypatch):
    monkeypatch.setattr(pipeline, "SCRIPTS", tmp_path / "absent")
    with pytest.raises(pipeline.StageError, match="not found next to the llava package"):
        pipeline.run_quickstart(tmp_path / "out", pipeline.PRESETS["reduced"], echo=lambda _: None)
    assert not (tmp_path / "out").exists()


def test_a_package_installed_without_the_repository_exits_with_the_message(tmp_path):
    """``llava`` copied alone into a site folder, as ``pip install`` (without ``-e``) leaves it."""
    site = tmp_path / "site-packages"
    shutil.copytree(REPO_ROOT / "llava", site / "llava", ignore=shutil.ignore_patterns("__pycache__"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "llava.quickstart",
            "--preset",
            "reduced",
            "--output-dir",
            str(tmp_path / "out"),
        ],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-2000:]
    missing = site / "scripts" / "v1_5" / "pretrain.sh"
    assert result.stderr.startswith(
        f"error: the quickstart trains through the repository's published scripts, and {missing}"
    )
    assert not (tmp_path / "out").exists()
