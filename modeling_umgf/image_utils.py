"""The one image loader of umgf (processor, pipeline, CLI, handler, training), and keeping boxes inside images.

It reads what `transformers.image_utils.load_image` reads (a path, an ``http(s)://`` URL, base64 data or a
``data:image/...;base64,`` URI, a PIL image) and more (bytes, arrays, `datasets.Image` dicts), in the same order
of checks. It is not `load_image` itself because that converts with ``Image.convert("RGB")``, which drops the
alpha channel (transparent pixels come out as whatever colour they stored, often black) and clips 16-bit
grayscale at 255 (a 16-bit PNG comes out white), and it does not check the HTTP status (an error page becomes an
"unidentified image"). Tweet images include transparent PNG stickers and scans, so here transparent pixels are
composited onto white and high-bit-depth grayscale is rescaled. Decoding, EXIF rotation and CMYK/palette
conversion are Pillow's; downloading is httpx's.
"""

from __future__ import annotations

import base64
import binascii
import io
import logging
import os
import warnings
from collections.abc import Sequence
from typing import Any, Union

import httpx
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

logger = logging.getLogger(__name__)

ImageInput = Union[Image.Image, str, os.PathLike, bytes, np.ndarray, dict, None]  # noqa: UP007 (a runtime alias)
"""What umgf accepts as an image: a PIL image, a file path, an ``http(s)://`` URL, base64 image data (plain or as a
``data:image/...;base64,`` URI), encoded bytes, an HxW[xC] uint8 array, a `datasets.Image` dict
(``{"bytes": ..., "path": ...}``), or None for a post without an image."""

DOWNLOAD_TIMEOUT = 10.0
"""Seconds to wait for an image URL when no timeout is given."""

MAX_IMAGE_PIXELS = 40_000_000
"""The pixel budget: an image of more pixels (width x height, read from its header before any pixel is decoded) is
refused with `UnreadableImageError`, so a small file that decodes into a huge image (a decompression bomb) never
allocates it. 40 megapixels is well above any tweet image (at most 4096 x 4096). The environment variable
``UMGF_MAX_IMAGE_PIXELS`` overrides it for every entry point (processor, pipeline, ``umgf-predict``, ``handler.py``);
`load_rgb_image` also takes ``max_pixels``."""

_HIGH_BIT_DEPTH_MODES = ("I", "I;16", "I;16B", "I;16L", "I;16N", "F")


class UnreadableImageError(ValueError):
    """An image that is missing, undecodable or of an unsupported kind."""


def pixel_budget(max_pixels: int | None = None) -> int:
    """The pixel budget in force: ``max_pixels`` when given, else ``UMGF_MAX_IMAGE_PIXELS``, else
    `MAX_IMAGE_PIXELS`."""
    if max_pixels is not None:
        return int(max_pixels)
    value = os.environ.get("UMGF_MAX_IMAGE_PIXELS")
    if value is None:
        return MAX_IMAGE_PIXELS
    if not value.strip().isdigit() or int(value) < 1:
        raise ValueError(f"UMGF_MAX_IMAGE_PIXELS must be a positive whole number of pixels, got {value!r}")
    return int(value)


def check_pixel_budget(width: int, height: int, max_pixels: int | None = None) -> None:
    """Raise `UnreadableImageError` when a ``width`` x ``height`` image exceeds the pixel budget (`pixel_budget`)."""
    budget = pixel_budget(max_pixels)
    if width * height > budget:
        raise UnreadableImageError(
            f"image of {width} x {height} = {width * height} pixels exceeds the pixel budget of {budget} pixels "
            "(a decompression bomb or an oversized image; raise UMGF_MAX_IMAGE_PIXELS to accept it)"
        )


