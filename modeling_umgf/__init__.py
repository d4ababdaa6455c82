"""umgf: multimodal named entity recognition with UMGF (Zhang et al., AAAI 2021) on Hugging Face transformers.

Importing the package registers the "umgf" model type with `AutoConfig`, `AutoModel` and
`AutoModelForTokenClassification`, and marks the classes so that `save_pretrained` writes an
`auto_map` and copies this package's flat modules next to the weights (Hub remote code).
"""

from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification

from .configuration_umgf import DEFAULT_LABELS, PRESETS, UMGFConfig
from .crf import CRF
from .modeling_umgf import (
    UMGFForTokenClassification,
    UMGFModel,
    UMGFModelOutput,
    UMGFPreTrainedModel,
    UMGFTokenClassifierOutput,
)

AutoConfig.register("umgf", UMGFConfig, exist_ok=True)
AutoModel.register(UMGFConfig, UMGFModel, exist_ok=True)
AutoModelForTokenClassification.register(UMGFConfig, UMGFForTokenClassification, exist_ok=True)
UMGFConfig.register_for_auto_class()
UMGFModel.register_for_auto_class("AutoModel")
UMGFForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")

__all__ = [
    "CRF",
    "DEFAULT_LABELS",
    "PRESETS",
    "UMGFConfig",
    "UMGFForTokenClassification",
    "UMGFModel",
    "UMGFModelOutput",
    "UMGFPreTrainedModel",
    "UMGFTokenClassifierOutput",
]
