"""Typed configuration of a visual-token reducer, stored in the model's ``config.json``.

The reduction a model was trained or evaluated with is part of the checkpoint: it is written to
``config.json`` as ``mm_token_reduction`` (a plain dict, see :meth:`ReductionConfig.to_dict`).

Each field is declared once, with its command-line flag, parser and help (:class:`OptionSpec`); every
surface that sets a reduction (the command lines, the training arguments, lmms-eval's ``model_args``,
Cog and the demo) is generated from these declarations by :mod:`llava.model.token_reduction.args`.
Which fields a method reads, and what it requires of them, is declared by the method's registry entry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import MISSING, Field, asdict, dataclass, field, fields
from typing import Any

from llava.model.token_reduction.registry import available_reducers, get_reducer

VARIANTS = ("reference", "paper")
PLUS_FORMS = ("adaptive", "fixed")


def parse_grid(text: str) -> tuple[int, int]:
    """``"5x8"`` or ``"5,8"`` → ``(5, 8)``."""
    parts = text.lower().replace(",", "x").split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(f"A grid is two positive integers written ROWSxCOLS (e.g. 5x8), got {text!r}.")
    return int(parts[0]), int(parts[1])


def format_grid(grid: tuple[int, int]) -> str:
    """``(5, 8)`` → ``"5x8"`` (the inverse of :func:`parse_grid`)."""
    return f"{grid[0]}x{grid[1]}"


def parse_layers(text: str) -> tuple[int, ...]:
    """``"4,14,24"`` → ``(4, 14, 24)``."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise ValueError(
            f"Layers are non-negative integers separated by commas (e.g. 4,14,24), got {text!r}."
        )
    return tuple(int(p) for p in parts)


def format_layers(layers: tuple[int, ...]) -> str:
    """``(4, 14, 24)`` → ``"4,14,24"`` (the inverse of :func:`parse_layers`)."""
    return ",".join(str(layer) for layer in layers)


@dataclass(frozen=True)
class OptionSpec:
    """How one :class:`ReductionConfig` field appears on the command line and in ``model_args``.

    Attributes:
        flag: the long command-line flag without dashes (``token-reduction``, ``reduction-budget``);
            its underscore form (``reduction_budget``) is the training flag and the lmms-eval key.
        help: one line of help.
        parse: text → value (``int``, ``float``, :func:`parse_grid`, ...).
        format: value → text, the inverse of ``parse``, for options whose value is a tuple (``grid``,
            ``atp_layers``): such an option is a string training flag and a list in ``config.json``.
        choices: the valid values, when they are a fixed list.
        metavar: the placeholder shown in ``--help``.
        clear_with: the command-line value that clears the option back to its default (None: none).
        every_method: accepted by every method (``variant``: which reading of a method to run, recorded
            even where both readings agree), so never reset or refused as unused.
    """

    flag: str
    help: str
    parse: Callable[[str], Any] = str
    format: Callable[[Any], str] | None = None
    choices: tuple[str, ...] | None = None
    metavar: str | None = None
    clear_with: Any = None
    every_method: bool = False

    @property
    def arg_name(self) -> str:
        return self.flag.replace("-", "_")


def option(default: Any, flag: str, help: str, **spec: Any) -> Any:
    """A dataclass field declared together with its :class:`OptionSpec`."""
    return field(default=default, metadata={"option": OptionSpec(flag=flag, help=help, **spec)})


