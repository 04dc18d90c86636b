"""Visual-token reduction: PruMerge, PruMerge+ and the other reducers behind one registry.

Each reducer lives in one module of this package and registers itself (:func:`register_reducer`) with
the options it reads and how they are checked; :class:`ReductionConfig` declares every option once, and
:mod:`llava.model.token_reduction.args` derives the command-line and other surfaces from it.
"""

from llava.model.token_reduction.attention import class_attention
from llava.model.token_reduction.base import (
    ReducedTokens,
    ReducerInputs,
    descending_rank,
    outlier_count,
)
from llava.model.token_reduction.config import ReductionConfig
from llava.model.token_reduction.registry import Reducer, available_reducers, get_reducer, register_reducer

__all__ = [
    "ReducedTokens",
    "Reducer",
    "ReducerInputs",
    "ReductionConfig",
    "available_reducers",
    "class_attention",
    "descending_rank",
    "get_reducer",
    "outlier_count",
    "register_reducer",
    "reduce",
]


def reduce(inputs: ReducerInputs, config: ReductionConfig) -> ReducedTokens:
    """Runs the reducer named by ``config.method`` on ``inputs`` (a ``ratio`` is resolved against N)."""
    return get_reducer(config.method).fn(inputs, config.for_tokens(inputs.features.shape[1]))
