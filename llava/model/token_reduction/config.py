"""Typed configuration of a visual-token reducer, stored in the model's ``config.json``.

The reduction a model was trained or evaluated with is part of the checkpoint: it is written to
``config.json`` as ``mm_token_reduction`` (a plain dict, see :meth:`ReductionConfig.to_dict`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

VARIANTS = ("reference", "paper")


def get_in_llm(method: str) -> bool:
    from llava.model.token_reduction.registry import get_reducer

    return get_reducer(method).in_llm


PLUS_FORMS = ("adaptive", "fixed")


@dataclass(frozen=True)
class ReductionConfig:
    """Which reducer runs on the vision tower's output, and its options.

    Attributes:
        method: a registered reducer name (``none``, ``prumerge``, ``prumerge_plus``, ``aits``,
            ``sequential``, ``spatial``); see :func:`llava.model.token_reduction.available_reducers`.
        variant: ``reference`` (the authors' released code, which the released PruMerge checkpoints
            expect) or ``paper`` (Algorithm 1 read literally).
        form: PruMerge+ only: ``adaptive`` (stride from the outlier count) or ``fixed`` (N/8 kept
            by attention plus N/8 spatial samples, the authors' training form).
        budget: a fixed number of output tokens per image. Replaces the IQR outlier count by the top
            tokens by class attention, so methods can be compared at equal budgets. ``None`` keeps
            each method's adaptive count. Required by ``sequential``; ``spatial`` takes it or ``grid``.
        ratio: a fixed share of the N tokens to keep, instead of ``budget`` (``budget = round(ratio * N)``,
            at least 1); see :meth:`for_tokens`.
        num_neighbors: neighbours merged into each kept token (32 in the paper and the code).
        iqr_scale: the outlier fence is ``Q3 + iqr_scale * (Q3 - Q1)``.
        grid: ``spatial`` only: rows and columns of the evenly spread grid, e.g. ``(5, 8)``.
        llm_layer: ``fastv`` only: the language-model layer K after which visual tokens are dropped.
    """

    method: str = "none"
    variant: str = "reference"
    form: str = "adaptive"
    budget: int | None = None
    ratio: float | None = None
    num_neighbors: int = 32
    iqr_scale: float = 1.5
    grid: tuple[int, int] | None = None
    llm_layer: int = 2

    def __post_init__(self) -> None:
        from llava.model.token_reduction.registry import get_reducer

        get_reducer(self.method)  # raises with the list of valid names
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown reduction variant {self.variant!r}; choose one of {list(VARIANTS)}.")
        if self.form not in PLUS_FORMS:
            raise ValueError(f"Unknown PruMerge+ form {self.form!r}; choose one of {list(PLUS_FORMS)}.")
        if self.form == "fixed" and self.method != "prumerge_plus":
            raise ValueError(
                f"The fixed form (reduction form 'fixed') is PruMerge+'s; the {self.method!r} reducer has none."
            )
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"Token budget must be a positive number of tokens, got {self.budget}.")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ValueError(f"Token ratio must be in (0, 1], got {self.ratio}.")
        if self.ratio is not None and self.budget is not None:
            raise ValueError("Give a token budget or a ratio, not both.")
        if self.num_neighbors < 0:
            raise ValueError(f"num_neighbors must be >= 0, got {self.num_neighbors}.")
        if self.grid is not None:
            grid = tuple(int(g) for g in self.grid)
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError(f"grid must be two positive integers (rows, cols), got {self.grid!r}.")
            object.__setattr__(self, "grid", grid)
        if self.method == "fastv" and self.budget is None and self.ratio is None:
            raise ValueError("The 'fastv' reducer needs a visual-token budget or ratio (e.g. ratio=0.5).")
        if self.llm_layer < 0:
            raise ValueError(f"llm_layer must be >= 0, got {self.llm_layer}.")
        if self.method == "sequential" and self.budget is None and self.ratio is None:
            raise ValueError("The 'sequential' reducer needs a token budget (e.g. budget=40).")
        if self.method == "spatial" and self.budget is None and self.ratio is None and self.grid is None:
            raise ValueError("The 'spatial' reducer needs a grid (e.g. grid=(5, 8)) or a token budget.")
        if self.method == "none" and (self.budget is not None or self.ratio is not None):
            raise ValueError(
                "The 'none' reducer keeps every token; use 'sequential' or another method for a budget."
            )

    @classmethod
    def from_value(cls, value: ReductionConfig | dict[str, Any] | str | None) -> ReductionConfig:
        """Builds a config from ``None`` (no reduction), a method name, a dict or a config."""
        if value is None:
            return cls()
        if isinstance(value, ReductionConfig):
            return value
        if isinstance(value, str):
            return cls(method=value)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise ValueError(
                f"Unknown token-reduction option(s) {unknown}; known options are {sorted(known)}."
            )
        return cls(**value)

    def replace(self, **changes: Any) -> ReductionConfig:
        """A copy with some fields changed (``None`` values are ignored).

        Changing the method drops the old method's ``grid``, and switching to ``none`` drops the budget,
        unless they are given again.
        """
        values = self.to_dict()
        method = changes.get("method")
        if method is not None and method != self.method:
            values["grid"] = None
            values["form"] = "adaptive"  # the fixed form is PruMerge+'s alone
            if method == "none":
                values["budget"] = values["ratio"] = None
        values.update({k: v for k, v in changes.items() if v is not None})
        return ReductionConfig.from_value(values)

    @property
    def in_llm(self) -> bool:
        """True for methods that act inside the language model (the tower keeps every token)."""
        return get_in_llm(self.method)

    def for_tokens(self, n: int) -> ReductionConfig:
        """This config for images of ``n`` tokens: a ``ratio`` becomes the equivalent ``budget``."""
        if self.ratio is None or get_in_llm(self.method):
            return self
        values = {**self.to_dict(), "ratio": None, "budget": max(round(self.ratio * n), 1)}
        return ReductionConfig.from_value(values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``config.json`` stores as ``mm_token_reduction``)."""
        out = asdict(self)
        if out["grid"] is not None:
            out["grid"] = list(out["grid"])
        return out

    def describe(self) -> str:
        """A short human-readable name, e.g. ``prumerge_plus/reference/adaptive``."""
        parts = [self.method]
        if self.method != "none":
            parts.append(self.variant)
        if self.method == "prumerge_plus":
            parts.append(self.form)
        if self.budget is not None:
            parts.append(f"budget={self.budget}")
        if self.ratio is not None:
            parts.append(f"ratio={self.ratio:g}")
        if self.grid is not None:
            parts.append(f"grid={self.grid[0]}x{self.grid[1]}")
        return "/".join(parts)
