"""A disk cache of the pooled object features of a frozen vision backbone, for training without re-encoding crops.

With the backbone frozen, every crop's features are the same in every epoch: they are computed once, stored in an
Arrow file keyed by the data and by a fingerprint of the backbone's weights and crop transform, and read back by
later epochs and later runs. The caching is `datasets.Dataset.map` with a fixed cache file; what is written here is
the key and the encoding.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import datasets
import torch

from ..processing_umgf import UMGFProcessor


def backbone_fingerprint(backbone: torch.nn.Module, processor: UMGFProcessor) -> str:
    """Hash of the backbone's weights and of the crop transform: the key of the feature cache."""
    digest = hashlib.sha256(json.dumps(processor.image_processor.data_config, sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def cache_object_features(
    dataset: datasets.Dataset,
    split: str,
    backbone: torch.nn.Module,
    processor: UMGFProcessor,
    cache_dir: Path,
    device: torch.device | str,
    batch_size: int,
) -> datasets.Dataset:
    """``dataset`` with an ``object_features`` column ``[N, F]`` per example (None without objects) and without its
    ``image`` column, computed once per object crop by the frozen ``backbone`` and cached in ``cache_dir``.

    The rows must be grounded already (the grounding columns filled): the features follow their objects.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    fingerprint = backbone_fingerprint(backbone, processor)
    backbone.eval().to(device)

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        crops = processor.process_examples(batch)["pixel_values"]
        counts = [len(c) for c in crops]
        features: list[torch.Tensor] = []
        if sum(counts):
            pixels = torch.cat([c for c in crops if len(c)]).to(device)
            encoded = torch.cat([backbone(chunk).float().cpu() for chunk in pixels.split(batch_size)])
            features = list(encoded.split([c for c in counts if c]))
        out, found = [], iter(features)
        for count in counts:
            out.append(next(found).tolist() if count else None)
        return {"object_features": out}

    float_lists = datasets.List(datasets.List(datasets.Value("float32")))
    cached = dataset.map(
        encode,
        batched=True,
        batch_size=batch_size,
        cache_file_name=str(cache_dir / f"{split}-{dataset._fingerprint}-{fingerprint}.arrow"),
        new_fingerprint=f"{dataset._fingerprint}-{fingerprint}",
        features=datasets.Features({**dataset.features, "object_features": float_lists}),
        desc=f"caching object features ({split})",
    )
    return cached.remove_columns("image")  # the features replace the crops: no image is decoded again


__all__ = ["backbone_fingerprint", "cache_object_features"]
