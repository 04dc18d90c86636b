"""Quick-start pipeline: a synthetic shapes dataset, a tiny LLaVA trained on it, and its evaluation.

Step 1 lives in :mod:`llava.quickstart.data` (:func:`~llava.quickstart.data.generate_dataset`).
"""

from llava.quickstart.data import DatasetPaths, generate_dataset

__all__ = ["DatasetPaths", "generate_dataset"]
