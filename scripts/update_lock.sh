#!/usr/bin/env bash
# Regenerates constraints.txt, the tested lock: the newest releases that resolve today (torch kept at
# its pin), for the README's install extras. Run the test suite in the new environment before
# committing the new lock, and raise pyproject.toml's lower bounds to the locked versions.
#
#   bash scripts/update_lock.sh [VENV_DIR]
set -euo pipefail
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${1:-$(mktemp -d)/lock-venv}
bash "$REPO_ROOT/scripts/newest_env.sh" "$VENV" dev,train,viz,demo,video
TORCH_PIN=$(grep -E '^torch==' "$REPO_ROOT/constraints.txt")
{
    sed -n '/^#/p' "$REPO_ROOT/constraints.txt" | sed '/^# Locked on /d'
    echo "# Locked on $(date -u +%Y-%m-%d) with Python $("$VENV/bin/python" -c 'import platform; print(platform.python_version())')."
    echo "$TORCH_PIN"
    "$VENV/bin/python" -m pip freeze --exclude-editable | grep -viE '^(torch|pip|setuptools|wheel)=='
} > "$REPO_ROOT/constraints.txt.new"
mv "$REPO_ROOT/constraints.txt.new" "$REPO_ROOT/constraints.txt"
echo "[update_lock] wrote constraints.txt ($(grep -c '==' "$REPO_ROOT/constraints.txt") pins) from $VENV"
