"""Name → reducer registry.

A reducer is a pure tensor function ``fn(inputs, config) -> ReducedTokens``; its registry entry
says whether it needs the class attention and keys of the tower's last layer (if none does, that
layer is never run).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from llava.model.token_reduction.config import ReductionConfig
    from llava.model.token_reduction.reducers import ReducedTokens, ReducerInputs

ReducerFn = Callable[["ReducerInputs", "ReductionConfig"], "ReducedTokens"]


@dataclass(frozen=True)
class Reducer:
    """A registered reducer."""

    name: str
    fn: ReducerFn
    needs_attention: bool
    description: str
    needs_values: bool = False
    in_llm: bool = False


_REGISTRY: dict[str, Reducer] = {}


def register_reducer(
    name: str, *, needs_attention: bool, description: str, needs_values: bool = False, in_llm: bool = False
) -> Callable[[ReducerFn], ReducerFn]:
    """Decorator adding ``fn`` to the registry under ``name``.

    ``needs_attention``: the reducer reads the class attention and keys of the tower's next layer;
    ``needs_values``: it also reads that layer's ``v_proj`` outputs (implies ``needs_attention``);
    ``in_llm``: the tower part keeps every token and the language model does the reduction.
    """

    def wrap(fn: ReducerFn) -> ReducerFn:
        if name in _REGISTRY:
            raise ValueError(f"A reducer named {name!r} is already registered.")
        _REGISTRY[name] = Reducer(
            name, fn, needs_attention or needs_values, description, needs_values, in_llm
        )
        return fn

    return wrap


BUILTIN_MODULES = (
    "llava.model.token_reduction.reducers",
    "llava.model.token_reduction.unimodal",  # ToMe, EViT, ATS
    "llava.model.token_reduction.prellm",  # VisionZip, DivPrune
    "llava.model.fastv",  # FastV (in the language model)
)


def _ensure_builtins() -> None:
    # The built-in reducers register themselves when their modules are imported.
    import importlib
    import importlib.util

    for module in BUILTIN_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module)


def available_reducers() -> list[str]:
    """The registered reducer names, sorted."""
    _ensure_builtins()
    return sorted(_REGISTRY)


def get_reducer(name: str) -> Reducer:
    """The reducer registered as ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    _ensure_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(
            f"Unknown token-reduction method {name!r}; valid methods are: {', '.join(sorted(_REGISTRY))}."
        ) from None
