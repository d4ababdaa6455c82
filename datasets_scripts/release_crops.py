"""The visual crops the UMGF authors released, as the images and groundings of a dataset.

The authors grounded the four general words of every tweet image with a one-stage visual grounding model and
published the crops (github.com/TransformersWsz/UMGF, README "Preprocess"), one folder per tweet image::

    <crops_dir>/<IMGID>/crop_person_<IMGID>.jpg
    <crops_dir>/<IMGID>/crop_miscellaneous_<IMGID>.jpg
    <crops_dir>/<IMGID>/crop_location_<IMGID>.jpg
    <crops_dir>/<IMGID>/crop_organization_<IMGID>.jpg

Their crops are the only input their trained checkpoints saw, so evaluating a converted checkpoint (or training the
``release`` preset as they did) uses them instead of grounding the tweet images again. Here the four crops of a
tweet are laid side by side into one picture, and the tweet's grounding points at each tile: the processor then
cuts out exactly the released pixels, and everything downstream (crop transform, feature cache, pipeline) is the
usual path. The grounding's grounder is ``"release"``, the name of the grounder that grounds the same four words
in a new image, so a processor of the ``release`` preset keeps these groundings and grounds new images itself.

A missing or unreadable crop is an error naming the tweet and the file (the authors' code stops there too); with
``on_missing="text-only"`` the tweet is used without objects instead, and counted in the report.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import datasets
from PIL import Image

from modeling_umgf.image_utils import UnreadableImageError, load_rgb_image
from modeling_umgf.schema import GENERAL_WORDS, empty_grounding

from .umt_format import is_plain_file_name

logger = logging.getLogger(__name__)

#: The crop files of a tweet in the order the authors' dataset reads them, and the general word of each.
CROP_FILES: tuple[tuple[str, str], ...] = (
    ("person", "person"),
    ("miscellaneous", "misc"),
    ("location", "location"),
    ("organization", "organization"),
)
assert {word for _, word in CROP_FILES} == set(GENERAL_WORDS)
GROUNDER = "release"


@dataclass
class CropsReport:
    """How many tweets of a split got their crops, and which went without (``on_missing="text-only"``)."""

    tweets: int = 0
    with_crops: int = 0
    text_only_ids: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.tweets} tweets: {self.with_crops} with the released crops, "
            f"{len(self.text_only_ids)} text-only for lack of a crop"
        )


def crop_paths(crops_dir: Path, image_id: str) -> list[Path]:
    """The four crop files of a tweet image, in the authors' order."""
    return [crops_dir / image_id / f"crop_{name}_{image_id}.jpg" for name, _ in CROP_FILES]


def tiled(crops: list[Image.Image]) -> tuple[Image.Image, list[list[float]]]:
    """The crops side by side on one canvas, and the box of each tile in it."""
    width, height = sum(c.width for c in crops), max(c.height for c in crops)
    canvas = Image.new("RGB", (width, height))
    boxes, x = [], 0
    for crop in crops:
        canvas.paste(crop, (x, 0))
        boxes.append([float(x), 0.0, float(x + crop.width), float(crop.height)])
        x += crop.width
    return canvas, boxes


def release_crops_row(crops_dir: Path, image_id: str, sample: str) -> dict[str, Any]:
    """The ``image`` (tiled crops, PNG bytes) and grounding columns of one tweet. Raises FileNotFoundError naming
    the tweet and the file when a crop is missing or unreadable."""
    if not is_plain_file_name(image_id):
        raise ValueError(f"tweet {sample!r}: image id {image_id!r} is not a plain file name")
    crops = []
    for path in crop_paths(crops_dir, image_id):
        try:
            crops.append(load_rgb_image(path))
        except UnreadableImageError as error:
            raise FileNotFoundError(f"tweet {sample!r} (IMGID {image_id}): released crop {path}: {error}") from None
    canvas, boxes = tiled(crops)
    encoded = io.BytesIO()
    canvas.save(encoded, format="PNG")  # lossless: the tiles are the decoded crop pixels
    return {
        "image": {"bytes": encoded.getvalue(), "path": None},
        "object_boxes": boxes,
        "object_scores": [1.0] * len(boxes),
        "object_phrases": [word for _, word in CROP_FILES],
        "object_word_start": [-1] * len(boxes),
        "object_word_end": [-1] * len(boxes),
        "grounder": GROUNDER,
    }


def attach_release_crops(
    dataset: datasets.Dataset, crops_dir: str | Path, on_missing: str = "error"
) -> tuple[datasets.Dataset, CropsReport]:
    """``dataset`` (columns of CONTRACT.md, with ``image_id``) with each tweet's released crops as its image and
    grounding; ``on_missing``: "error" (default) or "text-only" (no image, no objects; counted in the report)."""
    if on_missing not in ("error", "text-only"):
        raise ValueError(f"on_missing must be 'error' or 'text-only', got {on_missing!r}")
    crops_dir = Path(crops_dir)
    if not crops_dir.is_dir():
        raise FileNotFoundError(f"released crops folder {crops_dir} does not exist")
    report = CropsReport()

    def attach(row: dict[str, Any]) -> dict[str, Any]:
        report.tweets += 1
        try:
            columns = release_crops_row(crops_dir, row["image_id"], row["id"])
        except FileNotFoundError as error:
            if on_missing == "error":
                raise
            logger.warning("%s: using it text-only", error)
            report.text_only_ids.append(row["id"])
            return {"image": None, **empty_grounding()}
        report.with_crops += 1
        return columns

    attached = dataset.map(attach, desc="attaching the released crops", load_from_cache_file=False)
    return attached.cast(dataset.features), report


__all__ = ["CROP_FILES", "CropsReport", "attach_release_crops", "crop_paths", "release_crops_row", "tiled"]
