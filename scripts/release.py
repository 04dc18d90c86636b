"""Release a trained checkpoint to the Hugging Face Hub with a model card (see ``llava/hub.py``).

    python scripts/release.py --model-path ./checkpoints/llava-v1.5-7b-prumerge-lora \\
        --model-base lmsys/vicuna-7b-v1.5 --results report.json --repo-id user/name --dry-run
"""

import sys

from llava.hub import main

if __name__ == "__main__":
    sys.exit(main(prog="scripts/release.py"))
