"""The test suite says what it did not check: skips for absent shared fixtures are counted in its summary."""

import os
import subprocess
import sys

from tests_support import REPO_ROOT


def test_skips_for_absent_shared_fixtures_are_counted_in_the_summary(tmp_path):
    env = {**os.environ, "LLAVA_SHARED_DIR": str(tmp_path / "no-shared")}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/model/test_prumerge_reference.py",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:]
    collected = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "--co",
            "-p",
            "no:cacheprovider",
            "tests/model/test_prumerge_reference.py",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    ).stdout.count("::")
    assert collected > 0
    line = f"{collected} test(s) skipped because they need the shared fixtures"
    assert line in result.stdout and str(tmp_path / "no-shared") in result.stdout
