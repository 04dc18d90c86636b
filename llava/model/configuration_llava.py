"""``LlavaConfig``: a ``LlamaConfig`` plus upstream LLaVA's ``mm_*`` fields, each declared once with its default.

transformers 5 configs are dataclasses: ``PreTrainedConfig.__init_subclass__`` makes every subclass a
keyword-only dataclass whose ``__init__`` also accepts undeclared keys (kept as attributes), and
huggingface_hub's ``@strict`` checks a declared field's type whenever it is set. A field that a
``config.json`` lacks (older uploads, a base LLM's config) takes the default declared here, so code
reads ``config.<field>`` directly. Every declared field is written to ``config.json``.
"""

from dataclasses import fields
from typing import Any

from huggingface_hub.dataclasses import strict
from transformers import CLIPVisionConfig, LlamaConfig

#: ``model_type`` of upstream LLaVA's 2023 uploads (it now names transformers' own llava-hf format).
LEGACY_MODEL_TYPES = ("llava",)


@strict
class LlavaConfig(LlamaConfig):
    """A ``LlamaConfig`` plus upstream LLaVA's ``mm_*`` fields and the recorded ``mm_token_reduction``.

    Fields keep upstream LLaVA's names, so upstream checkpoints load and ours load upstream.
    """

    model_type = "llava_llama"

    #: The CLIP vision tower: a Hub id or a folder (a relative path resolves against the checkpoint).
    #: None: no tower and no projector (a text-only model).
    mm_vision_tower: str | None = None
    #: The width of the tower's features, i.e. the projector's input (1024 for CLIP ViT-L).
    mm_hidden_size: int | None = None
    #: The tower's hidden state handed to the projector (an index into the encoder's hidden states).
    mm_vision_select_layer: int = -2
    #: ``patch`` (the patch tokens only) or ``cls_patch`` (CLS token too).
    mm_vision_select_feature: str = "patch"
    #: ``linear``, ``mlp<N>x_gelu`` (LLaVA-1.5: ``mlp2x_gelu``) or ``identity``. ``linear`` when absent,
    #: as upstream's projector builder reads it.
    mm_projector_type: str = "linear"
    #: LLaVA v0/v1 image start/end tokens; LLaVA-1.5 sets False and True is not supported.
    mm_use_im_start_end: bool = False
    #: LLaVA v0/v1 image patch tokens; LLaVA-1.5 sets False and True is not supported.
    mm_use_im_patch_token: bool = False
    #: Image preprocessing at inference: ``pad`` (to a square in the mean colour, LLaVA-1.5) or ``square``.
    image_aspect_ratio: str = "pad"
    #: How patch tokens are arranged (LLaVA-1.6's ``spatial_unpad``); recorded only, LLaVA-1.5 is ``flat``.
    mm_patch_merge_type: str = "flat"
    #: The training ``model_max_length``: spliced sequences are cut to it. None: no cut.
    tokenizer_model_max_length: int | None = None
    #: The padding side the forward pass assumes when the caller gives none (training pads right).
    tokenizer_padding_side: str = "right"
    #: Upstream's marker that the model carries ``mm_projector``; recorded only (the projector exists
    #: whenever ``mm_vision_tower`` is set).
    use_mm_proj: bool = True
    #: The run trained the projector only (pretraining); its checkpoints hold ``mm_projector.bin``.
    tune_mm_mlp_adapter: bool = False
    #: The run kept the projector frozen (upstream's ``--freeze_mm_mlp_adapter``); recorded only.
    freeze_mm_mlp_adapter: bool = False
    #: The projector's learning rate in the run (None: the global one); recorded only.
    mm_projector_lr: int | float | None = None
    #: The token reduction: a ``ReductionConfig.to_dict()`` (a method name becomes ``{"method": name}``).
    #: None: no reduction.
    mm_token_reduction: dict[str, Any] | str | None = None
    #: The insertion layers of the ATP modules this checkpoint holds (``model.atp_modules``: trained with
    #: ``--token_reduction atp``); None: it holds none.
    mm_atp_layers: list[int] | None = None
    #: The tower's own config, to build it without reading ``mm_vision_tower`` (random weights until
    #: ``load_model``; benchmarks use it). Not written to ``config.json`` when None.
    vision_config: CLIPVisionConfig | dict | None = None

    def __post_init__(self, **kwargs: Any) -> None:
        if isinstance(self.mm_token_reduction, str):
            self.mm_token_reduction = {"method": self.mm_token_reduction}
        if isinstance(self.vision_config, dict):
            self.vision_config = CLIPVisionConfig.from_dict(self.vision_config)
        super().__post_init__(**kwargs)

    @classmethod
    def llava_fields(cls) -> tuple[str, ...]:
        """The names of the fields LLaVA adds to ``LlamaConfig``."""
        llama = {f.name for f in fields(LlamaConfig)}
        return tuple(f.name for f in fields(cls) if f.name not in llama)

    @classmethod
    def from_object(cls, obj: Any) -> "LlavaConfig":
        """``obj`` as a ``LlavaConfig``: itself, or a new one from the fields it has.

        ``obj`` may be another transformers config (e.g. a base LLM's ``LlamaConfig``: its Llama fields
        are kept) or any object with some LLaVA fields as attributes (a namespace; upstream's model
        arguments, whose ``vision_tower`` stands for ``mm_vision_tower``). Missing fields take their defaults.
        """
        if isinstance(obj, cls):
            return obj
        if hasattr(obj, "to_dict"):
            return cls.from_dict(obj.to_dict())
        values = {name: getattr(obj, name) for name in cls.llava_fields() if hasattr(obj, name)}
        if values.get("mm_vision_tower") is None and hasattr(obj, "vision_tower"):
            values["mm_vision_tower"] = obj.vision_tower
        return cls(**values)

    @classmethod
    def get_config_dict(cls, pretrained_model_name_or_path: Any, **kwargs: Any):
        """transformers' reading of ``config.json``, with upstream's 2023 ``model_type`` ``llava`` taken as ours."""
        config_dict, kwargs = super().get_config_dict(pretrained_model_name_or_path, **kwargs)
        if config_dict.get("model_type") in LEGACY_MODEL_TYPES and "text_config" not in config_dict:
            config_dict = {**config_dict, "model_type": cls.model_type}
        return config_dict, kwargs

    @classmethod
    def from_dict(cls, config_dict: dict[str, Any], **kwargs: Any) -> "LlavaConfig":
        """transformers' ``from_dict``; the dict's ``model_type`` (``llava``, ``llama``, ...) is not kept."""
        config_dict = {k: v for k, v in config_dict.items() if k != "model_type"}
        return super().from_dict(config_dict, **kwargs)

    def to_dict(self) -> dict[str, Any]:
        """transformers' ``to_dict``, without ``vision_config`` when it is None."""
        output = super().to_dict()
        if output.get("vision_config") is None:
            output.pop("vision_config", None)
        return output


__all__ = ["LEGACY_MODEL_TYPES", "LlavaConfig"]
