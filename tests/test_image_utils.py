"""image_utils: the one image loader (modes, EXIF, transparency, bit depth, the pixel budget) and box clipping."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from modeling_umgf.image_utils import UnreadableImageError, clip_box, crop_box, load_rgb_image


def pixels(image: Image.Image) -> list[tuple[int, ...]]:
    return [tuple(p) for p in np.asarray(image).reshape(-1, len(image.getbands())).tolist()]


def test_image_modes_exif_and_sizes_load_as_upright_rgb() -> None:
    rgba = Image.new("RGBA", (2, 1), (255, 0, 0, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))  # fully transparent -> white
    assert pixels(load_rgb_image(rgba)) == [(255, 0, 0), (255, 255, 255)]
    assert pixels(load_rgb_image(Image.new("L", (1, 1), 77))) == [(77, 77, 77)]
    assert load_rgb_image(Image.new("CMYK", (1, 1), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    palette = Image.new("P", (2, 1))
    palette.putpalette([10, 20, 30, 40, 50, 60])
    palette.putpixel((1, 0), 1)
    palette.info["transparency"] = 0
    assert pixels(load_rgb_image(palette)) == [(255, 255, 255), (40, 50, 60)]
    sixteen = Image.fromarray(np.array([[0, 1000, 2000]], dtype=np.uint16))
    assert [p[0] for p in pixels(load_rgb_image(sixteen))] == [0, 128, 255]
    # EXIF orientation 6: the stored 4x2 picture is shown rotated 90 degrees clockwise.
    stored = Image.new("RGB", (4, 2))
    stored.putpixel((0, 0), (255, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    encoded = io.BytesIO()
    stored.save(encoded, "PNG", exif=exif)
    upright = load_rgb_image({"bytes": encoded.getvalue(), "path": None})
    assert upright.size == (2, 4) and upright.getpixel((1, 0)) == (255, 0, 0)
    assert load_rgb_image(np.zeros((1, 1, 3), dtype=np.uint8)).size == (1, 1)
    for bad in (None, b"", {"bytes": None, "path": None}, np.zeros((2, 2), dtype=np.float32)):
        with pytest.raises(UnreadableImageError):
            load_rgb_image(bad)


def test_the_pixel_budget_is_read_from_the_header_and_configurable(monkeypatch) -> None:
    image = Image.new("RGB", (20, 10))
    assert load_rgb_image(image, max_pixels=200).size == (20, 10)
    with pytest.raises(UnreadableImageError, match="20 x 10 = 200 pixels exceeds the pixel budget of 199 pixels"):
        load_rgb_image(image, max_pixels=199)
    monkeypatch.setenv("UMGF_MAX_IMAGE_PIXELS", "150")
    with pytest.raises(UnreadableImageError, match="budget of 150 pixels"):
        load_rgb_image(image)


def test_boxes_are_clipped_to_the_image_and_crops_round_outwards() -> None:
    assert clip_box([-5.0, 2.0, 30.0, 8.5], 20, 10) == [0.0, 2.0, 20.0, 8.5]
    for degenerate in ([0, 0, 0.5, 5], [25, 0, 30, 5], [0, 0, float("nan"), 5], [0, 0, 5]):
        assert clip_box(degenerate, 20, 10) is None
    image = Image.fromarray(np.arange(200, dtype=np.uint8).reshape(10, 20))
    crop = crop_box(image, [1.5, 2.2, 4.1, 3.9])  # whole pixels 1..4 x 2..3
    assert np.array_equal(np.asarray(crop), np.arange(200, dtype=np.uint8).reshape(10, 20)[2:4, 1:5])
