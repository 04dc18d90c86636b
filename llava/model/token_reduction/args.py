"""Every surface that sets a token reduction, generated from :class:`ReductionConfig`'s declared options.

- :func:`add_reduction_args`: the command-line flags of the CLI, the eval runners, the demo and the
  visualiser (``--token-reduction``, ``--reduction-budget``, ... one per option);
- :data:`ReductionArguments`: the same options as training flags for ``HfArgumentParser``
  (``--token_reduction``, ``--reduction_budget``, ...);
- :func:`reduction_changes`: the options given on a command line or in lmms-eval's ``model_args``
  (strings parsed by each option's own parser), as changes to a checkpoint's recorded reduction;
- :func:`apply_changes`: those changes applied (what ``load_pretrained_model(reduction_changes=...)`` runs).
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import field, make_dataclass
from typing import Any

from llava.model.token_reduction.config import OptionSpec, ReductionConfig, option_fields
from llava.model.token_reduction.registry import available_reducers, get_reducer

CLEAR = object()  # a change that resets an option to its default (``--reduction-budget 0``)


def option_specs() -> dict[str, OptionSpec]:
    """``{field name: OptionSpec}`` of every reduction option, in declaration order."""
    return {f.name: f.metadata["option"] for f in option_fields()}


def add_reduction_args(parser: argparse.ArgumentParser) -> None:
    """Adds one flag per reduction option (default: keep what the checkpoint records)."""
    group = parser.add_argument_group("token reduction (overrides the checkpoint's mm_token_reduction)")
    for name, spec in option_specs().items():
        group.add_argument(
            f"--{spec.flag}",
            dest=spec.arg_name,
            default=None,
            type=_argparse_type(spec),
            choices=spec.choices,
            metavar=spec.metavar,
            help=f"one of: {', '.join(available_reducers())}" if name == "method" else spec.help,
        )


def _argparse_type(spec: OptionSpec):
    def parse(text: str) -> Any:
        try:
            return spec.parse(text)
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    parse.__name__ = getattr(spec.parse, "__name__", "value")  # argparse names it in "invalid ... value"
    return parse


def reduction_changes(values: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    """The reduction options given in ``values``, keyed by :class:`ReductionConfig` field.

    ``values`` is an ``argparse`` namespace from :func:`add_reduction_args` or a mapping keyed by the
    options' underscore flag names (``token_reduction``, ``reduction_budget``, ...), e.g. lmms-eval's
    ``model_args``; strings are parsed by each option's parser (a bad value raises ``ValueError`` naming
    the key). Options absent or None are not changes; an option's ``clear_with`` value (``budget`` 0)
    becomes :data:`CLEAR`.
    """
    given = vars(values) if isinstance(values, argparse.Namespace) else dict(values)
    changes: dict[str, Any] = {}
    for name, spec in option_specs().items():
        value = given.get(spec.arg_name)
        if value is None:
            continue
        if isinstance(value, str) and spec.parse is not str:
            try:
                value = spec.parse(value)
            except ValueError as err:
                raise ValueError(f"{spec.arg_name}={value!r} is not a valid value: {err}") from None
        if spec.clear_with is not None and value == spec.clear_with:
            value = CLEAR
        changes[name] = value
    return changes


def check_reduction_args(args: argparse.Namespace) -> None:
    """Fails on reduction flags that are wrong whatever the checkpoint records (run before loading it):
    an unknown method, a negative budget, a ratio outside (0, 1]."""
    changes = reduction_changes(args)
    if "method" in changes:
        get_reducer(changes["method"])  # an unknown name raises, listing the valid ones
    budget, ratio = changes.get("budget"), changes.get("ratio")
    if isinstance(budget, int) and budget < 0:
        raise ValueError(f"--reduction-budget must be >= 0 (0 = no budget), got {budget}.")
    if isinstance(ratio, float) and not 0 < ratio <= 1:
        raise ValueError(f"--reduction-ratio must be in (0, 1], got {ratio}.")


def reduction_keys() -> set[str]:
    """The keys :func:`reduction_changes` reads from a mapping (``token_reduction``, ``reduction_*``)."""
    return {spec.arg_name for spec in option_specs().values()}


def apply_changes(recorded: ReductionConfig, changes: Mapping[str, Any]) -> ReductionConfig:
    """``recorded`` with ``changes`` applied, all at once (so a new method gets its budget).

    Switching method resets the options the new method does not read (see
    :meth:`ReductionConfig.replace`); a :data:`CLEAR` change resets that option. ``budget`` and
    ``ratio`` are two ways of giving one token count: setting or clearing one resets the other.
    """
    cleared = {name for name, value in changes.items() if value is CLEAR}
    for one, other in (("budget", "ratio"), ("ratio", "budget")):
        if one in changes and other not in changes:
            cleared.add(other)
    given = {name: value for name, value in changes.items() if value is not CLEAR}
    return recorded.replace(reset=cleared, **given)


def reduction_from_args(recorded: ReductionConfig, args: argparse.Namespace) -> ReductionConfig | None:
    """The checkpoint's reduction updated by the reduction flags in ``args``; None when none was given."""
    changes = reduction_changes(args)
    return apply_changes(recorded, changes) if changes else None


def _training_field(name: str, spec: OptionSpec, default: Any) -> tuple[str, Any, Any]:
    kind = {int: int, float: float}.get(spec.parse, str)
    typ = kind if default is not None else kind | None
    if spec.format is not None:  # a tuple option (grid, atp_layers): a string flag, parsed by to_config
        default = None if default is None else spec.format(default)
    metadata = {"help": spec.help} | ({"choices": list(spec.choices)} if spec.choices else {})
    if name.startswith("atp_"):  # ATP's options also by their own names: --atp_target_tokens 144
        metadata["aliases"] = [f"--{name}"]
    return spec.arg_name, typ, field(default=default, metadata=metadata)


def _to_config(self) -> ReductionConfig:
    """The :class:`ReductionConfig` these training flags name."""
    values = {name: getattr(self, spec.arg_name) for name, spec in option_specs().items()}
    for name, spec in option_specs().items():
        if spec.format is not None and isinstance(values[name], str):
            values[name] = spec.parse(values[name])
    return ReductionConfig.from_value(values)


# The training flags of the reduction (``--token_reduction``, ``--reduction_budget``, ...), with the
# config's defaults, as a dataclass for ``HfArgumentParser``; ``to_config()`` gives the ReductionConfig.
ReductionArguments = make_dataclass(
    "ReductionArguments",
    [_training_field(f.name, f.metadata["option"], f.default) for f in option_fields()],
    namespace={"to_config": _to_config, "__module__": __name__},
)
