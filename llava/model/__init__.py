"""The LLaVA-1.5 model: vision tower + token reducer + projector + Llama.

The model classes are imported on first use, so that the config and the token-reduction registry
(``llava.model.token_reduction``) load without the language model.
"""

from typing import Any

from llava.model.configuration_llava import LlavaConfig
from llava.model.token_reduction import ReductionConfig, available_reducers

_MODEL_CLASSES = ("LlavaLlamaForCausalLM", "LlavaLlamaModel")

__all__ = [
    "LlavaConfig",
    "LlavaLlamaForCausalLM",
    "LlavaLlamaModel",
    "ReductionConfig",
    "available_reducers",
    "register_auto_classes",
]


def __getattr__(name: str) -> Any:
    if name in _MODEL_CLASSES:
        from llava.model.language_model import llava_llama

        return getattr(llava_llama, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def register_auto_classes() -> None:
    """Registers ``llava_llama`` with ``AutoConfig`` / ``AutoModelForCausalLM`` (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from llava.model.language_model.llava_llama import LlavaLlamaForCausalLM

    try:
        AutoConfig.register("llava_llama", LlavaConfig)
    except ValueError:
        pass  # already registered
    try:
        AutoModelForCausalLM.register(LlavaConfig, LlavaLlamaForCausalLM)
    except ValueError:
        pass
