"""Visual grounding for UMGF: the records and interface every grounder shares.

The paper grounds every noun phrase of the sentence, plus four general words (person, location, organization,
misc); each box found is a visual node linked to the words of its phrase (a general-word box to every word).
Here: `Grounding` (the objects of one sample, CONTRACT.md "Grounding"), the `Grounder` interface, and
`ground_batch`, the one place that decides which samples a grounder runs on and clips every box to its image.
The grounders themselves are in `model_free_grounding`, `detector_grounding` and `symbol_grounding`, registered by
name in `grounder_registry`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from .image_utils import clip_box
from .schema import GROUNDING_COLUMNS


def _number(value: Any, sample: str, column: str, index: int) -> float:
    """A grounding value that must be a number (a bool, string or None is an error naming sample, column, object)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"sample {sample!r}: {column} of object {index} must be numbers, got {value!r:.40}")
    return float(value)


def _whole(value: Any, sample: str, column: str, index: int) -> int:
    """A word index: a whole number (1.7 is an error, not word 1; 2.0 is word 2)."""
    number = _number(value, sample, column, index)
    if not number.is_integer():
        raise ValueError(f"sample {sample!r}: {column} of object {index} must be a whole word index, got {value!r}")
    return int(number)


@dataclass
class Grounding:
    """The visual objects of one sample: parallel lists, one entry per object (CONTRACT.md "Grounding").

    ``word_starts[i], word_ends[i]`` is the word span ``[start, end)`` of the phrase that produced box ``i``;
    ``-1, -1`` marks an object linked to every word (general words, grid cells). ``grounder`` names the grounder
    that made it; "" means not grounded yet.
    """

    boxes: list[list[float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    word_starts: list[int] = field(default_factory=list)
    word_ends: list[int] = field(default_factory=list)
    grounder: str = ""

    COLUMNS: ClassVar[tuple[str, ...]] = GROUNDING_COLUMNS

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any], sample: str = "") -> Grounding:
        """Read the grounding columns of one example, checking that the lists line up."""
        missing = [name for name in cls.COLUMNS if name not in columns]
        if missing:
            raise ValueError(f"sample {sample!r}: grounding lacks the columns {missing}")
        lists = [list(columns[name] or []) for name in cls.COLUMNS[:-1]]
        if len({len(values) for values in lists}) > 1:
            lengths = dict(zip(cls.COLUMNS[:-1], map(len, lists)))
            raise ValueError(f"sample {sample!r}: grounding columns differ in length: {lengths}")
        boxes, scores, phrases, starts, ends = lists
        bad = [i for i, box in enumerate(boxes) if isinstance(box, str) or not hasattr(box, "__len__") or len(box) != 4]
        if bad:
            raise ValueError(f"sample {sample!r}: object boxes {bad} are not [x0, y0, x1, y1]")
        return cls(
            boxes=[[_number(v, sample, "object_boxes", i) for v in box] for i, box in enumerate(boxes)],
            scores=[_number(s, sample, "object_scores", i) for i, s in enumerate(scores)],
            phrases=[str(p) for p in phrases],
            word_starts=[_whole(s, sample, "object_word_start", i) for i, s in enumerate(starts)],
            word_ends=[_whole(e, sample, "object_word_end", i) for i, e in enumerate(ends)],
            grounder=str(columns["grounder"] or ""),
        )

    @classmethod
    def of(cls, value: Grounding | Mapping[str, Any] | None, sample: str = "") -> Grounding | None:
        """A `Grounding` from a `Grounding`, a mapping of the grounding columns, or None (None when not grounded)."""
        grounding = value if isinstance(value, Grounding) or value is None else cls.from_columns(value, sample)
        return grounding if grounding is not None and grounding.grounder else None

    def to_columns(self) -> dict[str, Any]:
        """The grounding columns of this sample."""
        values = (self.boxes, self.scores, self.phrases, self.word_starts, self.word_ends, self.grounder)
        return dict(zip(self.COLUMNS, values))

    def check_spans(self, num_words: int, sample: str = "") -> None:
        """Raise if a word span is not ``-1, -1`` or a non-empty span inside ``num_words`` words."""
        for index, (start, end) in enumerate(zip(self.word_starts, self.word_ends)):
            if (start, end) != (-1, -1) and not 0 <= start < end <= num_words:
                raise ValueError(
                    f"sample {sample!r}: object {index} ({self.phrases[index]!r}) has word span [{start}, {end}), "
                    f"outside the sentence's {num_words} words"
                )

    def clipped(self, width: int, height: int) -> Grounding:
        """Boxes clipped to a ``width`` x ``height`` image; degenerate boxes (see `clip_box`) are dropped."""
        kept = [(i, box) for i, box in enumerate(clip_box(b, width, height) for b in self.boxes) if box is not None]
        return Grounding(
            boxes=[box for _, box in kept],
            scores=[self.scores[i] for i, _ in kept],
            phrases=[self.phrases[i] for i, _ in kept],
            word_starts=[self.word_starts[i] for i, _ in kept],
            word_ends=[self.word_ends[i] for i, _ in kept],
            grounder=self.grounder,
        )


class Grounder(ABC):
    """Finds the visual objects of (image, sentence) pairs.

    Subclasses set ``name`` (their key in `grounder_registry.GROUNDERS`) and keep their constructor arguments as
    attributes of the same names, so that `config` can rebuild them (the processor saves it).
    """

    name: ClassVar[str]
    #: Whether `ground_batch(reground=True)` replaces other grounders' groundings with this one's (False for a
    #: grounder that finds no objects itself).
    regrounds: ClassVar[bool] = True
    #: The constructor arguments `config` returns (what the processor saves as ``grounder_kwargs``).
    config_keys: ClassVar[tuple[str, ...]] = ()

    @abstractmethod
    def ground(
        self, images: Sequence[Image.Image], sentences: Sequence[Sequence[str]], sample_ids: Sequence[str]
    ) -> list[Grounding]:
        """Ground each sentence (a list of words) in its RGB image; boxes are in pixels of that image."""

    def config(self) -> dict[str, Any]:
        """The keyword arguments that rebuild this grounder."""
        return {key: getattr(self, key) for key in self.config_keys}


def ground_batch(
    grounder: Grounder,
    images: Sequence[Image.Image | None],
    sentences: Sequence[Sequence[str]],
    sample_ids: Sequence[str],
    groundings: Sequence[Grounding | None] | None = None,
    reground: bool = False,
) -> list[Grounding | None]:
    """The grounding of every sample of a batch, with one batched call of ``grounder``.

    A sample keeps its given grounding, unless ``reground`` is set, ``grounder.regrounds`` and another grounder
    made it; a sample with an image and no grounding kept is grounded by ``grounder``. Every
    grounding of a sample with an image is clipped to it. A sample with neither image nor grounding gives None.
    """
    count = len(sentences)
    kept: list[Grounding | None] = list(groundings) if groundings is not None else [None] * count
    if reground and grounder.regrounds:
        kept = [g if g is None or g.grounder == grounder.name else None for g in kept]
    todo = [(i, image) for i, image in enumerate(images) if kept[i] is None and image is not None]
    if todo:
        found = grounder.ground(
            [image for _, image in todo], [sentences[i] for i, _ in todo], [sample_ids[i] for i, _ in todo]
        )
        for (i, _), grounding in zip(todo, found):
            kept[i] = grounding
    for i, (image, given) in enumerate(zip(images, kept)):
        if image is not None and given is not None:
            kept[i] = given.clipped(*image.size)
    return kept
