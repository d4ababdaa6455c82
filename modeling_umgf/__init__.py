"""umgf: multimodal named entity recognition with UMGF (Zhang et al., AAAI 2021) on Hugging Face transformers.

Importing the package registers the "umgf" model type with `AutoConfig`, `AutoModel`,
`AutoModelForTokenClassification`, `AutoProcessor` and `AutoImageProcessor`, and marks the classes so that `save_pretrained` writes an
`auto_map` and copies this package's flat modules next to the weights (Hub remote code).
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForTokenClassification, AutoProcessor

from .configuration_umgf import DEFAULT_LABELS, PRESETS, UMGFConfig
from .crf import CRF
from .data_collator_umgf import UMGFDataCollator
from .grounding import GROUNDERS, Grounding, build_grounder
from .image_processing_umgf import UMGFImageProcessor
from .modeling_umgf import (
    UMGFForTokenClassification,
    UMGFModel,
    UMGFModelOutput,
    UMGFPreTrainedModel,
    UMGFTokenClassifierOutput,
)
from .pipeline_umgf import MultimodalNERPipeline, register_pipeline
from .processing_umgf import UMGFProcessor

AutoConfig.register("umgf", UMGFConfig, exist_ok=True)
AutoModel.register(UMGFConfig, UMGFModel, exist_ok=True)
AutoModelForTokenClassification.register(UMGFConfig, UMGFForTokenClassification, exist_ok=True)
UMGFConfig.register_for_auto_class()
UMGFModel.register_for_auto_class("AutoModel")
UMGFForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
AutoProcessor.register(UMGFConfig, UMGFProcessor, exist_ok=True)
AutoImageProcessor.register(UMGFConfig, image_processor_classes={"torchvision": UMGFImageProcessor}, exist_ok=True)
register_pipeline()  # task "multimodal-ner"

__all__ = [
    "CRF",
    "DEFAULT_LABELS",
    "GROUNDERS",
    "MultimodalNERPipeline",
    "Grounding",
    "build_grounder",
    "UMGFDataCollator",
    "UMGFImageProcessor",
    "UMGFProcessor",
    "PRESETS",
    "UMGFConfig",
    "UMGFForTokenClassification",
    "UMGFModel",
    "UMGFModelOutput",
    "UMGFPreTrainedModel",
    "UMGFTokenClassifierOutput",
]
