"""Grounding with a zero-shot detector of the Grounding DINO family (the paper's procedure, and the authors' variant).

``"detector"`` (`ZeroShotDetectorGrounder`) grounds the sentence's noun phrases and the four general words in one
caption per image; ``"release"`` (`ReleaseGrounder`) keeps the top box of each general word (the authors' variant).
Detection, box decoding and NMS are transformers'/torchvision's; only the phrase <-> box bookkeeping is written
here, because transformers' post-processing returns token strings that cannot be mapped back to the words.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torchvision.ops import batched_nms
from transformers.image_transforms import center_to_corners_format

from .grounding import Grounder, Grounding
from .noun_phrases import NounPhraseExtractor, Phrase
from .schema import GENERAL_WORDS

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
    if torch.device(device).type == "cpu":
        use_gather_deformable_attention(model)
    return AutoProcessor.from_pretrained(detector), model


class GatherDeformableAttention(nn.Module):
    """Multi-scale deformable attention (Deformable DETR, in Grounding DINO's encoder and decoder) as one weighted
    gather: a drop-in for transformers' ``MultiScaleDeformableAttention`` (same forward arguments, same output up
    to float rounding, no parameters), fast on CPU, where no library has a kernel for it (transformers' PyTorch
    path materialises every sample; its compiled kernel is CUDA only).
    """

    def forward(
        self,
        value: torch.Tensor,
        value_spatial_shapes: torch.Tensor,
        value_spatial_shapes_list: list[tuple[int, int]],
        level_start_index: torch.Tensor,
        sampling_locations: torch.Tensor,
        attention_weights: torch.Tensor,
        im2col_step: int,
    ) -> torch.Tensor:
        """``value`` [B, S, heads, dim], ``sampling_locations`` [B, Q, heads, levels, points, 2] in [0, 1] (x, y),
        ``attention_weights`` [B, Q, heads, levels, points] -> [B, Q, heads * dim]."""
        # Each query reads, per head, levels x points bilinear samples of the value maps, weighted by its attention.
        # Each sample's four corners get weight (attention x bilinear), and embedding_bag (mode="sum" with
        # per_sample_weights) gathers and sums the corners' value rows in one pass. Every level's map gets a border
        # of zeros, so a corner outside it reads zero, as grid_sample's padding_mode="zeros" (align_corners=False).
        batch, _, heads, dim = value.shape
        _, queries, _, levels, points, _ = sampling_locations.shape
        shapes = [(int(height), int(width)) for height, width in value_spatial_shapes_list]
        maps = value.split([height * width for height, width in shapes], 1)
        table = torch.cat(
            [
                F.pad(level.view(batch, height, width, heads * dim), (0, 0, 1, 1, 1, 1)).view(batch, -1, heads, dim)
                for level, (height, width) in zip(maps, shapes)
            ],
            1,
        )
        starts = [0]
        for height, width in shapes[:-1]:
            starts.append(starts[-1] + (height + 2) * (width + 2))

        def per_sample(values: list[int], dtype: torch.dtype) -> torch.Tensor:
            """A constant of each level, for each of the ``levels * points`` samples of a query and head."""
            return torch.tensor(values, dtype=dtype, device=value.device).repeat_interleave(points)

        widths = per_sample([width for _, width in shapes], sampling_locations.dtype)
        heights = per_sample([height for height, _ in shapes], sampling_locations.dtype)
        samples = levels * points
        locations = sampling_locations.reshape(batch, queries, heads, samples, 2)
        x = locations[..., 0] * widths - 0.5  # in pixels of the sample's level
        y = locations[..., 1] * heights - 0.5
        x0, y0 = x.floor(), y.floor()
        fx, fy = x - x0, y - y0
        attention = attention_weights.reshape(batch, queries, heads, samples)
        high_y = fy * attention
        low_y = attention - high_y  # attention weight x (1 - fy)
        low_x = 1 - fx
        # A bag (b, query, head) holds its 4 corners x samples; the row of (batch b, cell s, head h) in the table is
        # (b * cells + s) * heads + h. Corner coordinates are clamped to the border (-1 or the size), shifted by 1.
        weights = torch.empty(batch, queries, heads, 4, samples, dtype=value.dtype, device=value.device)
        for corner, (wy, wx) in enumerate(((low_y, low_x), (low_y, fx), (high_y, low_x), (high_y, fx))):
            torch.mul(wy, wx, out=weights[:, :, :, corner])
        base = (
            torch.arange(batch, dtype=torch.int32, device=value.device).view(batch, 1, 1, 1) * (table.shape[1] * heads)
            + torch.arange(heads, dtype=torch.int32, device=value.device).view(1, 1, heads, 1)
            + per_sample(starts, torch.int32) * heads
        )
        row_steps = per_sample([(width + 2) * heads for _, width in shapes], torch.int32)
        left = x0.clamp(min=-1).minimum(widths).add_(1).to(torch.int32).mul_(heads)
        right = x0.add_(1).clamp_(min=-1).minimum(widths).add_(1).to(torch.int32).mul_(heads)
        top = y0.clamp(min=-1).minimum(heights).add_(1).to(torch.int32).mul_(row_steps).add_(base)
        bottom = y0.add_(1).clamp_(min=-1).minimum(heights).add_(1).to(torch.int32).mul_(row_steps).add_(base)
        rows = torch.empty(batch, queries, heads, 4, samples, dtype=torch.int32, device=value.device)
        for corner, (ry, rx) in enumerate(((top, left), (top, right), (bottom, left), (bottom, right))):
            torch.add(ry, rx, out=rows[:, :, :, corner])
        output = F.embedding_bag(
            rows.view(batch * queries * heads, -1),
            table.view(-1, dim),
            per_sample_weights=weights.view(batch * queries * heads, -1),
            mode="sum",
        )
        return output.view(batch, queries, heads * dim)


def use_gather_deformable_attention(model: nn.Module) -> int:
    """Put `GatherDeformableAttention` in place of every transformers ``MultiScaleDeformableAttention`` of
    ``model`` (a Grounding DINO); returns how many were replaced."""
    replaced = 0
    for module in list(model.modules()):
        for name, child in module.named_children():
            if type(child).__name__ == "MultiScaleDeformableAttention":
                setattr(module, name, GatherDeformableAttention())
                replaced += 1
    return replaced


class ZeroShotDetectorGrounder(Grounder):
    """Grounds the noun phrases and the four general words of each sentence with Grounding DINO.

    All queries of one image go into one caption (``"person . location . ... . the brandenburg gate ."``); a
    box's score for a phrase is its highest sigmoid score over the phrase's tokens. For every phrase the boxes
    scoring at least ``box_threshold`` are de-duplicated by NMS and the best ``max_boxes_per_phrase`` kept; the
    image then keeps its best ``max_objects`` boxes. Images with a side above ``max_image_side`` are
    downscaled before detection (boxes are returned in the original image's pixels). Images are batched with images
    of their own size only, so their boxes do not depend on what they are batched with.

    Args:
        detector: model id or folder of a Grounding DINO (or MM Grounding DINO) checkpoint.
        box_threshold: minimum phrase score of a kept box.
        max_boxes_per_phrase: boxes kept per phrase (the paper's grounding toolkit returns one).
        max_objects: cap on visual objects per image.
        nms_iou: IoU above which boxes of the same phrase are duplicates.
        use_noun_phrases: ground the sentence's noun phrases (False: general words only).
        general_words: queries linked to every word.
        spacy_model: spaCy pipeline for noun phrases (see `NounPhraseExtractor`).
        batch_size: images per detector forward pass; None: 8 on a GPU, 1 on CPU (where batching makes every image
            slower: BENCHMARKS.md).
        max_image_side: images with a longer side are shrunk to it before detection (a cap for huge images; the
            detector's processor then resizes every image to its input size).
        image_size: the shortest image side at the detector's input, its longest side capped in the processor's
            proportion (Grounding DINO: 800, at most 1333); None keeps the processor's. Smaller is faster and
            finds other boxes (BENCHMARKS.md measures how many stay).
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
        "image_size",
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
        batch_size: int | None = None,
        max_image_side: int = 1333,
        image_size: int | None = None,
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
        self.image_size = image_size
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")

    @property
    def images_per_pass(self) -> int:
        """Images per detector forward pass (see ``batch_size``)."""
        if self.batch_size is not None:
            return self.batch_size
        return 1 if torch.device(self.device).type == "cpu" else 8

    def queries(self, sentences: Sequence[Sequence[str]]) -> list[list[Phrase]]:
        """The grounding queries of each sentence: the general words, then its noun phrases."""
        general = [Phrase(word, -1, -1) for word in self.general_words]
        if self.noun_phrases is None:
            return [list(general) for _ in sentences]
        return [general + phrases for phrases in self.noun_phrases(sentences)]

    def ground(self, images, sentences, sample_ids):
        queries = self.queries(sentences)
        inputs = [self._downscaled(image) for image in images]
        # Batches of same-size images: no image is padded to another's size (padding changes its boxes and costs).
        by_size: dict[tuple[int, int], list[int]] = {}
        for index, image in enumerate(inputs):
            by_size.setdefault(image.size, []).append(index)
        groundings: dict[int, Grounding] = {}
        for indices in by_size.values():
            for start in range(0, len(indices), self.images_per_pass):
                batch = indices[start : start + self.images_per_pass]
                found = self._ground_batch(
                    [inputs[i] for i in batch],
                    [images[i].size for i in batch],
                    [queries[i] for i in batch],
                    [sample_ids[i] for i in batch],
                )
                groundings.update(zip(batch, found))
        return [groundings[index] for index in range(len(images))]

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

    def _input_size(self, processor: Any) -> dict[str, int] | None:
        """The image processor's ``size`` for `image_size` (None: its own)."""
        if self.image_size is None:
            return None
        own = processor.image_processor.size
        longest = round(self.image_size * own["longest_edge"] / own["shortest_edge"])
        return {"shortest_edge": self.image_size, "longest_edge": longest}

    @torch.inference_mode()
    def _ground_batch(self, images, sizes, queries, sample_ids) -> list[Grounding]:
        """Ground one batch: ``images`` as the detector gets them (same size), ``sizes`` their original sizes."""
        processor, model = _load_detector(self.detector, self.device)
        captions, char_spans = zip(*(self._caption(phrases) for phrases in queries))
        text = processor.tokenizer(
            list(captions),
            padding="longest",
            truncation=True,
            max_length=model.config.max_text_len,
            return_tensors="pt",
        )
        size = self._input_size(processor)
        pixels = processor.image_processor(images, return_tensors="pt", **({} if size is None else {"size": size}))
        outputs = model(**text.to(self.device), **pixels.to(self.device))
        probs = outputs.logits.float().sigmoid().cpu()  # [B, queries, text tokens]
        relative_boxes = center_to_corners_format(outputs.pred_boxes.float().cpu())  # [B, queries, 4] in [0, 1]

        groundings = []
        for b, ((width, height), phrases, spans, sample) in enumerate(zip(sizes, queries, char_spans, sample_ids)):
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
