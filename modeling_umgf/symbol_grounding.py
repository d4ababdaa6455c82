"""Grounding for the built-in synthetic task: its coloured symbols, found in the pixels of a new image.

``"symbols"`` grounds a synthetic image (`datasets_scripts.synthetic`, one symbol per entity mention, left to right)
through the same interface as ``"detector"`` grounds a real post, so the main job's model reads images at inference
as a real one does (boxes -> crops -> backbone -> graph). Written here because the task is ours; the
connected-component labelling is scipy's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
from PIL import Image
from scipy import ndimage

from .grounding import Grounder, Grounding
from .noun_phrases import Phrase


class SymbolGrounder(Grounder):
    """Grounds the phrases of a synthetic-task sentence in the symbols of its image.

    The phrases are the runs of non-function words (as noun phrases are for the paper); the symbols, the connected
    regions of saturated pixels (the backgrounds are pale), left to right. The k-th symbol is grounded to the k-th
    phrase; a symbol beyond the last phrase is linked to every word, a phrase beyond the last symbol gets no object.

    Args:
        function_words: the words of the task's templates (everything else belongs to a phrase).
        saturation: a pixel belongs to a symbol when its largest and smallest channel differ by more than this.
        min_pixels: smaller regions are noise, not symbols.
    """

    name = "symbols"
    config_keys: ClassVar[tuple[str, ...]] = ("function_words", "saturation", "min_pixels")

    def __init__(self, function_words: Sequence[str] = (), saturation: int = 80, min_pixels: int = 12) -> None:
        self.function_words = sorted({word.lower() for word in function_words})
        self.saturation = saturation
        self.min_pixels = min_pixels
        self._function_words = set(self.function_words)

    def phrases(self, words: Sequence[str]) -> list[Phrase]:
        """The maximal runs of non-function words, in order, as word spans."""
        phrases, start = [], None
        for index, word in enumerate([*words, ""]):
            inside = index < len(words) and word.lower() not in self._function_words
            if inside and start is None:
                start = index
            elif not inside and start is not None:
                phrases.append(Phrase(" ".join(words[start:index]), start, index))
                start = None
        return phrases

    def symbols(self, image: Image.Image) -> list[list[float]]:
        """Boxes ``[x0, y0, x1, y1]`` (pixels, ends exclusive) of the symbols, left to right."""
        pixels = np.asarray(image.convert("RGB"), dtype=np.int16)
        saturated = (pixels.max(-1) - pixels.min(-1)) > self.saturation
        regions, count = ndimage.label(saturated)
        sizes = ndimage.sum_labels(saturated, regions, index=np.arange(1, count + 1))
        boxes = [
            [float(cols.start), float(rows.start), float(cols.stop), float(rows.stop)]
            for (rows, cols), size in zip(ndimage.find_objects(regions), sizes)
            if size >= self.min_pixels
        ]
        return sorted(boxes, key=lambda box: (box[0], box[1]))

    def ground(self, images, sentences, sample_ids):
        groundings = []
        for image, words in zip(images, sentences):
            phrases, boxes = self.phrases(words), self.symbols(image)
            linked = [phrases[k] if k < len(phrases) else Phrase("symbol", -1, -1) for k in range(len(boxes))]
            groundings.append(
                Grounding(
                    boxes=boxes,
                    scores=[1.0] * len(boxes),
                    phrases=[phrase.text for phrase in linked],
                    word_starts=[phrase.start for phrase in linked],
                    word_ends=[phrase.end for phrase in linked],
                    grounder=self.name,
                )
            )
        return groundings


__all__ = ["SymbolGrounder"]
