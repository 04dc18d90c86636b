"""Quick-start pipeline: a synthetic shapes dataset, a tiny LLaVA trained on it, and its evaluation.

:mod:`llava.quickstart.data` writes the dataset, :mod:`llava.quickstart.tower` pretrains the vision tower
and :mod:`llava.quickstart.pipeline` runs every stage (``python -m llava.quickstart``).
"""

from llava.quickstart.data import DatasetPaths, generate_dataset

__all__ = ["DatasetPaths", "generate_dataset"]
