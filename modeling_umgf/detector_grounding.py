"""Grounding with a zero-shot detector of the Grounding DINO family (the paper's procedure, and the authors' variant).

- ``"detector"`` (`ZeroShotDetectorGrounder`): the sentence's noun phrases and the four general words, all queries
  of an image in one caption and one forward pass (default detector ``IDEA-Research/grounding-dino-tiny``).
- ``"release"`` (`ReleaseGrounder`): the authors' released variant, the top box of each general word only.

Detection, box decoding and NMS are transformers'/torchvision's; only the phrase <-> box bookkeeping (the score
of a phrase is the best score over its tokens, as in Grounding DINO's phrase grounding) is written here, because
transformers' post-processing returns decoded token strings, which cannot be mapped back to the phrase, and so
to the words, a box came from.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import torch
from PIL import Image
from torchvision.ops import batched_nms
from transformers.image_transforms import center_to_corners_format

from .grounding import Grounder, Grounding
from .noun_phrases import NounPhraseExtractor, Phrase
from .schema_umgf import GENERAL_WORDS

logger = logging.getLogger(__name__)

DEFAULT_DETECTOR = "IDEA-Research/grounding-dino-tiny"
SUPPORTED_DETECTOR_TYPES = ("grounding-dino", "mm-grounding-dino")


@lru_cache(maxsize=2)
def _load_detector(detector: str, device: str) -> tuple[Any, Any]:
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
    config_keys: ClassVar[tuple[str, ...]] = (
        "detector",
        "box_threshold",
        "max_boxes_per_phrase",
        "max_objects",
        "nms_iou",
        "use_noun_phrases",
        "general_words",
        "spacy_model",
        "batch_size",
        "max_image_side",
    )

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
        self.general_words = list(general_words)
        self.use_noun_phrases = use_noun_phrases
        self.spacy_model = spacy_model
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
        kept: list[int] = []
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
    config_keys: ClassVar[tuple[str, ...]] = tuple(
        key for key in ZeroShotDetectorGrounder.config_keys if key != "use_noun_phrases"
    )

    def __init__(self, detector: str = DEFAULT_DETECTOR, **kwargs):
        kwargs = {"box_threshold": 0.0, "max_boxes_per_phrase": 1, "max_objects": len(GENERAL_WORDS), **kwargs}
        super().__init__(detector, use_noun_phrases=False, **kwargs)
