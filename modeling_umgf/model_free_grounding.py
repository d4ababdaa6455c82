"""The grounders that run no model: ``"grid"`` (the paper's "w/o Tar." ablation) and ``"precomputed"``."""

from __future__ import annotations

import logging

from .grounding import Grounder, Grounding

logger = logging.getLogger(__name__)


class GridGrounder(Grounder):
    """N x N equal regions of the image, each linked to every word (the paper's "w/o Tar." ablation).

    Cells under a pixel wide or high (images smaller than the grid) are dropped, with a warning naming the sample.
    """

    name = "grid"
    config_keys = ("grid_size",)

    def __init__(self, grid_size: int = 3):
        if grid_size < 1:
            raise ValueError(f"grid_size must be at least 1, got {grid_size}")
        self.grid_size = grid_size

    def ground(self, images, sentences, sample_ids):
        groundings = []
        for image, sample in zip(images, sample_ids):
            n, (width, height) = self.grid_size, image.size
            cells = [(row, col) for row in range(n) for col in range(n)]
            boxes = [
                [col * width / n, row * height / n, (col + 1) * width / n, (row + 1) * height / n] for row, col in cells
            ]
            grounding = Grounding(
                boxes=boxes,
                scores=[1.0] * len(cells),
                phrases=[f"grid cell ({row}, {col})" for row, col in cells],
                word_starts=[-1] * len(cells),
                word_ends=[-1] * len(cells),
                grounder=self.name,
            ).clipped(width, height)
            if len(grounding) < len(cells):
                logger.warning(
                    "sample %r: its %dx%d image is too small for a %dx%d grid: %d of %d cells are under a pixel and "
                    "dropped",
                    sample,
                    width,
                    height,
                    n,
                    n,
                    len(cells) - len(grounding),
                    len(cells),
                )
            groundings.append(grounding)
        return groundings


class PrecomputedGrounder(Grounder):
    """Runs no model: samples bring their grounding (the grounding columns, e.g. from ``ground_dataset.py``).

    A sample with an image but without a grounding gets no visual objects (text-only), with a warning.
    """

    name = "precomputed"
    regrounds = False

    def ground(self, images, sentences, sample_ids):
        for sample in sample_ids:
            logger.warning("sample %r has an image but no precomputed grounding: using it text-only", sample)
        return [Grounding(grounder=self.name) for _ in images]


__all__ = ["GridGrounder", "PrecomputedGrounder"]
