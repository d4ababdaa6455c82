"""Helpers the tests share beyond `modeling_umgf.tools.tiny_models`: a tiny saved NER folder, saved tiny encoders
(a BERT, a Grounding DINO), the release preset's fusion switches and a Python process without the umgf packages."""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import (
    BertModel,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    SwinConfig,
)

from modeling_umgf.configuration_umgf import PRESETS
from modeling_umgf.tools.tiny_models import VOCAB, tiny_bert_config, tiny_ner_pipeline, tiny_tokenizer

QUADRANT_SIZE = (120, 90)
#: The switches of the authors' released network (the "release" preset) that change what the fusion layers compute.
RELEASE_SWITCHES = {
    key: PRESETS["release"][key]
    for key in (
        "text_node_projection",
        "visual_mlp_output_activation",
        "visual_value_projection",
        "gate_layer_norm",
        "link_special_tokens",
        "classifier_input",
        "use_position_encoding",
    )
}

_BLOCK_PACKAGE = """
import importlib.abc, sys
class _NoUmgf(importlib.abc.MetaPathFinder):  # as if the umgf package were not installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("modeling_umgf", "datasets_scripts", "train_umgf"):
            raise ModuleNotFoundError(f"No module named {name!r}")
sys.meta_path.insert(0, _NoUmgf())
"""


def run_without_package(script: str, cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run ``script`` in a fresh, offline Python process where the umgf packages cannot be imported (even when
    installed, e.g. editable): what a user who only has the saved folder and ``trust_remote_code`` sees."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(HF_HUB_OFFLINE="1", HF_MODULES_CACHE=str(Path(cwd) / "hf_modules"))
    return subprocess.run(
        [sys.executable, "-c", _BLOCK_PACKAGE + script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@functools.cache
def _saved_tiny_ner_folder(base: Path) -> Path:
    folder = base / "tiny-umgf-ner"
    tiny_ner_pipeline().save_pretrained(folder)
    return folder


def saved_tiny_ner_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`tiny_ner_pipeline` saved with its remote code and ``custom_pipelines``, once per test session (read-only)."""
    return _saved_tiny_ner_folder(tmp_path_factory.getbasetemp())


def save_tiny_text_encoder(folder: Path) -> Path:
    """Save a random 1-layer BERT and the synthetic task's tokenizer to ``folder``: a local pretrained-style text
    encoder (``--text_model_name_or_path``)."""
    from datasets_scripts.synthetic import build_tokenizer

    tokenizer = build_tokenizer(folder)
    config = tiny_bert_config(vocab_size=len(tokenizer), max_position_embeddings=512)
    BertModel(config, add_pooling_layer=False).save_pretrained(folder)
    return folder


def save_tiny_grounding_dino(folder: Path, seed: int = 0) -> Path:
    """Save a random ~80k-parameter Grounding DINO and its processor to ``folder`` (loadable by the Auto classes)."""
    tokenizer = tiny_tokenizer(lowercase=True)
    backbone = SwinConfig(
        image_size=64,
        patch_size=4,
        embed_dim=8,
        depths=[1, 1, 1],
        num_heads=[1, 1, 1],
        window_size=2,
        out_indices=[1, 2, 3],
    )
    text = tiny_bert_config(vocab_size=len(VOCAB), intermediate_size=32)
    config = GroundingDinoConfig(
        backbone_config=backbone,
        text_config=text,
        num_queries=12,
        encoder_layers=1,
        decoder_layers=2,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=32,
        num_feature_levels=3,
        encoder_n_points=1,
        decoder_n_points=1,
        max_text_len=48,
    )
    torch.manual_seed(seed)
    GroundingDinoForObjectDetection(config).save_pretrained(folder)
    image_processor = GroundingDinoImageProcessor(size={"shortest_edge": 32, "longest_edge": 64})
    GroundingDinoProcessor(image_processor=image_processor, tokenizer=tokenizer).save_pretrained(folder)
    return folder