def _read_string(source: str, timeout: float | None) -> bytes | str:
    """A string source as encoded bytes (URL, data URI, base64) or as the path of an existing file."""
    if source.startswith(("http://", "https://")):
        try:
            response = httpx.get(source, timeout=timeout or DOWNLOAD_TIMEOUT, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise UnreadableImageError(f"cannot download image {source}: {error}") from error
        return response.content
    if os.path.isfile(source):
        return source
    encoded = encoded_image_bytes(source)
    if encoded is None:
        raise UnreadableImageError(f"image file not found (nor an http(s) URL or base64 image data): {source[:200]}")
    return encoded


def encoded_image_bytes(source: str) -> bytes | None:
    """The bytes of a base64 string or a ``data:`` URI's base64 payload; None when ``source`` is neither."""
    data = source.split(",", 1)[1] if source.startswith("data:") and "," in source else source
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        return None


def _open(source: Any, timeout: float | None = None) -> Image.Image:
    """Open ``source`` (see `ImageInput`) as a PIL image without converting it."""
    if isinstance(source, str):
        source = _read_string(source, timeout)
    if isinstance(source, Image.Image):
        return source
    if isinstance(source, dict):
        if source.get("bytes") is not None:
            return _open(source["bytes"])
        if source.get("path"):
            return _open(source["path"])
        raise UnreadableImageError("image dict has neither 'bytes' nor 'path'")
    if isinstance(source, (bytes, bytearray)):
        return Image.open(io.BytesIO(source))
    if isinstance(source, (str, os.PathLike)):
        if not os.path.isfile(source):
            raise UnreadableImageError(f"image file not found: {os.fspath(source)}")
        return Image.open(source)
    if isinstance(source, np.ndarray):
        if source.dtype != np.uint8 or source.ndim not in (2, 3):
            raise UnreadableImageError(f"expected an HxW or HxWxC uint8 array, got {source.dtype} {source.shape}")
        return Image.fromarray(source)
    raise UnreadableImageError(f"unsupported image type {type(source).__name__}")


def load_rgb_image(source: ImageInput, timeout: float | None = None, max_pixels: int | None = None) -> Image.Image:
    """Decode ``source`` (see `ImageInput`; ``timeout`` is for URLs) into an upright 8-bit RGB image.

    Its size is checked against the pixel budget (``max_pixels``, see `pixel_budget`) from the image header,
    before the pixels are decoded.

    EXIF orientation is applied, palette/CMYK/grayscale images are converted, transparent pixels are put on a
    white background and 16-bit/float grayscale is rescaled to 0-255 by its own range.

    Raises:
        UnreadableImageError: when ``source`` is None, missing, undownloadable, corrupt, empty (zero width
            or height) or over the pixel budget.
    """
    if source is None:
        raise UnreadableImageError("no image")
    try:
        with warnings.catch_warnings():  # the pixel budget below is the check; Pillow's warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = _open(source, timeout)
        check_pixel_budget(image.width, image.height, max_pixels)  # the header's size: no pixel decoded yet
        image.load()
        image = ImageOps.exif_transpose(image)
    except Image.DecompressionBombError as error:  # over Pillow's own limit, refused by Image.open
        raise UnreadableImageError(
            f"image refused as a decompression bomb ({error}); umgf's pixel budget is {pixel_budget(max_pixels)} "
            "pixels, and Pillow refuses images over twice its PIL.Image.MAX_IMAGE_PIXELS whatever the budget"
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError) as error:  # Pillow raises these for corrupt files
        raise UnreadableImageError(f"cannot decode image: {error}") from error
    if image.width == 0 or image.height == 0:
        raise UnreadableImageError(f"empty image of size {image.size}")
    if image.mode in _HIGH_BIT_DEPTH_MODES:
        values = np.asarray(image, dtype=np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) * (255.0 / (high - low)) if high > low else np.zeros_like(values)
        image = Image.fromarray(scaled.round().astype(np.uint8), mode="L")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def load_images(
    images: Sequence[ImageInput], sample_ids: Sequence[str], timeout: float | None = None
) -> list[Image.Image | None]:
    """`load_rgb_image` for each sample; an image that cannot be read becomes None (the sample is then used
    text-only) with a warning naming the sample. None stays None."""
    loaded = []
    for image, sample in zip(images, sample_ids):
        try:
            loaded.append(None if image is None else load_rgb_image(image, timeout))
        except UnreadableImageError as error:
            logger.warning("sample %r: %s; using it text-only", sample, error)
            loaded.append(None)
    return loaded


def clip_box(box: list[float], width: int, height: int) -> list[float] | None:
    """Clip an ``[x0, y0, x1, y1]`` pixel box to a ``width`` x ``height`` image.

    Returns None for a degenerate box: not finite, or less than one pixel wide or high once clipped.
    """
    if len(box) != 4 or not all(np.isfinite(box)):
        return None
    x0, y0, x1, y1 = (float(v) for v in box)
    x0, x1 = min(max(x0, 0.0), width), min(max(x1, 0.0), width)
    y0, y1 = min(max(y0, 0.0), height), min(max(y1, 0.0), height)
    if x1 - x0 < 1.0 or y1 - y0 < 1.0:
        return None
    return [x0, y0, x1, y1]


def crop_box(image: Image.Image, box: list[float]) -> Image.Image:
    """Crop the pixels covered by ``box`` (a clipped box from `clip_box`), rounding outwards to whole pixels."""
    x0, y0, x1, y1 = box
    return image.crop((int(np.floor(x0)), int(np.floor(y0)), int(np.ceil(x1)), int(np.ceil(y1))))
