"""LLaVA-1.5 with PruMerge / PruMerge+ adaptive visual-token reduction.

Importing this package is cheap and changes no global state; the model classes live in
:mod:`llava.model` and are registered with transformers' Auto classes by
:func:`llava.model.register_auto_classes` (the loader calls it).
"""

__version__ = "0.1.0"
