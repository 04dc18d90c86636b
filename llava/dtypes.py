"""The ``--dtype`` option shared by the inference front ends, and the torch dtype each choice means.

- ``auto`` (the default): float16 on CUDA, as upstream LLaVA loads its checkpoints, float32 elsewhere.
- ``float16`` / ``bfloat16`` / ``float32``: that dtype. float16 on the CPU is allowed (it is slow);
  bfloat16 on a CUDA GPU without native bfloat16 (before Ampere; torch would emulate it, slowly) is
  refused with a message that suggests float16.

Every front end adds the option with :func:`add_dtype_arg` (same flag, choices and help text) and turns
it into the ``dtype`` of ``load_pretrained_model`` with :func:`resolve_dtype`.
"""

from __future__ import annotations

import argparse

import torch

AUTO = "auto"
DTYPES: dict[str, torch.dtype] = {
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
    "float32": torch.float32,
}
DTYPE_CHOICES: tuple[str, ...] = (AUTO, *DTYPES)
DTYPE_HELP = (
    "weights and activations: auto (default) = float16 on CUDA, as upstream LLaVA, float32 on CPU; "
    "bfloat16 needs a GPU that supports it (Ampere or newer) or the CPU; float16 on CPU works but is slow"
)


def add_dtype_arg(parser: argparse.ArgumentParser) -> None:
    """Adds ``--dtype {auto,float16,bfloat16,float32}`` (default ``auto``) to ``parser``."""
    parser.add_argument("--dtype", default=AUTO, choices=DTYPE_CHOICES, help=DTYPE_HELP)


def device_type(device: str | torch.device | None) -> str:
    """``cuda``, ``cpu`` ... for a device name or object; None is CUDA when available, as the loader's default.

    Raises:
        ValueError: ``device`` is not a device name.
    """
    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        return torch.device(device).type
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"{device!r} is not a device name (use cpu, cuda or cuda:N).") from err


def spelled(option: str, value: str) -> str:
    """How the user writes ``option`` set to ``value``: ``--dtype float16`` for a flag, else ``dtype=float16``."""
    return f"{option} {value}" if option.startswith("-") else f"{option}={value}"


def resolve_dtype(
    name: str | None, device: str | torch.device | None, option: str = "--dtype"
) -> torch.dtype:
    """The torch dtype that ``name`` (one of :data:`DTYPE_CHOICES`; None = ``auto``) means on ``device``.

    Args:
        name: ``auto``, ``float16``, ``bfloat16`` or ``float32`` (any case).
        device: where the model will run (a name such as ``cuda:1``, a ``torch.device``, or None for the
            loader's default: CUDA when available).
        option: how the setting is called in messages (``--dtype`` for the command lines, ``dtype``
            for the Cog input and the lmms-eval model_arg).

    Raises:
        ValueError: an unknown name, or bfloat16 on a CUDA device without bfloat16 support.
    """
    key = AUTO if name is None else str(name).strip().lower()
    if key not in DTYPE_CHOICES:
        raise ValueError(f"{option} must be one of {', '.join(DTYPE_CHOICES)}; got {name!r}.")
    kind = device_type(device)
    if key == AUTO:
        return torch.float16 if kind == "cuda" else torch.float32
    if key == "bfloat16" and kind == "cuda" and not torch.cuda.is_bf16_supported(including_emulation=False):
        raise ValueError(
            f"{spelled(option, 'bfloat16')} was asked for, but this CUDA GPU does not support bfloat16 natively "
            f"(torch.cuda.is_bf16_supported(including_emulation=False) is false): use {spelled(option, 'float16')} "
            f"(or {spelled(option, AUTO)}, which is float16 on CUDA)."
        )
    return DTYPES[key]
