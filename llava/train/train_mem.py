"""Training entry point with flash-attention 2 in the language model (upstream's ``train_mem.py``).

Uses ``flash_attention_2`` when the ``gpu`` extra (flash-attn) is installed, otherwise PyTorch's SDPA,
which is what ``llava/train/train.py`` uses; the flags are the same.
"""

import importlib.util
import logging
import os
import sys

from llava.train.train import main
from llava.train.zero import shutdown_distributed

if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if importlib.util.find_spec("flash_attn") is not None:
        attention = "flash_attention_2"
    else:
        logging.getLogger("llava.train").warning("flash-attn is not installed: using SDPA attention.")
        attention = "sdpa"
    main(sys.argv[1:], attn_implementation=attention)
    shutdown_distributed()  # after a successful run only: a failed rank must not wait for the others
