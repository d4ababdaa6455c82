"""umgf: multimodal named entity recognition with UMGF (Zhang et al., AAAI 2021) on Hugging Face transformers.

Importing the package registers the "umgf" model type with `AutoConfig`, `AutoModel`,
`AutoModelForTokenClassification`, `AutoProcessor` and `AutoImageProcessor`, and marks the classes so that
`save_pretrained` writes an `auto_map` and copies this package's flat modules next to the weights (Hub remote code).
This is the one place that registers them.

Where things happen: a word becomes a node in the processor (`processing_umgf`: tokens) and the model
(`modeling_umgf`: text MLP); a box becomes a node in a grounder (`grounder_registry`: boxes), the processor
(crops) and the model (visual MLP), and an edge in `multimodal_graph`; a tag becomes an entity in the processor's
post-processing (`UMGFProcessor.post_process_entities`, `schema.chunk_entities`) scored by the model's CRF (`crf`);
the pipeline (`pipeline_umgf`) runs the three. Names shared by all: `schema`.
"""

from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoModelForTokenClassification, AutoProcessor

from .configuration_umgf import PRESET_GROUNDERS, PRESETS, UMGFConfig
from .crf import CRF
from .data_collator import UMGFDataCollator
from .grounder_registry import GROUNDERS, build_grounder
from .grounding import Grounder, Grounding
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
from .schema import ENTITY_TYPES, LABELS

AutoConfig.register("umgf", UMGFConfig, exist_ok=True)
AutoModel.register(UMGFConfig, UMGFModel, exist_ok=True)
AutoModelForTokenClassification.register(UMGFConfig, UMGFForTokenClassification, exist_ok=True)
UMGFConfig.register_for_auto_class()
UMGFModel.register_for_auto_class("AutoModel")
UMGFForTokenClassification.register_for_auto_class("AutoModelForTokenClassification")
AutoProcessor.register(UMGFConfig, UMGFProcessor, exist_ok=True)
AutoImageProcessor.register(UMGFConfig, image_processor_classes={"torchvision": UMGFImageProcessor}, exist_ok=True)
UMGFProcessor.register_for_auto_class()
UMGFImageProcessor.register_for_auto_class("AutoImageProcessor")
register_pipeline()  # task "multimodal-ner"

__all__ = [
    "CRF",
    "ENTITY_TYPES",
    "GROUNDERS",
    "LABELS",
    "PRESETS",
    "PRESET_GROUNDERS",
    "Grounder",
    "Grounding",
    "MultimodalNERPipeline",
    "UMGFConfig",
    "UMGFDataCollator",
    "UMGFForTokenClassification",
    "UMGFImageProcessor",
    "UMGFModel",
    "UMGFModelOutput",
    "UMGFPreTrainedModel",
    "UMGFProcessor",
    "UMGFTokenClassifierOutput",
    "build_grounder",
]
