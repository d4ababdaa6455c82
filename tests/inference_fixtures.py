"""Tiny saved UMGF models for the inference tests (pipeline, handler, CLI, Space): offline, CPU, seconds."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from processor_fixtures import tiny_processor

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.pipeline_umgf import MultimodalNERPipeline

QUADRANT_SIZE = (120, 90)


def tiny_ner_model(seed: int = 0) -> UMGFForTokenClassification:
    """A random tiny UMGF whose tagger never prefers O, so that every test sentence has entities."""
    torch.manual_seed(seed)
    model = UMGFForTokenClassification(tiny_config()).eval()
    with torch.no_grad():
        model.classifier.bias[model.config.label2id["O"]] = -5.0
    return model


def tiny_ner_pipeline(seed: int = 0, grounder: str = "grid") -> MultimodalNERPipeline:
    """The multimodal-ner pipeline over `tiny_ner_model` and the tiny processor (grid grounding: 3 x 3 cells)."""
    return MultimodalNERPipeline(model=tiny_ner_model(seed), processor=tiny_processor(grounder), device=-1)


@functools.cache
def _saved_tiny_ner_folder(base: Path) -> Path:
    folder = base / "tiny-umgf-ner"
    tiny_ner_pipeline().save_pretrained(folder)
    return folder


def saved_tiny_ner_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_ner_pipeline` saved with its remote code and ``custom_pipelines``, once per test session (read-only)."""
    return _saved_tiny_ner_folder(tmp_path_factory.getbasetemp())
