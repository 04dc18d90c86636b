"""Upstream LLaVA's import path of the loader: ``from llava.model.builder import load_pretrained_model``.

The loader lives in :mod:`llava.model.loader` ("builder" names constructors elsewhere in this package:
``build_vision_tower``, ``build_vision_projector``); this module keeps upstream's path working.
"""

from llava.model.loader import KNOWN_REDUCTIONS, LoadedModel, checkpoint_kind, load_pretrained_model

__all__ = ["KNOWN_REDUCTIONS", "LoadedModel", "checkpoint_kind", "load_pretrained_model"]
