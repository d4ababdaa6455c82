"""Showing which image regions fed which entities: the one box -> entity helper and the drawing of it.

Used by ``umgf-predict --draw``, the Gradio Space (through the pipeline's `MultimodalNERPipeline.draw_entities` and
`MultimodalNERPipeline.box_annotations`, so that a Space needs no umgf package) and the README's picture. The
drawing itself is torchvision's `draw_bounding_boxes`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image
from torchvision.utils import draw_bounding_boxes

from .schema_umgf import OTHER_COLOUR, TYPE_COLOURS

BOX_WIDTH = 3
MIN_SIDE = 256
"""Smaller images are drawn enlarged (by a whole factor, pixels kept sharp) so that the labels stay readable."""


def box_corners(box: dict[str, Any] | Sequence[float]) -> tuple[float, float, float, float]:
    """``(xmin, ymin, xmax, ymax)`` of a pipeline box (``{"xmin", "ymin", "xmax", "ymax"}``) or of a list."""
    if isinstance(box, dict):
        return box["xmin"], box["ymin"], box["xmax"], box["ymax"]
    x0, y0, x1, y1 = box
    return x0, y0, x1, y1


def supported_entities(entities: Sequence[dict[str, Any]]) -> list[tuple[tuple[float, ...], list[dict[str, Any]]]]:
    """Every grounded box that feeds an entity, with the entities it feeds, the most attending (highest alpha)
    first: ``[(box corners, [entity, ...]), ...]`` in the order the boxes first appear."""
    supports: dict[tuple[float, ...], list[tuple[float, dict[str, Any]]]] = {}
    for entity in entities:
        for box in entity["boxes"]:
            supports.setdefault(box_corners(box["box"]), []).append((box["alpha"], entity))
    return [
        (box, [entity for _, entity in sorted(linked, key=lambda pair: -pair[0])]) for box, linked in supports.items()
    ]


def box_label(entity: dict[str, Any]) -> str:
    """The label of a box fed to an entity: ``TYPE: words``."""
    return f"{entity['entity_group']}: {entity['word']}"


def drawing_scale(image: Image.Image) -> int:
    """The whole factor `draw_entities` enlarges ``image`` by: 1, or enough for its short side to reach MIN_SIDE."""
    return max(1, -(-MIN_SIDE // max(1, min(image.size))))


def draw_entities(image: Image.Image, entities: Sequence[dict[str, Any]]) -> Image.Image:
    """A copy of ``image`` (enlarged by `drawing_scale` when small) with every grounded box that feeds an entity
    outlined in the colour of the entity type attending to it most and labelled with that entity (`box_label`)."""
    scale = drawing_scale(image)
    rgb = image.convert("RGB")
    if scale > 1:
        rgb = rgb.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.NEAREST)
    boxes = supported_entities(entities)
    if not boxes:
        return rgb
    canvas = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1)
    corners = torch.tensor(
        [
            [x0 * scale, y0 * scale, max(x0 * scale, x1 * scale - 1), max(y0 * scale, y1 * scale - 1)]
            for (x0, y0, x1, y1), _ in boxes
        ]
    )
    colours = [TYPE_COLOURS.get(linked[0]["entity_group"], OTHER_COLOUR) for _, linked in boxes]
    drawn = draw_bounding_boxes(
        canvas,
        corners,
        labels=[box_label(linked[0]) for _, linked in boxes],
        colors=colours,
        width=BOX_WIDTH,
        label_colors=(255, 255, 255),
        fill_labels=True,
    )
    return Image.fromarray(drawn.permute(1, 2, 0).numpy())


__all__ = ["BOX_WIDTH", "MIN_SIDE", "box_corners", "box_label", "draw_entities", "drawing_scale", "supported_entities"]
