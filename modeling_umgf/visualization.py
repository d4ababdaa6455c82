"""Showing which image regions fed which entities: the display colour of each entity type, the one box -> entity
helper and the drawing of it.

Used by ``umgf-predict --draw``, the Gradio Space (through the pipeline's `MultimodalNERPipeline.draw_entities`,
`MultimodalNERPipeline.box_annotations` and `MultimodalNERPipeline.entity_colours`, so that a Space needs no umgf
package) and the README's picture. The drawing itself is Pillow's `ImageDraw`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from PIL import Image, ImageDraw, ImageFont

TYPE_COLOURS: dict[str, tuple[int, int, int]] = {
    "PER": (230, 25, 75),
    "LOC": (60, 180, 75),
    "ORG": (0, 130, 200),
    "MISC": (245, 130, 48),
}
"""Display colour per entity type (CLI drawings, the Space); other types are `OTHER_COLOUR`."""
OTHER_COLOUR: tuple[int, int, int] = (128, 128, 128)


def hex_colour(entity_type: str) -> str:
    """`TYPE_COLOURS` of a type as ``#rrggbb`` (for HTML widgets)."""
    return "#{:02x}{:02x}{:02x}".format(*TYPE_COLOURS.get(entity_type, OTHER_COLOUR))


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


def contrast_colour(colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white, whichever stands out more against ``colour`` (by its relative luminance)."""
    red, green, blue = colour
    return (0, 0, 0) if 0.299 * red + 0.587 * green + 0.114 * blue > 140 else (255, 255, 255)


def box_caption(entity: dict[str, Any]) -> str:
    """A box's label with the entity's score: ``TYPE: words 0.97``."""
    return f"{box_label(entity)} {entity['score']:.2f}"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    """Pillow's built-in font at ``size`` pixels (its bitmap font where FreeType is missing)."""
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, ImportError, OSError):  # Pillow without FreeType: the fixed-size bitmap font
        return ImageFont.load_default()


def _wrap(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> list[str]:
    """``text`` cut at spaces into lines no wider than ``width`` pixels (a longer word gets a line of its own)."""
    lines: list[str] = []
    for word in text.split():
        if lines and draw.textlength(f"{lines[-1]} {word}", font=font) <= width:
            lines[-1] = f"{lines[-1]} {word}"
        else:
            lines.append(word)
    return lines or [""]


def draw_entities(image: Image.Image, entities: Sequence[dict[str, Any]], text: str | None = None) -> Image.Image:
    """A copy of ``image`` (enlarged by `drawing_scale` when small) with every grounded box that feeds an entity
    outlined in the colour of the entity type attending to it most, between two thin lines of a contrasting colour
    (`contrast_colour`) so that it stands out on any picture, and labelled inside the picture with that entity and
    its score (`box_caption`). Below the picture, a band with the post ``text`` (when given) and every entity with
    its score."""
    scale = drawing_scale(image)
    rgb = image.convert("RGB")
    if scale > 1:
        rgb = rgb.resize((rgb.width * scale, rgb.height * scale), Image.Resampling.NEAREST)
    width, height = rgb.size
    font = _font(max(12, min(width, height) // 18))
    draw = ImageDraw.Draw(rgb)
    boxes = []
    for (x0, y0, x1, y1), linked in supported_entities(entities):
        colour = TYPE_COLOURS.get(linked[0]["entity_group"], OTHER_COLOUR)
        left, top = round(x0 * scale), round(y0 * scale)
        right, bottom = max(left, round(x1 * scale) - 1), max(top, round(y1 * scale) - 1)
        boxes.append(((left, top, right, bottom), colour, contrast_colour(colour), linked[0]))
    # in passes, so that no box's halo covers another box's outline and no outline covers a label
    for (left, top, right, bottom), _, halo, _ in boxes:
        draw.rectangle((left - 1, top - 1, right + 1, bottom + 1), outline=halo, width=1)
    for (left, top, right, bottom), colour, halo, _ in boxes:
        draw.rectangle((left, top, right, bottom), outline=colour, width=BOX_WIDTH)
        if right - left > 2 * BOX_WIDTH and bottom - top > 2 * BOX_WIDTH:
            inner = (left + BOX_WIDTH, top + BOX_WIDTH, right - BOX_WIDTH, bottom - BOX_WIDTH)
            draw.rectangle(inner, outline=halo, width=1)
    for (left, top, _, _), colour, halo, entity in boxes:
        caption = box_caption(entity)
        _, _, text_width, text_height = draw.textbbox((0, 0), caption, font=font)
        label_width, label_height = text_width + 6, text_height + 4
        x = min(max(0, left), max(0, width - label_width))  # kept inside the picture
        y = min(max(0, top), max(0, height - label_height))
        draw.rectangle((x, y, x + label_width - 1, y + label_height - 1), fill=colour, outline=halo)
        draw.text((x + 3, y + 1), caption, fill=halo, font=font)
    return _with_caption(rgb, entities, text, font)


def _with_caption(picture: Image.Image, entities: Sequence[dict[str, Any]], text: str | None, font: Any) -> Image.Image:
    """``picture`` above a white band with the post ``text`` and one line per entity: a chip of its type's colour,
    ``TYPE: words`` and its score."""
    measure = ImageDraw.Draw(picture)
    margin, line = 8, round(measure.textbbox((0, 0), "Ag", font=font)[3] * 1.4) + 2
    lines = _wrap(measure, text, font, picture.width - 2 * margin) if text else []
    rows = len(lines) + max(1, len(entities))
    band = Image.new("RGB", (picture.width, picture.height + rows * line + 2 * margin), (255, 255, 255))
    band.paste(picture, (0, 0))
    draw = ImageDraw.Draw(band)
    y = picture.height + margin
    for words in lines:
        draw.text((margin, y), words, fill=(0, 0, 0), font=font)
        y += line
    if not entities:
        draw.text((margin, y), "(no entities)", fill=(90, 90, 90), font=font)
    for entity in entities:
        colour = TYPE_COLOURS.get(entity["entity_group"], OTHER_COLOUR)
        chip = line - 6
        draw.rectangle((margin, y + 2, margin + chip, y + 2 + chip), fill=colour, outline=(0, 0, 0))
        draw.text((margin + chip + 6, y), box_caption(entity), fill=(0, 0, 0), font=font)
        y += line
    return band


__all__ = [
    "BOX_WIDTH",
    "MIN_SIDE",
    "box_caption",
    "box_corners",
    "box_label",
    "contrast_colour",
    "draw_entities",
    "drawing_scale",
    "supported_entities",
]
