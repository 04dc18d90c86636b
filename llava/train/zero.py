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


def init_deepspeed_distributed() -> None:
    """Starts DeepSpeed's process group before the training arguments are built.

    On a machine without CUDA, DeepSpeed runs on its CPU accelerator over gloo; transformers loads the
    model under ``deepspeed.zero.Init``, which needs the process group to exist already (accelerate only
    creates torch's). With CUDA, the Trainer sets everything up itself.
    """
    if torch.cuda.is_available():
        return
    import deepspeed

    deepspeed.init_distributed(dist_backend="gloo")


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """``module.load_state_dict(state, strict=True)``, also when ZeRO-3 has partitioned ``module``.

    Partitioned parameters are gathered, loaded on rank 0 and re-partitioned (every rank must call this).
    """
    params = [p for p in module.parameters() if hasattr(p, "ds_id")]
    if not params:
        module.load_state_dict(state, strict=True)
        return
    import deepspeed
    import torch.distributed as dist

    with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
        if not dist.is_initialized() or dist.get_rank() == 0:
            module.load_state_dict(state, strict=True)


def shutdown_distributed() -> None:
    """Waits for every rank, then destroys the process group, so that each rank exits with status 0.

    Left to the interpreter's exit, the gloo process group's threads can be torn down while still
    joinable ("terminate called without an active exception", exit 250 through the DeepSpeed launcher)
    after a run that trained and saved: a scheduler would read that as a failed job.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
