"""Image processor for UMGF's object crops: timm's own evaluation transform for the vision backbone.

The transform itself (resize, centre crop, normalisation) is timm's ``create_transform`` built from timm's
``resolve_data_config`` for the configured backbone. This small class only wraps it in an
`ImageProcessingMixin` so that `ProcessorMixin` can save and load it: transformers' own
`TimmWrapperImageProcessor` does the same wrapping, but it drops ``pretrained_cfg`` from its saved dict and
disables ``save_pretrained``, so it cannot be reloaded from a processor folder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature


class UMGFImageProcessor(BaseImageProcessor):
    """Turns RGB object crops into ``pixel_values`` for the timm vision backbone of UMGF.

    Args:
        vision_backbone: timm model name (with or without a pretrained tag), e.g. ``"resnet152"`` or
            ``"resnet152.tv_in1k"``; its pretrained data config decides the transform.
        data_config: a timm data config (``input_size``, ``interpolation``, ``mean``, ``std``, ``crop_pct``,
            ``crop_mode``) that overrides the one resolved from ``vision_backbone``.
    """

    model_input_names = ["pixel_values"]

    def __init__(self, vision_backbone: str = "resnet152", data_config: dict[str, Any] | None = None, **kwargs):
        super().__init__(**kwargs)
        self.vision_backbone = vision_backbone
        if data_config is None:
            pretrained_cfg = timm.models.get_pretrained_cfg(vision_backbone)
            if pretrained_cfg is None:
                raise ValueError(f"timm knows no pretrained config for vision backbone {vision_backbone!r}")
            data_config = timm.data.resolve_data_config(pretrained_cfg=pretrained_cfg.to_dict())
        self.data_config = {
            key: list(value) if isinstance(value, tuple) else value for key, value in data_config.items()
        }
        settings: dict[str, Any] = {
            key: tuple(value) if isinstance(value, list) else value for key, value in self.data_config.items()
        }
        self._transform = timm.data.create_transform(**settings, is_training=False)

    @property
    def image_size(self) -> tuple[int, int]:
        """(height, width) of the transformed crops."""
        _, height, width = self.data_config["input_size"]
        return height, width

    def preprocess(
        self, images: Image.Image | Sequence[Image.Image], return_tensors: str | None = "pt"
    ) -> BatchFeature:
        """Transform RGB crops into a ``pixel_values`` tensor of shape ``[N, 3, H, W]`` (N may be 0)."""
        if return_tensors not in ("pt", None):
            raise ValueError(f"UMGFImageProcessor returns torch tensors only, got return_tensors={return_tensors!r}")
        images = [images] if isinstance(images, Image.Image) else list(images)
        if images:
            pixel_values = torch.stack([self._transform(image) for image in images])
        else:
            pixel_values = torch.zeros(0, 3, *self.image_size)
        return BatchFeature({"pixel_values": pixel_values})

    def to_dict(self) -> dict[str, Any]:
        """Serialise the settings; the transform is rebuilt from ``data_config`` on load."""
        output = super().to_dict()
        output.pop("_transform", None)
        return output
