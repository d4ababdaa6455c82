"""Batching UMGF examples: dynamic padding of sub-tokens, words and visual objects.

transformers' collators pad token sequences only; UMGF examples also carry a variable number of visual
objects (crops or features) and a token x object adjacency, which must be padded in both dimensions
together, so this collator is written here. Every pad value is one the model ignores: attention_mask 0,
word_ids -1, labels -100, object_mask 0, no adjacency edge.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers.feature_extraction_utils import BatchFeature

from .schema import LABEL_PAD_VALUE, METADATA_KEYS

TOKEN_PAD_VALUES = {"attention_mask": 0, "token_type_ids": 0, "word_ids": -1}


def _pad_rows(rows: Sequence[Sequence[int]], length: int, value: int) -> torch.Tensor:
    padded = torch.full((len(rows), length), value, dtype=torch.long)
    for i, row in enumerate(rows):
        padded[i, : len(row)] = torch.as_tensor(row, dtype=torch.long)
    return padded


@dataclass
class UMGFDataCollator:
    """Pads a list of `UMGFProcessor` examples (``return_tensors=None`` outputs) into model inputs.

    Returns a `BatchFeature` with ``input_ids``, ``attention_mask``, ``token_type_ids`` (when the examples
    have them) and ``word_ids`` ``[B, T]``; ``labels`` ``[B, W]`` (when the examples have them);
    ``pixel_values`` ``[B, O, 3, H, W]``, or ``object_features`` ``[B, O, F]`` when any example carries
    cached features; ``object_mask`` ``[B, O]``; ``inter_modal_adjacency`` ``[B, T, O]`` bool. ``O`` is the
    largest object count in the batch and may be 0. With ``return_metadata=True`` the `METADATA_KEYS` are
    added as per-example lists; pop them before calling the model.

    Args:
        pad_token_id: the tokenizer's padding id.
        crop_size: (height, width) of the transformed crops (the image processor's ``image_size``), the shape of
            ``pixel_values`` when no example of a batch has an object.
        return_metadata: also return the `METADATA_KEYS`.
        pad_to_multiple_of: round the token length up to a multiple of this.
    """

    pad_token_id: int = 0
    crop_size: tuple[int, int] = (224, 224)
    return_metadata: bool = False
    pad_to_multiple_of: int | None = None

    def __call__(self, examples: Sequence[dict[str, Any]]) -> BatchFeature:
        if not examples:
            raise ValueError("cannot collate an empty list of examples")
        length = max(len(example["input_ids"]) for example in examples)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        batch: dict[str, Any] = {"input_ids": _pad_rows([e["input_ids"] for e in examples], length, self.pad_token_id)}
        for key, value in TOKEN_PAD_VALUES.items():
            if key in examples[0]:
                batch[key] = _pad_rows([e[key] for e in examples], length, value)
        with_labels = ["labels" in example and example["labels"] is not None for example in examples]
        if any(with_labels):
            if not all(with_labels):
                raise ValueError("some examples of the batch have labels and others do not")
            batch["labels"] = _pad_rows(
                [e["labels"] for e in examples], max(len(e["labels"]) for e in examples), LABEL_PAD_VALUE
            )
        batch.update(self._pad_objects(examples, length))
        if self.return_metadata:
            batch.update({key: [e.get(key) for e in examples] for key in METADATA_KEYS})
        return BatchFeature(batch)

    def _pad_objects(self, examples: Sequence[dict[str, Any]], length: int) -> dict[str, torch.Tensor]:
        use_features = any(e.get("object_features") is not None for e in examples)
        key = "object_features" if use_features else "pixel_values"
        if use_features:
            crops = [
                e.get("sample_id", i)
                for i, e in enumerate(examples)
                if e.get("pixel_values") is not None and len(e["pixel_values"])
            ]
            if crops:
                raise ValueError(f"a batch cannot mix cached object_features with object crops (samples {crops})")
        objects = [torch.as_tensor(e[key], dtype=torch.float32) if e.get(key) is not None else None for e in examples]
        item_shape: tuple[int, ...]
        if use_features:
            feature_dims = {o.shape[1] for o in objects if o is not None and o.numel()}
            if len(feature_dims) > 1:
                raise ValueError(f"object_features of the batch differ in size: {sorted(feature_dims)}")
            item_shape = (feature_dims.pop() if feature_dims else 0,)
        else:
            item_shape = (3, *self.crop_size)
        counts = [0 if o is None else o.shape[0] for o in objects]
        num_objects = max(counts)
        values = torch.zeros(len(examples), num_objects, *item_shape)
        object_mask = torch.zeros(len(examples), num_objects, dtype=torch.long)
        adjacency = torch.zeros(len(examples), length, num_objects, dtype=torch.bool)
        for i, (example, found) in enumerate(zip(examples, objects)):
            if found is not None and len(found):
                count = len(found)
                values[i, :count] = found
                object_mask[i, :count] = 1
                edges = torch.as_tensor(example["inter_modal_adjacency"], dtype=torch.bool)
                adjacency[i, : edges.shape[0], :count] = edges
        return {key: values, "object_mask": object_mask, "inter_modal_adjacency": adjacency}
