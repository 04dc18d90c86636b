"""DeepSpeed ZeRO-3 helpers: the one place that knows about partitioned parameters."""

from __future__ import annotations

from collections.abc import Callable

import torch


def _full_copy(param: torch.nn.Parameter) -> torch.Tensor:
    """A CPU copy of ``param``, gathered first when ZeRO-3 has partitioned it (a collective call)."""
    if hasattr(param, "ds_id"):
        from deepspeed import zero

        with zero.GatheredParameters([param]):
            return param.data.detach().cpu().clone()
    return param.detach().cpu().clone()


def gathered_state(
    model: torch.nn.Module, keep: Callable[[str], bool], trainable_only: bool = False
) -> dict[str, torch.Tensor]:
    """Full CPU copies of the parameters whose names pass ``keep`` (every rank must call this under ZeRO-3)."""
    return {
        name: _full_copy(param)
        for name, param in model.named_parameters()
        if keep(name) and (param.requires_grad or not trainable_only)
    }
