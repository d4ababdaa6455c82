"""Visual grounding for UMGF: which image regions become visual nodes, and which words they link to.

The paper grounds every noun phrase of the sentence, plus four general words (person, location,
organization, misc), with a visual grounding toolkit; each detected box is a visual node linked to the words
of its phrase (a general-word box is linked to every word). The grounders here, chosen by name:

- ``"detector"``: that procedure on a transformers zero-shot detector of the Grounding DINO family
  (default ``IDEA-Research/grounding-dino-tiny``), all queries of an image in one forward pass.
- ``"release"``: the authors' released variant, the top box of each of the four general words only.
- ``"grid"``: an N x N grid of equal regions linked to every word (the paper's "w/o Tar." ablation).
- ``"precomputed"``: runs nothing; groundings come with the samples (the dataset columns of CONTRACT.md).

Detection, box decoding and NMS are transformers'/torchvision's; only the phrase <-> box bookkeeping (the
score of a phrase is the best score over its tokens, as in Grounding DINO's phrase grounding) is written
here, because transformers' post-processing returns decoded token strings, which cannot be mapped back to
the phrase, and so to the words, a box came from.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, ClassVar, Mapping, Sequence

import torch
from PIL import Image
from torchvision.ops import batched_nms
from transformers.image_transforms import center_to_corners_format

from .image_utils_umgf import clip_box
from .noun_phrases import GENERAL_WORDS, NounPhraseExtractor, Phrase

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
SUPPORTED_DETECTOR_TYPES = ("grounding-dino", "mm-grounding-dino")


@dataclass
class Grounding:
    """The visual objects of one sample: parallel lists, one entry per object (CONTRACT.md columns).

    ``word_starts[i], word_ends[i]`` is the word span ``[start, end)`` of the phrase that produced box ``i``;
    ``-1, -1`` marks an object linked to every word (general words, grid cells).
    """

    boxes: list[list[float]] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    phrases: list[str] = field(default_factory=list)
    word_starts: list[int] = field(default_factory=list)
    word_ends: list[int] = field(default_factory=list)
    grounder: str = ""

    COLUMNS: ClassVar[tuple[str, ...]] = (
        "object_boxes",
        "object_scores",
        "object_phrases",
        "object_word_start",
        "object_word_end",
        "grounder",
    )

    def __len__(self) -> int:
        return len(self.boxes)

    @classmethod
    def from_columns(cls, columns: Mapping[str, Any], sample: str = "") -> Grounding:
        """Read the CONTRACT.md grounding columns of one example, checking that the lists line up."""
        missing = [name for name in cls.COLUMNS if name not in columns]
        if missing:
            raise ValueError(f"sample {sample!r}: grounding lacks the columns {missing}")
        lists = [list(columns[name] or []) for name in cls.COLUMNS[:-1]]
        if len({len(values) for values in lists}) > 1:
            lengths = dict(zip(cls.COLUMNS[:-1], map(len, lists)))
            raise ValueError(f"sample {sample!r}: grounding columns differ in length: {lengths}")
        boxes, scores, phrases, starts, ends = lists
        return cls(
            boxes=[[float(v) for v in box] for box in boxes],
            scores=[float(s) for s in scores],
            phrases=[str(p) for p in phrases],
            word_starts=[int(s) for s in starts],
            word_ends=[int(e) for e in ends],
            grounder=str(columns["grounder"] or ""),
        )

    def to_columns(self) -> dict[str, Any]:
        """The CONTRACT.md grounding columns of this sample."""
        return dict(
            zip(self.COLUMNS, (self.boxes, self.scores, self.phrases, self.word_starts, self.word_ends, self.grounder))
        )

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
    """Finds the visual objects of (image, sentence) pairs."""

    name: ClassVar[str]

    @abstractmethod
    def ground(
        self, images: Sequence[Image.Image], sentences: Sequence[Sequence[str]], sample_ids: Sequence[str]
    ) -> list[Grounding]:
        """Ground each sentence (a list of words) in its RGB image; boxes are in pixels of that image."""


class GridGrounder(Grounder):
    """N x N equal regions of the image, each linked to every word (the paper's "w/o Tar." ablation)."""

    name = "grid"

    def __init__(self, grid_size: int = 3):
        if grid_size < 1:
            raise ValueError(f"grid_size must be at least 1, got {grid_size}")
        self.grid_size = grid_size

    def ground(self, images, sentences, sample_ids):
        groundings = []
        for image in images:
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
            )
            groundings.append(grounding.clipped(width, height))
        return groundings


