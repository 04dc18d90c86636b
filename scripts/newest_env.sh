#!/usr/bin/env bash
# Builds a virtual environment with the newest releases of every dependency (only torch pinned, to its
# CPU build where that is what the machine's package index serves) and installs this project into it.
#
#   bash scripts/newest_env.sh DIR [EXTRAS]      # EXTRAS default: dev,train
#
# Used by .ci/run (the newest-releases test run) and by scripts/update_lock.sh (to regenerate
# constraints.txt). Prints the resolved versions of the stack at the end.
set -euo pipefail
VENV=${1:?usage: bash scripts/newest_env.sh DIR [EXTRAS]}
EXTRAS=${2:-dev,train}
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TORCH_PIN=$(grep -E '^torch==' "$REPO_ROOT/constraints.txt")

python3 -m venv "$VENV"
ONLY_TORCH=$(mktemp)
echo "$TORCH_PIN" > "$ONLY_TORCH"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q -c "$ONLY_TORCH" -e "$REPO_ROOT[$EXTRAS]"
rm -f "$ONLY_TORCH"
"$VENV/bin/python" - <<'PY'
from importlib.metadata import PackageNotFoundError, version

names = ["torch", "transformers", "tokenizers", "accelerate", "peft", "deepspeed", "datasets", "huggingface_hub"]
found = []
for name in names:
    try:
        found.append(f"{name} {version(name)}")
    except PackageNotFoundError:
        pass
print("[newest_env] " + ", ".join(found))
PY
