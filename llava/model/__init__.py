"""The LLaVA-1.5 model: vision tower + token reducer + projector + Llama."""

from llava.model.language_model.llava_llama import LlavaConfig, LlavaLlamaForCausalLM, LlavaLlamaModel
from llava.model.token_reduction import ReductionConfig, available_reducers

__all__ = [
    "LlavaConfig",
    "LlavaLlamaForCausalLM",
    "LlavaLlamaModel",
    "ReductionConfig",
    "available_reducers",
    "register_auto_classes",
]


def register_auto_classes() -> None:
    """Registers ``llava_llama`` with ``AutoConfig`` / ``AutoModelForCausalLM`` (idempotent)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        AutoConfig.register("llava_llama", LlavaConfig)
    except ValueError:
        pass  # already registered
    try:
        AutoModelForCausalLM.register(LlavaConfig, LlavaLlamaForCausalLM)
    except ValueError:
        pass
