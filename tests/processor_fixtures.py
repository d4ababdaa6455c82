"""Tiny, offline building blocks for the processor and grounding tests: a word-piece tokenizer written from a
small vocabulary, a crop transform to 8x8 pixels, and a random Grounding DINO built from a config."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import tiny_bert_config
from transformers import (
    BertTokenizer,
    GroundingDinoConfig,
    GroundingDinoForObjectDetection,
    GroundingDinoImageProcessor,
    GroundingDinoProcessor,
    SwinConfig,
)

from modeling_umgf.image_processing_umgf import UMGFImageProcessor
from modeling_umgf.processing_umgf import UMGFProcessor

VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    ".",
    ",",
    "!",
    "#",
    "Photo",
    "of",
    "Helmut",
    "Ko",
    "##hl",
    "at",
    "the",
    "Brandenburg",
    "gate",
    "Gate",
    "Berlin",
    "rocks",
    "NBA",
    "Kaw",
    "##hi",
    "Leonard",
    "wins",
    "fan",
    "vote",
    "person",
    "location",
    "organization",
    "misc",
    "photo",
    "helmut",
    "kohl",
    "brandenburg",
    "berlin",
    "leonard",
]
CROP_SIZE = 8
# A crop transform whose output is easy to compute by hand: resize to 8x8, (x / 255 - 0.5) / 0.5.
CROP_DATA_CONFIG = {
    "input_size": [3, CROP_SIZE, CROP_SIZE],
    "interpolation": "bilinear",
    "mean": [0.5, 0.5, 0.5],
    "std": [0.5, 0.5, 0.5],
    "crop_pct": 1.0,
    "crop_mode": "center",
}


def tiny_tokenizer(vocab: list[str] = VOCAB, lowercase: bool = False) -> BertTokenizer:
    """A word-piece tokenizer over ``vocab`` (cased like bert-base-cased unless ``lowercase``)."""
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=lowercase)


def tiny_processor(grounder: str = "grid", grounder_kwargs: dict | None = None, **kwargs) -> UMGFProcessor:
    """A UMGFProcessor over the tiny tokenizer and the 8x8 crop transform."""
    image_processor = UMGFImageProcessor("resnet18", data_config=CROP_DATA_CONFIG)
    return UMGFProcessor(
        image_processor, tiny_tokenizer(), grounder=grounder, grounder_kwargs=grounder_kwargs, **kwargs
    )


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
