"""Name → reducer registry.

A reducer is a pure tensor function ``fn(inputs, config) -> ReducedTokens`` registered with
:func:`register_reducer`. Its entry declares what the tower must compute for it (the class attention
and keys of the next layer, its values), the options of :class:`~llava.model.token_reduction.ReductionConfig`
it reads, a check of those options, and, for methods that act inside the language model, the class
that runs on the decoder layers' calls.

Every module of this package is imported on the first lookup, so a reducer registers itself by
living here: adding one touches its own module, its tests and one docs row. This module imports no
other module of the package (the config and the reducers import it).
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# (ReducerInputs, ReductionConfig) -> ReducedTokens; typed loosely so this module imports neither.
ReducerFn = Callable[[Any, Any], Any]
# (ReductionConfig) -> None, raising ValueError with the fix when the options do not suit the reducer.
OptionCheck = Callable[[Any], None]


@dataclass(frozen=True)
class Reducer:
    """A registered reducer.

    Attributes:
        name: the method name used in ``mm_token_reduction``, ``--token-reduction`` and Python.
        fn: the tensor function run on the tower's output (in-LLM methods keep every token here).
        needs_attention: the tower computes the class attention and keys of its next layer.
        description: one line for listings and UIs.
        needs_values: the tower also computes that layer's ``v_proj`` outputs.
        options: the :class:`ReductionConfig` fields the reducer reads besides ``method``; setting any
            other field to a non-default value is an error.
        check: validates a config of this method (e.g. that a budget is given), or None.
        in_llm_method: for methods inside the language model, ``in_llm_method(config)`` builds the
            object that the decoder-layer hooks run (see :mod:`llava.model.token_reduction.in_llm`).
    """

    name: str
    fn: ReducerFn
    needs_attention: bool
    description: str
    needs_values: bool = False
    options: frozenset[str] = frozenset()
    check: OptionCheck | None = None
    in_llm_method: Callable[[Any], Any] | None = None

    @property
    def in_llm(self) -> bool:
        """True for methods that act inside the language model (the tower keeps every token)."""
        return self.in_llm_method is not None


_REGISTRY: dict[str, Reducer] = {}
_PACKAGE = __name__.rpartition(".")[0]
_loaded = False


def register_reducer(
    name: str,
    *,
    needs_attention: bool,
    description: str,
    needs_values: bool = False,
    options: Iterable[str] = (),
    check: OptionCheck | None = None,
    in_llm_method: Callable[[Any], Any] | None = None,
) -> Callable[[ReducerFn], ReducerFn]:
    """Decorator adding ``fn`` to the registry under ``name`` (see :class:`Reducer` for the arguments).

    ``needs_values`` implies ``needs_attention``.
    """

    def wrap(fn: ReducerFn) -> ReducerFn:
        if name in _REGISTRY:
            raise ValueError(f"A reducer named {name!r} is already registered.")
        _REGISTRY[name] = Reducer(
            name=name,
            fn=fn,
            needs_attention=needs_attention or needs_values,
            description=description,
            needs_values=needs_values,
            options=frozenset(options),
            check=check,
            in_llm_method=in_llm_method,
        )
        return fn

    return wrap


def _load_package_modules() -> None:
    """Imports every module of this package once: the built-in reducers register themselves."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    for module in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{_PACKAGE}.{module.name}")


def available_reducers() -> list[str]:
    """The registered reducer names, sorted."""
    _load_package_modules()
    return sorted(_REGISTRY)


def get_reducer(name: str) -> Reducer:
    """The reducer registered as ``name``; an unknown name raises ``ValueError`` listing the valid ones."""
    _load_package_modules()
    try:
        return _REGISTRY[name]
    except KeyError:
        parts = [part.strip() for part in str(name).replace("+", ",").split(",")]
        if len(parts) > 1 and all(part in _REGISTRY for part in parts):
            raise ValueError(
                f"{name!r} names several token-reduction methods; one method runs per model (each reads "
                f"its own options), so choose one of: {', '.join(parts)}."
            ) from None
        raise ValueError(
            f"Unknown token-reduction method {name!r}; valid methods are: {', '.join(sorted(_REGISTRY))}."
        ) from None