@dataclass(frozen=True)
class ReductionConfig:
    """Which reducer runs, and its options.

    Attributes:
        method: a registered reducer name; :func:`llava.model.token_reduction.available_reducers`
            lists them, ``docs/TokenReduction.md`` and ``docs/ComparisonReducers.md`` describe them.
        variant: ``reference`` (the authors' released code, which the released PruMerge checkpoints
            expect) or ``paper`` (Algorithm 1 read literally).
        form: PruMerge+ only: ``adaptive`` (stride from the outlier count) or ``fixed`` (N/8 kept
            by attention plus N/8 spatial samples, the authors' training form).
        budget: a fixed number of output tokens per image (for PruMerge, the top tokens by class
            attention instead of the IQR outlier count), so methods can be compared at equal budgets.
            ``None`` keeps each method's adaptive count; methods without one require a budget or ratio.
        ratio: a fixed share of the N tokens to keep, instead of ``budget`` (``budget = round(ratio * N)``,
            at least 1); see :meth:`for_tokens`.
        num_neighbors: neighbours merged into each kept token (32 in the paper and the code).
        iqr_scale: the outlier fence is ``Q3 + iqr_scale * (Q3 - Q1)``.
        iqr_group: consecutive rows that share one outlier fence (1: every image its own). The video
            tower sets it to the frame count for ``iqr_scope="video"``: the fence is computed over the
            pooled attention of a video's frames and each frame keeps ``outliers // iqr_group`` tokens,
            what the authors' outlier function computes when a video's frames form its batch.
        grid: ``spatial`` only: rows and columns of the evenly spread grid, e.g. ``(5, 8)``.
        llm_layer: in-LLM methods: the language-model layer K after which visual tokens are dropped.
        atp_layers: ATP only: the decoder layers whose input is pruned (0-based, increasing, >= 1); the
            module before layer l scores the tokens with layer l - 1's attention.
        atp_target_tokens: ATP only: the average visual-token count over all layers (N̄) that ATP
            training aims at (144 or 88 in the paper); recorded, and checked against the tower's count.
        atp_temperature: ATP only: the temperature of the soft masks used in training.
        atp_spatial_lambda: ATP only: λ of the spatial score ``1 - λ * sampling rate``.
        atp_redundancy_threshold, atp_spatial_threshold: ATP only: fixed thresholds θ_r, θ_s for every
            module (the training-free mode); required on a checkpoint without trained ATP modules, and
            taking precedence over them when given.

    A method reads only the fields its registry entry lists (:attr:`Reducer.options`); giving any other
    field a non-default value raises, so a flag never silently does nothing.
    """

    method: str = option("none", "token-reduction", "reducer name, e.g. none, prumerge", metavar="METHOD")
    variant: str = option(
        "reference",
        "reduction-variant",
        "reference (the authors' code) or paper",
        choices=VARIANTS,
        every_method=True,
    )
    form: str = option("adaptive", "reduction-form", "PruMerge+ only: adaptive or fixed", choices=PLUS_FORMS)
    budget: int | None = option(
        None,
        "reduction-budget",
        "fixed number of visual tokens per image; 0 = none (each method's adaptive count)",
        parse=int,
        metavar="N",
        clear_with=0,
    )
    ratio: float | None = option(
        None, "reduction-ratio", "share of the visual tokens to keep, in (0, 1]", parse=float, metavar="R"
    )
    num_neighbors: int = option(
        32, "reduction-num-neighbors", "neighbours merged into each kept token", parse=int, metavar="K"
    )
    iqr_scale: float = option(
        1.5, "reduction-iqr-scale", "outlier fence Q3 + s * (Q3 - Q1)", parse=float, metavar="S"
    )
    iqr_group: int = option(
        1,
        "reduction-iqr-group",
        "rows (video frames) sharing one IQR fence; 1 = per image",
        parse=int,
        metavar="G",
    )
    grid: tuple[int, int] | None = option(
        None,
        "reduction-grid",
        "spatial only: ROWSxCOLS of the grid, e.g. 5x8",
        parse=parse_grid,
        format=format_grid,
        metavar="RxC",
    )
    llm_layer: int = option(
        2,
        "reduction-llm-layer",
        "in-LLM methods: the LLM layer after which tokens drop",
        parse=int,
        metavar="K",
    )
    atp_layers: tuple[int, ...] = option(
        (4, 14, 24),
        "reduction-atp-layers",
        "ATP only: decoder layers whose input is pruned, e.g. 4,14,24",
        parse=parse_layers,
        format=format_layers,
        metavar="L1,L2,...",
    )
    atp_target_tokens: int | None = option(
        None,
        "reduction-atp-target-tokens",
        "ATP only: average visual tokens over all layers that training aims at (e.g. 144)",
        parse=int,
        metavar="N",
    )
    atp_temperature: float = option(
        0.1,
        "reduction-atp-temperature",
        "ATP only: soft-mask temperature (training)",
        parse=float,
        metavar="T",
    )
    atp_spatial_lambda: float = option(
        3.0,
        "reduction-atp-spatial-lambda",
        "ATP only: spatial score 1 - lambda * sampling rate",
        parse=float,
        metavar="L",
    )
    atp_redundancy_threshold: float | None = option(
        None,
        "reduction-atp-redundancy-threshold",
        "ATP only: fixed redundancy threshold (training-free mode)",
        parse=float,
        metavar="THETA",
    )
    atp_spatial_threshold: float | None = option(
        None,
        "reduction-atp-spatial-threshold",
        "ATP only: fixed spatial threshold (training-free mode)",
        parse=float,
        metavar="THETA",
    )

    def __post_init__(self) -> None:
        reducer = get_reducer(self.method)  # raises with the list of valid names
        if self.grid is not None:
            grid = tuple(int(g) for g in self.grid)
            if len(grid) != 2 or min(grid) < 1:
                raise ValueError(f"grid must be two positive integers (rows, cols), got {self.grid!r}.")
            object.__setattr__(self, "grid", grid)
        if not isinstance(self.atp_layers, tuple):  # a list from config.json
            object.__setattr__(self, "atp_layers", tuple(self.atp_layers))
        self._check_values()
        if reducer.check is not None:
            reducer.check(self)
        self._check_unused(reducer.options)

    def _check_values(self) -> None:
        """Checks that hold whatever the method."""
        if self.variant not in VARIANTS:
            raise ValueError(f"Unknown reduction variant {self.variant!r}; choose one of {list(VARIANTS)}.")
        if self.form not in PLUS_FORMS:
            raise ValueError(f"Unknown PruMerge+ form {self.form!r}; choose one of {list(PLUS_FORMS)}.")
        if self.budget is not None and self.budget < 1:
            raise ValueError(f"Token budget must be a positive number of tokens, got {self.budget}.")
        if self.ratio is not None and not 0 < self.ratio <= 1:
            raise ValueError(f"Token ratio must be in (0, 1], got {self.ratio}.")
        if self.ratio is not None and self.budget is not None:
            raise ValueError("Give a token budget or a ratio, not both.")
        if self.iqr_group < 1:
            raise ValueError(f"iqr_group must be >= 1 (rows sharing one IQR fence), got {self.iqr_group}.")
        if self.num_neighbors < 0:
            raise ValueError(f"num_neighbors must be >= 0, got {self.num_neighbors}.")
        if self.llm_layer < 0:
            raise ValueError(f"llm_layer must be >= 0, got {self.llm_layer}.")

    def _check_unused(self, used: frozenset[str]) -> None:
        """A field the method does not read must keep its default."""
        for f in option_fields():
            spec = f.metadata["option"]
            if (
                f.name == "method"
                or spec.every_method
                or f.name in used
                or getattr(self, f.name) == f.default
            ):
                continue
            owners = [name for name in available_reducers() if f.name in get_reducer(name).options]
            raise ValueError(
                f"{f.name}={getattr(self, f.name)!r} (--{spec.flag}) is an option of "
                f"{', '.join(repr(o) for o in owners) or 'other reducers'}; the {self.method!r} reducer has "
                f"none (it reads: {', '.join(sorted(used)) or 'no options'}). One reduction method runs per "
                "model: set the options of the chosen method only."
            )

    def require_budget_or_ratio(self, example: str) -> None:
        """For methods with no adaptive count: raises unless a budget or ratio is given."""
        if self.budget is None and self.ratio is None:
            raise ValueError(
                f"The {self.method!r} reducer needs a token budget or ratio (e.g. {example}); "
                "it has no adaptive count."
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

    def replace(self, reset: Iterable[str] = (), **changes: Any) -> ReductionConfig:
        """A copy with some fields changed (``None`` values are ignored) and the ``reset`` ones at their defaults.

        Changing the method resets the options the new method does not read, unless they are given
        again: e.g. the recorded ``grid`` of ``spatial`` is dropped on a switch to ``prumerge_plus``, and
        a switch to ``none`` drops the budget.
        """
        values = self.to_dict()
        values.update({f.name: f.default for f in option_fields() if f.name in set(reset)})
        method = changes.get("method")
        if method is not None and method != self.method:
            used = get_reducer(method).options
            for f in option_fields():
                if f.name != "method" and not f.metadata["option"].every_method and f.name not in used:
                    values[f.name] = f.default
        values.update({k: v for k, v in changes.items() if v is not None})
        return ReductionConfig.from_value(values)

    @property
    def in_llm(self) -> bool:
        """True for methods that act inside the language model (the tower keeps every token)."""
        return get_reducer(self.method).in_llm

    def for_tokens(self, n: int) -> ReductionConfig:
        """This config for images of ``n`` tokens: a ``ratio`` becomes the equivalent ``budget``."""
        if self.ratio is None or self.in_llm:
            return self
        values = {**self.to_dict(), "ratio": None, "budget": max(round(self.ratio * n), 1)}
        return ReductionConfig.from_value(values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict (what ``config.json`` stores as ``mm_token_reduction``)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def describe(self) -> str:
        """A short human-readable name, e.g. ``prumerge_plus/reference/adaptive``."""
        parts = [self.method]
        if self.method != "none":
            parts.append(self.variant)
        if "form" in get_reducer(self.method).options:
            parts.append(self.form)
        if self.budget is not None:
            parts.append(f"budget={self.budget}")
        if self.ratio is not None:
            parts.append(f"ratio={self.ratio:g}")
        if self.iqr_group != 1:
            parts.append(f"iqr_group={self.iqr_group}")
        if self.grid is not None:
            parts.append(f"grid={self.grid[0]}x{self.grid[1]}")
        if "atp_layers" in get_reducer(self.method).options:
            parts.append(f"layers={format_layers(self.atp_layers)}")
            if self.atp_redundancy_threshold is not None and self.atp_spatial_threshold is not None:
                parts.append(f"theta={self.atp_redundancy_threshold:g},{self.atp_spatial_threshold:g}")
        return "/".join(parts)


def option_fields() -> list[Field]:
    """The fields of :class:`ReductionConfig`, each with its :class:`OptionSpec` in ``metadata["option"]``."""
    return [f for f in fields(ReductionConfig) if f.default is not MISSING]
