"""Tiny random UMGF models, processors and inputs, built offline on the CPU in seconds.

One place for the tests and the GPU check (``benchmarks/checks/gpu_check.py``): a 1-layer, 32-d BERT, timm's
``test_resnet`` on 32-pixel crops, a word-piece tokenizer over a small vocabulary and a crop transform to 8x8 pixels.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import BertConfig, BertTokenizer

from ..configuration_umgf import UMGFConfig
from ..image_processing_umgf import UMGFImageProcessor
from ..modeling_umgf import UMGFForTokenClassification
from ..pipeline_umgf import MultimodalNERPipeline
from ..processing_umgf import UMGFProcessor

TINY_IMAGE = 32
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


def tiny_bert_config(**overrides: Any) -> BertConfig:
    """A 1-layer, 32-d BERT config with 64 positions (the tests' text encoder); ``overrides`` are BertConfig fields."""
    fields: dict[str, Any] = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=64,
    )
    fields.update(overrides)
    return BertConfig(**fields)


def tiny_encoders() -> dict[str, Any]:
    """The encoders of the test configs: a 1-layer BERT (32-d) and timm's test_resnet (96-d) on tiny crops."""
    return dict(
        text_config=tiny_bert_config(),
        vision_backbone="test_resnet",
        vision_feature_dim=96,
        vision_image_size=TINY_IMAGE,
    )


def tiny_config(**overrides: Any) -> UMGFConfig:
    """A UMGF config small enough for CPU tests: `tiny_encoders`, d=16."""
    kwargs: dict[str, Any] = dict(
        **tiny_encoders(),
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
        dropout=0.1,
    )
    kwargs.update(overrides)
    return UMGFConfig(**kwargs)


def tiny_inputs(batch: int = 2, tokens: int = 8, objects: int = 3, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random model inputs with ragged lengths: padded tokens, padded objects, a sparse adjacency."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1, 120, (batch, tokens), generator=g)
    attention_mask = torch.ones(batch, tokens, dtype=torch.long)
    word_ids = torch.full((batch, tokens), -1, dtype=torch.long)
    object_mask = torch.zeros(batch, objects, dtype=torch.long)
    for b in range(batch):
        length = tokens - b  # later items are shorter
        attention_mask[b, length:] = 0
        input_ids[b, length:] = 0
        # [CLS] w0 w1 w1 w2 ... [SEP]: the second word has two sub-tokens
        words = [0, 1, 1] + list(range(2, length - 4 + 2))
        word_ids[b, 1 : length - 1] = torch.tensor(words[: length - 2])
        object_mask[b, : max(objects - b, 0)] = 1
    adjacency = (torch.rand(batch, tokens, objects, generator=g) > 0.4).long() * attention_mask[:, :, None]
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "word_ids": word_ids,
        "pixel_values": torch.randn(batch, objects, 3, TINY_IMAGE, TINY_IMAGE, generator=g),
        "object_mask": object_mask,
        "inter_modal_adjacency": adjacency,
    }


def ragged_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """A labelled batch the text packing packs: one long and three short sentences, crops for three of them."""
    g = torch.Generator().manual_seed(seed)
    lengths, tokens = [14, 4, 5, 3], 14
    input_ids = torch.zeros(4, tokens, dtype=torch.long)
    word_ids = torch.full((4, tokens), -1)
    for b, n in enumerate(lengths):
        input_ids[b, :n] = torch.randint(5, 100, (n,), generator=g)
        word_ids[b, 1 : n - 1] = torch.arange(n - 2)
    attention_mask = (input_ids != 0).long()
    labels = torch.full((4, tokens - 2), -100)
    for b, n in enumerate(lengths):
        labels[b, : n - 2] = torch.randint(0, 9, (n - 2,), generator=g)
    object_mask = torch.tensor([[1, 1], [1, 0], [0, 0], [1, 1]])
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "word_ids": word_ids,
        "labels": labels,
        "pixel_values": torch.randn(4, 2, 3, TINY_IMAGE, TINY_IMAGE, generator=g),
        "object_mask": object_mask,
        "inter_modal_adjacency": attention_mask.bool().unsqueeze(-1) & object_mask.bool().unsqueeze(1),
    }


def tiny_tokenizer(vocab: list[str] = VOCAB, lowercase: bool = False) -> BertTokenizer:
    """A word-piece tokenizer over ``vocab`` (cased like bert-base-cased unless ``lowercase``)."""
    return BertTokenizer(vocab={token: i for i, token in enumerate(vocab)}, do_lower_case=lowercase)


def tiny_processor(grounder: str = "grid", grounder_kwargs: dict | None = None, **kwargs: Any) -> UMGFProcessor:
    """A UMGFProcessor over the tiny tokenizer and the 8x8 crop transform."""
    image_processor = UMGFImageProcessor("resnet18", data_config=CROP_DATA_CONFIG)
    return UMGFProcessor(
        image_processor, tiny_tokenizer(), grounder=grounder, grounder_kwargs=grounder_kwargs, **kwargs
    )


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