class PrecomputedGrounder(Grounder):
    """Runs no model: samples bring their grounding (CONTRACT.md columns, e.g. from ``ground_dataset.py``).

    A sample with an image but without a grounding gets no visual objects (text-only), with a warning.
    """

    name = "precomputed"

    def ground(self, images, sentences, sample_ids):
        for sample in sample_ids:
            logger.warning("sample %r has an image but no precomputed grounding: using it text-only", sample)
        return [Grounding(grounder=self.name) for _ in images]


@lru_cache(maxsize=2)
def _load_detector(detector: str, device: str) -> tuple[Any, torch.nn.Module]:
    """Load (once per process) a zero-shot detector and its processor through the Auto classes."""
    from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor

    model = AutoModelForZeroShotObjectDetection.from_pretrained(detector).to(device).eval()
    if model.config.model_type not in SUPPORTED_DETECTOR_TYPES:
        raise ValueError(
            f"detector {detector!r} is a {model.config.model_type!r} model; the detector grounder supports "
            f"{SUPPORTED_DETECTOR_TYPES} (token-level phrase scores)"
        )
    return AutoProcessor.from_pretrained(detector), model


class ZeroShotDetectorGrounder(Grounder):
    """Grounds the noun phrases and the four general words of each sentence with Grounding DINO.

    All queries of one image go into one caption (``"person . location . ... . the brandenburg gate ."``); a
    box's score for a phrase is its highest sigmoid score over the phrase's tokens. For every phrase the boxes
    scoring at least ``box_threshold`` are de-duplicated by NMS and the best ``max_boxes_per_phrase`` kept; the
    image then keeps its best ``max_objects`` boxes. Images with a side above ``max_image_side`` are
    downscaled before detection (boxes are returned in the original image's pixels).

    Args:
        detector: model id or folder of a Grounding DINO (or MM Grounding DINO) checkpoint.
        box_threshold: minimum phrase score of a kept box.
        max_boxes_per_phrase: boxes kept per phrase (the paper's grounding toolkit returns one).
        max_objects: cap on visual objects per image.
        nms_iou: IoU above which boxes of the same phrase are duplicates.
        use_noun_phrases: ground the sentence's noun phrases (False: general words only).
        general_words: queries linked to every word.
        spacy_model: spaCy pipeline for noun phrases (see `NounPhraseExtractor`).
        batch_size: images per detector forward pass.
        max_image_side: longest image side given to the detector.
        device: torch device; None picks CUDA when available.
    """

    name = "detector"

    def __init__(
        self,
        detector: str = DEFAULT_DETECTOR,
        box_threshold: float = 0.35,
        max_boxes_per_phrase: int = 1,
        max_objects: int = 10,
        nms_iou: float = 0.5,
        use_noun_phrases: bool = True,
        general_words: Sequence[str] = GENERAL_WORDS,
        spacy_model: str | None = None,
        batch_size: int = 8,
        max_image_side: int = 1333,
        device: str | None = None,
    ):
        self.detector = detector
        self.box_threshold = box_threshold
        self.max_boxes_per_phrase = max_boxes_per_phrase
        self.max_objects = max_objects
        self.nms_iou = nms_iou
        self.general_words = tuple(general_words)
        self.noun_phrases = NounPhraseExtractor(spacy_model) if use_noun_phrases else None
        self.batch_size = batch_size
        self.max_image_side = max_image_side
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    def queries(self, sentences: Sequence[Sequence[str]]) -> list[list[Phrase]]:
        """The grounding queries of each sentence: the general words, then its noun phrases."""
        general = [Phrase(word, -1, -1) for word in self.general_words]
        if self.noun_phrases is None:
            return [list(general) for _ in sentences]
        return [general + phrases for phrases in self.noun_phrases(sentences)]

    def ground(self, images, sentences, sample_ids):
        queries = self.queries(sentences)
        groundings = []
        for start in range(0, len(images), self.batch_size):
            batch = slice(start, start + self.batch_size)
            groundings += self._ground_batch(images[batch], queries[batch], sample_ids[batch])
        return groundings

    @staticmethod
    def _caption(phrases: Sequence[Phrase]) -> tuple[str, list[tuple[int, int]]]:
        """Grounding DINO's caption (queries separated by " . ") and each query's character span in it."""
        caption, spans = "", []
        for phrase in phrases:
            text = " ".join(phrase.text.lower().replace(".", " ").split())  # "." separates queries
            spans.append((len(caption), len(caption) + len(text)))
            caption += text + " . "
        return caption.rstrip(), spans

    def _downscaled(self, image: Image.Image) -> Image.Image:
        if max(image.size) <= self.max_image_side:
            return image
        small = image.copy()
        small.thumbnail((self.max_image_side, self.max_image_side))
        return small

    @torch.inference_mode()
    def _ground_batch(self, images, queries, sample_ids) -> list[Grounding]:
        processor, model = _load_detector(self.detector, self.device)
        captions, char_spans = zip(*(self._caption(phrases) for phrases in queries))
        text = processor.tokenizer(
            list(captions),
            padding="longest",
            truncation=True,
            max_length=model.config.max_text_len,
            return_tensors="pt",
        )
        pixels = processor.image_processor([self._downscaled(image) for image in images], return_tensors="pt")
        outputs = model(**text.to(self.device), **pixels.to(self.device))
        probs = outputs.logits.sigmoid().float().cpu()  # [B, queries, text tokens]
        relative_boxes = center_to_corners_format(outputs.pred_boxes.float().cpu())  # [B, queries, 4] in [0, 1]

        groundings = []
        for b, (image, phrases, spans, sample) in enumerate(zip(images, queries, char_spans, sample_ids)):
            width, height = image.size
            boxes = relative_boxes[b] * torch.tensor([width, height, width, height])
            token_spans = [(text.char_to_token(b, s), text.char_to_token(b, e - 1)) for s, e in spans]
            cut = [phrase.text for phrase, (s, e) in zip(phrases, token_spans) if s is None or e is None]
            if cut:
                logger.warning(
                    "sample %r: queries %s do not fit the detector's text length and are skipped", sample, cut
                )
            scores, phrase_ids, query_ids = [], [], []
            for p, (s, e) in enumerate(token_spans):
                if s is None or e is None:
                    continue
                phrase_scores = probs[b, :, s : e + 1].max(dim=-1).values  # phrase score: best over its tokens
                keep = torch.nonzero(phrase_scores >= self.box_threshold).flatten()
                scores.append(phrase_scores[keep])
                phrase_ids.append(torch.full_like(keep, p))
                query_ids.append(keep)
            groundings.append(self._select(phrases, boxes, scores, phrase_ids, query_ids).clipped(width, height))
        return groundings

    def _select(self, phrases, boxes, scores, phrase_ids, query_ids) -> Grounding:
        """NMS within each phrase, then the best boxes per phrase and per image."""
        if not scores:
            return Grounding(grounder=self.name)
        scores, phrase_ids, query_ids = torch.cat(scores), torch.cat(phrase_ids), torch.cat(query_ids)
        order = batched_nms(boxes[query_ids], scores, phrase_ids, self.nms_iou)  # sorted by decreasing score
        per_phrase: dict[int, int] = {}
        kept = []
        for index in order.tolist():
            phrase = int(phrase_ids[index])
            if per_phrase.get(phrase, 0) < self.max_boxes_per_phrase and len(kept) < self.max_objects:
                per_phrase[phrase] = per_phrase.get(phrase, 0) + 1
                kept.append(index)
        return Grounding(
            boxes=[boxes[query_ids[i]].tolist() for i in kept],
            scores=[float(scores[i]) for i in kept],
            phrases=[phrases[int(phrase_ids[i])].text for i in kept],
            word_starts=[phrases[int(phrase_ids[i])].start for i in kept],
            word_ends=[phrases[int(phrase_ids[i])].end for i in kept],
            grounder=self.name,
        )


class ReleaseGrounder(ZeroShotDetectorGrounder):
    """The authors' released variant: the top box of each of the four general words, linked to every word."""

    name = "release"

    def __init__(self, detector: str = DEFAULT_DETECTOR, **kwargs):
        kwargs = {"box_threshold": 0.0, "max_boxes_per_phrase": 1, "max_objects": len(GENERAL_WORDS), **kwargs}
        super().__init__(detector, use_noun_phrases=False, **kwargs)


GROUNDERS: dict[str, type[Grounder]] = {
    grounder.name: grounder
    for grounder in (ZeroShotDetectorGrounder, ReleaseGrounder, GridGrounder, PrecomputedGrounder)
}


def build_grounder(name: str, **kwargs) -> Grounder:
    """Instantiate the grounder registered under ``name`` (a key of `GROUNDERS`) with ``kwargs``."""
    if name not in GROUNDERS:
        raise ValueError(f"unknown grounder {name!r}; choose one of {sorted(GROUNDERS)}")
    return GROUNDERS[name](**kwargs)
