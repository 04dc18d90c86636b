"""The vision→language projector (``mm_projector``) of LLaVA."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from llava.model.configuration_llava import LlavaConfig

_MLP = re.compile(r"^mlp(\d+)x_gelu$")


def build_vision_projector(config: LlavaConfig) -> nn.Module:
    """The projector named by ``config.mm_projector_type`` (``linear`` when the config does not say).

    ``linear`` is one Linear(mm_hidden_size → hidden_size); ``mlp{N}x_gelu`` is that Linear followed
    by N−1 × [GELU (exact erf form), Linear(hidden_size → hidden_size)] (LLaVA-1.5: ``mlp2x_gelu``,
    keys ``mm_projector.0`` and ``mm_projector.2``); ``identity`` passes the features through.
    """
    kind = config.mm_projector_type
    if kind == "linear":
        return nn.Linear(config.mm_hidden_size, config.hidden_size)
    if kind == "identity":
        return nn.Identity()
    match = _MLP.match(kind)
    if match is None:
        raise ValueError(f"Unknown mm_projector_type {kind!r}; use 'linear', 'identity' or 'mlp<N>x_gelu'.")
    layers: list[nn.Module] = [nn.Linear(config.mm_hidden_size, config.hidden_size)]
    for _ in range(int(match.group(1)) - 1):
        layers += [nn.GELU(), nn.Linear(config.hidden_size, config.hidden_size)]
    return nn.Sequential(*layers)
