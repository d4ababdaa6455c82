"""The model and processor a training run starts from: a trained UMGF checkpoint to fine-tune, a new model of a
preset over pretrained encoders, or the synthetic job's small model trained from scratch; and the names a run
reports of them (its preset, its text encoder)."""

from __future__ import annotations

import ast
import logging
from collections.abc import Mapping
from typing import Any

from transformers import AutoConfig, AutoTokenizer, BertConfig

from datasets_scripts.synthetic import SyntheticJob, build_tokenizer, function_words

from ..configuration_umgf import PRESET_RECORDS, UMGFConfig
from ..image_processing_umgf import UMGFImageProcessor
from ..modeling_umgf import UMGFForTokenClassification
from ..processing_umgf import UMGFProcessor
from . import hub
from .loading import load_saved

logger = logging.getLogger(__name__)


def parse_config_overrides(text: str) -> dict[str, Any]:
    """'a=1,b=0.5,c=crf' -> {"a": 1, "b": 0.5, "c": "crf"} (Python literals where they parse, else strings)."""
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config_overrides: expected key=value, got {item!r}")
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()
    unknown = sorted(set(overrides) - set(UMGFConfig().to_dict()))
    if unknown:
        raise ValueError(f"--config_overrides: unknown UMGFConfig fields {unknown}")
    return overrides


def is_umgf_checkpoint(name_or_path: str) -> bool:
    """Whether ``name_or_path`` holds a UMGF model (else, as in run_ner_no_trainer, a text encoder to start from)."""
    return AutoConfig.from_pretrained(name_or_path).model_type == "umgf"


def load_checkpoint(
    name_or_path: str, label_names: list[str], max_length: int, grounder: str | None
) -> tuple[UMGFForTokenClassification, UMGFProcessor]:
    """A trained UMGF model and its processor, to fine-tune or evaluate on data tagged ``label_names``; its own
    grounder unless ``grounder`` is given."""
    config = AutoConfig.from_pretrained(name_or_path)
    checkpoint_labels = [config.id2label[i] for i in range(len(config.id2label))]
    if checkpoint_labels != label_names:
        raise ValueError(
            f"label set mismatch: checkpoint {name_or_path} tags {checkpoint_labels}, but the dataset has {label_names}"
        )
    model, processor = load_saved(name_or_path)
    processor.max_length = max_length
    if grounder:
        processor.set_grounder(grounder)
    return model, processor


def build_model_and_processor(
    label_names: list[str],
    preset: str,
    *,
    text_model_name_or_path: str | None,
    synthetic: SyntheticJob | None = None,
    overrides: Mapping[str, Any] | None = None,
    vision_weights: str = "none",
    grounder: str | None = None,
    max_length: int = 128,
    images: bool = True,
) -> tuple[UMGFForTokenClassification, UMGFProcessor]:
    """A new model of ``preset`` (with ``overrides`` of its config fields) and its processor: over the pretrained
    text encoder ``text_model_name_or_path`` and a timm vision backbone (``vision_weights``: "timm", "none" or a
    weights file), or, for the ``synthetic`` job, its small model from scratch with its tokenizer and crop
    transform. The processor grounds with ``grounder``, else the preset's."""
    record = PRESET_RECORDS[preset]
    id2label = dict(enumerate(label_names))
    overrides = {**(overrides or {}), "id2label": id2label, "label2id": {label: i for i, label in id2label.items()}}
    grounder = grounder or record.grounder
    grounder_kwargs: dict[str, Any] = {}
    if synthetic is None:
        if not text_model_name_or_path:
            raise ValueError("a new model over pretrained encoders needs a text encoder (text_model_name_or_path)")
        fields = {**record.config, **overrides}
        vision = fields.pop("vision_backbone", UMGFConfig().vision_backbone)
        weights = {"none": False, "timm": True}.get(vision_weights, vision_weights)
        if weights is False and fields.get("use_visual", True) and images:
            logger.warning(
                f"the {vision} vision backbone starts from random weights: pass --vision_weights timm "
                "(or a local weights file) to use pretrained ones"
            )
        model = UMGFForTokenClassification.from_text_vision_pretrained(
            text_model_name_or_path, vision_backbone=vision, vision_weights=weights, **fields
        )
        tokenizer = AutoTokenizer.from_pretrained(text_model_name_or_path)
        image_processor = UMGFImageProcessor(model.config.vision_backbone)
    else:  # encoders from scratch, the task's own tokenizer, crop transform and grounder
        text_config = BertConfig(vocab_size=len(build_tokenizer()), **synthetic.text_config)
        config = UMGFConfig.from_preset(preset, **{"text_config": text_config, **synthetic.config, **overrides})
        model = UMGFForTokenClassification(config)
        tokenizer = build_tokenizer(model_max_length=synthetic.text_config["max_position_embeddings"])
        image_processor = UMGFImageProcessor(
            config.vision_backbone,
            data_config={
                "input_size": [3, synthetic.crop_size, synthetic.crop_size],
                "interpolation": "bilinear",
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
                "crop_pct": 1.0,
                "crop_mode": "center",
            },
        )
        grounder = synthetic.grounder_for(grounder)
        grounder_kwargs = {"function_words": function_words()} if grounder == synthetic.grounder else {}
    # the tokenizer cuts sentences to the text encoder's positions (saved with it, for every pipeline)
    positions = getattr(model.config.text_encoder_config, "max_position_embeddings", None)
    if positions:
        tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
    processor = UMGFProcessor(
        image_processor,
        tokenizer,
        grounder=grounder,
        grounder_kwargs=grounder_kwargs,
        max_length=max_length,
        label_names=label_names,
    )
    return model, processor


def preset_of(config: UMGFConfig, grounder: str | None = None) -> str:
    """The name of the preset a saved model was built with: the most specific preset whose every config field
    matches ``config`` and, among equally specific ones, whose grounder is ``grounder`` ("wo-tar" is "paper" with
    the grid grounder); "paper" when none does."""
    matches = [
        name
        for name, record in PRESET_RECORDS.items()
        if all(getattr(config, key, None) == value for key, value in record.config.items())
    ]
    return max(
        matches,
        key=lambda name: (len(PRESET_RECORDS[name].config), PRESET_RECORDS[name].grounder == grounder, name == "paper"),
        default="paper",
    )


def encoder_name(model: UMGFForTokenClassification) -> str:
    """The text encoder's name for people: its Hub id, the last part of its local path, or (no name, as for the
    synthetic job's encoder trained from scratch) its type and size."""
    text_config = model.config.text_encoder_config
    return hub.encoder_display_name(
        getattr(text_config, "name_or_path", ""), text_config.model_type, text_config.hidden_size
    )
