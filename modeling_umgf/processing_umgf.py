"""UMGFProcessor: a post and its image -> the multi-modal graph inputs of UMGF.

Like LayoutLMv3's processor runs OCR through its image processor, this one runs the visual preprocessing that
earlier MNER code left out, through named components, and only combines their outputs:

- the **grounder** (`grounding.Grounder`, chosen by name and saved with the processor) finds the visual objects
  of each sample: boxes, the phrase each box was grounded from, and that phrase's word span;
- the **image processor** (`UMGFImageProcessor`, timm's transform for the backbone) turns each box's crop into
  ``pixel_values``;
- the **tokenizer** splits the words into sub-tokens (one call per batch);
- `multimodal_graph` turns word spans into the token x object edges of the graph.

Padding is `UMGFDataCollator`'s. The input contract is CONTRACT.md. For inference, a post is checked and its image
decoded once by `read_post` (every entry point: pipeline, CLI, handler), a batch of posts is encoded by
`UMGFProcessor.process_posts`, and the model's outputs come back as words, entities, scores and boxes in one step,
`UMGFProcessor.post_process_entities` (as Grounding DINO's processor owns its ``post_process_*``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import AutoTokenizer, ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

from .data_collator import UMGFDataCollator
from .grounder_registry import GROUNDERS, build_grounder
from .grounding import Grounder, Grounding, ground_batch
from .image_processing_umgf import UMGFImageProcessor
from .image_utils import ImageInput, UnreadableImageError, crop_box, load_images, load_rgb_image
from .input_checks import MODEL_INPUT_NAMES
from .multimodal_graph import token_object_adjacency, word_object_adjacency
from .schema import LABEL_PAD_VALUE, LABELS, METADATA_KEYS, chunk_entities

if TYPE_CHECKING:
    from .modeling_umgf import UMGFForTokenClassification, UMGFTokenClassifierOutput

logger = logging.getLogger(__name__)


def _per_sample(value: Any, batched: bool, count: int, name: str) -> list[Any]:
    """``value`` as one entry per sample (None -> all None), checking a batched value's length."""
    if value is None:
        return [None] * count
    if not batched:
        return [value]
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries for {count} samples")
    return list(value)


POST_KEYS = ("text", "words", "image", "grounding", "id")
"""The keys of a post (CONTRACT.md): ``"text"`` or ``"words"``; optionally ``"image"``, ``"grounding"``, ``"id"``."""


@dataclass
class Post:
    """One post, checked and read by `read_post`: its text, its words, its decoded RGB image (None: text-only), its
    grounding columns (None: grounded from the image) and its id."""

    text: str
    words: list[str]
    image: Image.Image | None = None
    grounding: Any = None
    id: str | None = None


def as_post_mapping(sample: Any) -> Any:
    """A post given as a bare string is its ``{"text": ...}``; anything else is returned as it is."""
    return {"text": sample} if isinstance(sample, str) else sample


def read_post(
    sample: Any,
    where: str = "input",
    *,
    strict: bool = False,
    load: Callable[[ImageInput], Image.Image] = load_rgb_image,
) -> Post:
    """Check a post (a string, or a mapping with `POST_KEYS`) and decode its image once, with ``load``.

    Errors name ``where``. An image that cannot be read is an error with ``strict`` (which also refuses unknown
    keys), else a warning and the post is read text-only.
    """
    sample = as_post_mapping(sample)
    if not isinstance(sample, Mapping) or ("text" in sample) == ("words" in sample):
        raise ValueError(f'{where} must have "text" (or "words"), got {sample!r:.200}')
    unknown = sorted(set(sample) - set(POST_KEYS))
    if strict and unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; a post has {list(POST_KEYS)}")
    if "text" in sample:
        text = sample["text"]
        if not isinstance(text, str):
            raise ValueError(f'{where}: "text" must be a string, got {type(text).__name__}')
        words = UMGFProcessor.split_words(text)
    else:
        words = sample["words"]
        if isinstance(words, str) or not isinstance(words, Sequence) or not all(isinstance(w, str) for w in words):
            raise ValueError(f'{where}: "words" must be a list of strings, got {words!r:.80}')
        words, text = list(words), " ".join(words)
    if not words:
        raise ValueError(f"{where}: empty text")
    grounding = sample.get("grounding")
    if grounding is not None and not isinstance(grounding, (Mapping, Grounding)):
        raise ValueError(f'{where}: "grounding" must be an object of grounding columns (CONTRACT.md)')
    post_id = None if sample.get("id") is None else str(sample["id"])
    image = None
    try:
        image = None if sample.get("image") is None else load(sample["image"])
    except UnreadableImageError as error:
        if strict:
            raise UnreadableImageError(f"{where}: cannot read image: {error}") from error
        logger.warning("sample %r: %s; using it text-only", post_id or text[:40], error)
    return Post(text, words, image, grounding, post_id)


def with_extras(inputs: Any, image: Any, grounding: Any) -> Any:
    """Posts of ``inputs`` (a text or a post mapping, or a list of them) with ``image`` and ``grounding``: one
    each for one post, lists as long as ``inputs`` (or None) for a list."""
    if isinstance(inputs, (str, Mapping)):
        return {**as_post_mapping(inputs), "image": image, "grounding": grounding}
    if not isinstance(inputs, list):
        raise ValueError(f'"image" and "grounding" go with a text or a list of texts, got {type(inputs).__name__}')
    extras = []
    for name, value in (("image", image), ("grounding", grounding)):
        values = [None] * len(inputs) if value is None else value
        if not isinstance(values, list) or len(values) != len(inputs):
            raise ValueError(f'with {len(inputs)} texts, "{name}" must be a list of {len(inputs)} (or None)')
        extras.append(values)
    return [{**as_post_mapping(x), "image": i, "grounding": g} for x, i, g in zip(inputs, *extras)]


def word_offsets(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Character span ``[start, end)`` of each word in ``text``, found left to right.

    The words must appear in ``text`` in order, unchanged (`UMGFProcessor.split_words` only splits at spaces
    and punctuation, so they do); offsets are Python string indices (code points: an emoji counts as one).
    """
    spans, cursor = [], 0
    for index, word in enumerate(words):
        start = text.find(word, cursor)
        if start < 0:
            raise ValueError(f"word {index} ({word!r}) not found in the text after character {cursor}")
        cursor = start + len(word)
        spans.append((start, cursor))
    return spans


def corners_dict(box: Sequence[float]) -> dict[str, float]:
    """``[x0, y0, x1, y1]`` in the object-detection pipeline's box format."""
    return dict(zip(("xmin", "ymin", "xmax", "ymax"), (float(v) for v in box)))


class UMGFProcessor(ProcessorMixin):
    """Builds UMGF's graph-ready inputs from words or raw text, an optional image, and optional labels.

    Args:
        image_processor: a `UMGFImageProcessor` (the vision backbone's crop transform).
        tokenizer: the text encoder's tokenizer (a fast tokenizer: word alignment needs ``word_ids``).
        grounder: the visual grounder: a name of `grounder_registry.GROUNDERS` (``"detector"``, ``"release"``,
            ``"grid"``, ``"precomputed"``, ...) or a `Grounder`. Saved with the processor (name and settings).
        grounder_kwargs: keyword arguments of a grounder given by name (e.g. ``{"box_threshold": 0.3}``).
        max_length: maximum sub-tokens per sentence, special tokens included; capped at the tokenizer's
            ``model_max_length`` (the text encoder's position limit).
        label_names: tag names by id, for string labels and `decode_word_predictions`.
    """

    model_input_names = list(MODEL_INPUT_NAMES)
    metadata_keys = METADATA_KEYS

    def __init__(
        self,
        image_processor: UMGFImageProcessor | None = None,
        tokenizer: Any = None,
        grounder: str | Grounder = "detector",
        grounder_kwargs: Mapping[str, Any] | None = None,
        max_length: int = 128,
        label_names: Sequence[str] | None = None,
        **kwargs: Any,
    ) -> None:
        self.set_grounder(grounder, **dict(grounder_kwargs or {}))
        self.max_length = max_length
        self.label_names = list(label_names or LABELS)
        super().__init__(image_processor, tokenizer, **kwargs)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("UMGFProcessor needs a fast tokenizer (word_ids), got " + type(self.tokenizer).__name__)

    @classmethod
    def from_pretrained(cls, *args: Any, **kwargs: Any) -> UMGFProcessor:
        """`ProcessorMixin.from_pretrained` without the model's loading arguments ``dtype`` / ``torch_dtype``, which
        transformers' `pipeline` hands to the processor too: the tokenizer would keep them in its configuration,
        and ``save_pretrained`` would fail on a `torch.dtype` (not JSON serialisable)."""
        for key in ("dtype", "torch_dtype"):
            kwargs.pop(key, None)
        return super().from_pretrained(*args, **kwargs)

    @classmethod
    def from_backbones(
        cls, text_model: str = "bert-base-cased", vision_backbone: str = "resnet152", **kwargs: Any
    ) -> UMGFProcessor:
        """A processor for a text encoder (Hub id or folder of its tokenizer) and a timm vision backbone."""
        return cls(UMGFImageProcessor(vision_backbone), AutoTokenizer.from_pretrained(text_model), **kwargs)

    def set_grounder(self, grounder: str | Grounder, **kwargs: Any) -> None:
        """Use another grounder: a name of `grounder_registry.GROUNDERS` with its keyword arguments, or a `Grounder`."""
        if isinstance(grounder, Grounder):
            if kwargs:
                raise ValueError("give grounder keyword arguments with a grounder name, not with a Grounder")
            self.grounder, self.grounder_kwargs = grounder.name, grounder.config()
            self._grounder_instance: Grounder | None = grounder
            return
        if grounder not in GROUNDERS:
            raise ValueError(f"unknown grounder {grounder!r}; choose one of {sorted(GROUNDERS)}")
        self.grounder, self.grounder_kwargs, self._grounder_instance = grounder, kwargs, None

    @property
    def visual_grounder(self) -> Grounder:
        """The configured grounder, built on first use (a detector is loaded then)."""
        if self._grounder_instance is None:
            self._grounder_instance = build_grounder(self.grounder, **self.grounder_kwargs)
        return self._grounder_instance

    @property
    def effective_max_length(self) -> int:
        """``max_length``, capped at the tokenizer's ``model_max_length`` (the text encoder's positions)."""
        limit = getattr(self.tokenizer, "model_max_length", None)
        return min(self.max_length, int(limit)) if limit else self.max_length

    @staticmethod
    def split_words(text: str) -> list[str]:
        """Split raw text into words the way the Twitter MNER data is tokenised: at spaces and punctuation."""
        return [word for word, _ in BertPreTokenizer().pre_tokenize_str(text)]

    def data_collator(self, return_metadata: bool = False, pad_to_multiple_of: int | None = None) -> UMGFDataCollator:
        """A `UMGFDataCollator` for examples made by this processor with ``return_tensors=None``."""
        return UMGFDataCollator(
            pad_token_id=self.tokenizer.pad_token_id,
            crop_size=self.image_processor.image_size,
            return_metadata=return_metadata,
            pad_to_multiple_of=pad_to_multiple_of,
        )

    def __call__(
        self,
        images: ImageInput | Sequence[ImageInput] = None,
        text: str | Sequence[str] | None = None,
        *,
        words: Sequence[str] | Sequence[Sequence[str]] | None = None,
        labels: Sequence[int | str] | Sequence[Sequence[int | str]] | None = None,
        grounding: Grounding | Mapping[str, Any] | Sequence[Grounding | Mapping[str, Any] | None] | None = None,
        object_features: Any = None,
        sample_ids: str | Sequence[str] | None = None,
        grounder: str | Grounder | None = None,
        return_tensors: str | None = None,
        return_metadata: bool = False,
    ) -> BatchFeature:
        """Process one sample or a batch (the input contract: CONTRACT.md).

        Args:
            images: an image per sample (see `ImageInput`); None, missing or unreadable -> text-only sample
                (with a warning naming it for the last two).
            text: raw text (a string, or a list of strings for a batch), split with `split_words`.
            words: pre-tokenised words instead of ``text`` (a list of strings, or a list of lists).
            labels: word-level tags per sample (ids, or names from ``label_names``), one per word.
            grounding: per sample, a `Grounding` or a mapping with the grounding columns; used as is (boxes
                clipped to the image) unless its ``grounder`` is "" (not grounded), in which case the grounder
                runs on the sample's image.
            object_features: per sample, cached backbone features ``[N, F]`` of its ``N`` grounded objects,
                used instead of crops (needs ``grounding`` with the same ``N`` objects; no clipping then).
            sample_ids: names of the samples in warnings and errors (default: their batch index).
            grounder: a grounder (name or `Grounder`) for this call instead of the processor's own.
            return_tensors: None -> unpadded examples (lists, tensors for crops/features/adjacency), to be
                padded by `UMGFDataCollator`; "pt" -> a padded batch of tensors (batch of 1 for one sample).
            return_metadata: with "pt", also return the `metadata_keys` (pop them before calling the model).
                Unpadded examples always carry them.

        Returns:
            A `BatchFeature` with the model inputs ``input_ids``, ``attention_mask``, ``token_type_ids`` (if
            the tokenizer makes them), ``word_ids`` (-1 for special tokens and padding), ``labels`` (if given;
            only the words that survived truncation), ``pixel_values`` or ``object_features``,
            ``object_mask`` (padded batches only) and ``inter_modal_adjacency``; plus the metadata
            ``sample_id``, ``words``, ``num_words``, ``truncated_words`` (words cut by ``max_length``: they get
            no loss and `decode_word_predictions` tags them O) and the grounding columns ``object_boxes``,
            ``object_scores``, ``object_phrases``, ``object_word_start``, ``object_word_end``.
        """
        if return_tensors not in (None, "pt"):
            raise ValueError(f"return_tensors must be None or 'pt', got {return_tensors!r}")
        sentences, batched = self._sentences(text, words)
        count = len(sentences)
        ids = (
            [str(i) for i in range(count)]
            if sample_ids is None
            else [str(s) for s in _per_sample(sample_ids, batched, count, "sample_ids")]
        )
        for sample, sentence in zip(ids, sentences):
            if not sentence:
                raise ValueError(f"sample {sample!r}: empty text (no words)")
            bad = [i for i, word in enumerate(sentence) if not isinstance(word, str)]
            if bad:
                raise ValueError(f"sample {sample!r}: words {bad} are not strings")
        label_ids = [
            self._label_ids(tags, sentence, sample)
            for tags, sentence, sample in zip(_per_sample(labels, batched, count, "labels"), sentences, ids)
        ]
        loaded = load_images(_per_sample(images, batched, count, "images"), ids)
        features = _per_sample(object_features, batched, count, "object_features")
        given = _per_sample(grounding, batched, count, "grounding")
        examples = self._examples(sentences, label_ids, loaded, features, given, ids, grounder)
        if return_tensors == "pt":
            return self.data_collator(return_metadata=return_metadata)(examples)
        if not batched:
            return BatchFeature(examples[0])
        keys = dict.fromkeys(key for example in examples for key in example)  # crops for some, features for others
        return BatchFeature({key: [example.get(key) for example in examples] for key in keys})

    def process_posts(self, posts: Sequence[Post], grounder: str | Grounder | None = None) -> BatchFeature:
        """A padded batch with its metadata of posts read by `read_post` (their images decoded already)."""
        count = len(posts)
        ids = [str(i) if post.id is None else post.id for i, post in enumerate(posts)]
        sentences, images = [post.words for post in posts], [post.image for post in posts]
        given = [post.grounding for post in posts]
        examples = self._examples(sentences, [None] * count, images, [None] * count, given, ids, grounder)
        return self.data_collator(return_metadata=True)(examples)

    def _examples(
        self,
        sentences: list[list[str]],
        label_ids: list[list[int] | None],
        loaded: list[Image.Image | None],
        features: list[Any],
        given: list[Any],
        ids: list[str],
        grounder: str | Grounder | None,
    ) -> list[dict[str, Any]]:
        """The unpadded examples of checked samples with decoded images: grounding, one tokenizer call, edges."""
        count = len(sentences)
        if isinstance(grounder, str):
            grounder = build_grounder(grounder)
        groundings = self._groundings(given, sentences, loaded, features, ids, grounder)
        encoding = self._encode(sentences)
        examples = [
            self._example(encoding, i, sentences[i], label_ids[i], loaded[i], features[i], groundings[i], ids[i])
            for i in range(count)
        ]
        truncated = [f"{e['sample_id']!r} ({e['truncated_words']} words)" for e in examples if e["truncated_words"]]
        if truncated:
            logger.warning(
                "%d sample(s) exceed max_length=%d sub-tokens; their last words get no loss and are tagged O: %s",
                len(truncated),
                self.effective_max_length,
                ", ".join(truncated),
            )
        return examples

    def process_examples(self, examples: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
        """Batched dataset transform (``dataset.with_transform``/``map``) over the dataset columns (CONTRACT.md).

        Reads ``tokens``, and when present ``id``, ``image``, ``ner_tags``, the grounding columns and
        ``object_features``; returns unpadded examples for `UMGFDataCollator`.
        """
        count = len(examples["tokens"])
        grounding = None
        if all(column in examples for column in Grounding.COLUMNS):
            grounding = [{column: examples[column][i] for column in Grounding.COLUMNS} for i in range(count)]
        return dict(
            self(
                images=examples.get("image"),
                words=examples["tokens"],
                labels=examples.get("ner_tags"),
                grounding=grounding,
                object_features=examples.get("object_features"),
                sample_ids=examples.get("id"),
            )
        )

    def split_batch(self, batch: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """A collated batch as (model inputs, metadata): the `metadata_keys` are not model inputs."""
        inputs = {key: value for key, value in batch.items() if key not in self.metadata_keys}
        return inputs, {key: batch[key] for key in self.metadata_keys if key in batch}

    def decode_word_predictions(
        self, predictions: torch.Tensor | Sequence[Sequence[int]], num_words: Sequence[int]
    ) -> list[list[str]]:
        """Tag names for every word of each sample: the model's word-level ``predictions`` ``[B, W]`` (-100 at
        padding), then O for the words truncation cut off, so evaluation still scores their gold entities."""
        if isinstance(predictions, torch.Tensor):
            predictions = predictions.tolist()
        tags = []
        for index, (row, total) in enumerate(zip(predictions, num_words)):
            unnamed = sorted({tag for tag in row if tag != LABEL_PAD_VALUE and not 0 <= tag < len(self.label_names)})
            if unnamed:
                raise ValueError(
                    f"sample {index}: predicted tag ids {unnamed} have no name in the processor's "
                    f"{len(self.label_names)} label_names; the processor's labels must be the model's id2label"
                )
            names = [self.label_names[tag] for tag in row if tag != LABEL_PAD_VALUE][:total]
            tags.append(names + [self.label_names[0]] * (total - len(names)))
        return tags

    def post_process_entities(
        self,
        outputs: UMGFTokenClassifierOutput,
        batch: Mapping[str, Any],
        texts: Sequence[str],
        model: UMGFForTokenClassification,
    ) -> list[dict[str, Any]]:
        """A forward's ``outputs`` on a `process_posts` ``batch`` as each post's ``{"text", "entities", "words",
        "objects", "truncated_words"}`` (CONTRACT.md): words with their character spans in ``texts``, tags and CRF
        marginals; entities (`chunk_entities`) with their probability and grounded boxes; ``model`` scores them."""
        predictions, word_mask, first_positions = outputs.predictions, outputs.word_mask, outputs.word_positions
        assert predictions is not None and word_mask is not None and first_positions is not None
        inputs, metadata = self.split_batch(batch)
        tags = self.decode_word_predictions(predictions, metadata["num_words"])
        kept_words = word_mask.sum(1).tolist()
        chunks = [chunk_entities(row[:kept]) for row, kept in zip(tags, kept_words)]
        scores = iter(
            model.entity_probabilities(outputs, [(b, *c) for b, row in enumerate(chunks) for c in row]).tolist()
        )
        probabilities = model.tag_probabilities(outputs)
        alphas = None if outputs.gates is None else torch.stack(outputs.gates).float()  # [layers, B, T, O]
        first = first_positions.tolist()  # each word's first sub-token: the node the decoder reads
        posts = []
        for b, (text, words) in enumerate(zip(texts, metadata["words"])):
            kept, predicted = kept_words[b], predictions[b, : kept_words[b]]
            word_scores = probabilities[b, torch.arange(kept, device=predicted.device), predicted].tolist()
            offsets = word_offsets(text, words)
            objects = list(
                zip(metadata["object_boxes"][b], metadata["object_phrases"][b], metadata["object_scores"][b])
            )
            entities = []
            for entity_type, start, end in chunks[b]:
                linked = first[b][start:end]
                boxes = []
                if alphas is not None and objects:
                    edges = inputs["inter_modal_adjacency"][b, linked].bool()  # [words, O]
                    boxes = self._explain(alphas[:, b, linked], edges, objects)
                entities.append(
                    {
                        "entity_group": entity_type,
                        "score": next(scores),
                        "word": text[offsets[start][0] : offsets[end - 1][1]],
                        "start": offsets[start][0],
                        "end": offsets[end - 1][1],
                        "words": words[start:end],
                        "word_start": start,
                        "word_end": end,
                        "boxes": boxes,
                    }
                )
            posts.append(
                {
                    "text": text,
                    "entities": entities,
                    "words": [
                        {"word": word, "start": start, "end": end, "tag": tag, "score": score}
                        for word, (start, end), tag, score in zip(
                            words, offsets, tags[b], word_scores + [None] * (len(words) - kept)
                        )
                    ],
                    "objects": [
                        {"box": corners_dict(box), "phrase": phrase, "score": score} for box, phrase, score in objects
                    ],
                    "truncated_words": metadata["truncated_words"][b],
                }
            )
        return posts

    @staticmethod
    def _explain(alpha: torch.Tensor, edges: torch.Tensor, objects: list[tuple]) -> list[dict[str, Any]]:
        """The grounded objects linked to an entity's words (``alpha`` ``[layers, words, O]``, ``edges`` ``[words,
        O]``), with their mean alpha gate (eq 4) over layers and linked words, best first."""
        boxes = []
        for o, (box, phrase, score) in enumerate(objects):
            linked = edges[:, o]
            if not bool(linked.any()):
                continue
            per_layer = alpha[:, linked, o].mean(1)
            boxes.append(
                {
                    "box": corners_dict(box),
                    "phrase": phrase,
                    "detector_score": float(score),
                    "alpha": float(per_layer.mean()),
                    "alpha_per_layer": per_layer.tolist(),
                }
            )
        return sorted(boxes, key=lambda entry: -entry["alpha"])

    @staticmethod
    def _sentences(text: Any, words: Any) -> tuple[list[list[str]], bool]:
        """The words of each sample and whether the input was a batch."""
        if (text is None) == (words is None):
            raise ValueError("give exactly one of `text` (raw text) and `words` (pre-tokenised words)")
        if text is not None:
            if not isinstance(text, str) and not (isinstance(text, Sequence) and all(isinstance(t, str) for t in text)):
                raise ValueError(f"text must be a string or a list of strings, got {type(text).__name__}")
            batched = not isinstance(text, str)
            texts: list[str] = [text] if isinstance(text, str) else list(text)
            return [UMGFProcessor.split_words(t) for t in texts], batched
        if isinstance(words, str):
            raise ValueError(
                f"words must be a list of words (or of lists of words), got the string {words[:80]!r}: "
                "pass raw text as text=..."
            )
        if not isinstance(words, Sequence):
            raise ValueError(f"words must be a list of words (or of lists of words), got {type(words).__name__}")
        batched = len(words) > 0 and not isinstance(words[0], str)
        sentences = [list(w) for w in (words if batched else [words])]
        return sentences, batched

    def _label_ids(self, labels: Sequence[int | str] | None, words: list[str], sample: str) -> list[int] | None:
        if labels is None:
            return None
        if len(labels) != len(words):
            raise ValueError(f"sample {sample!r}: {len(labels)} labels for {len(words)} words")
        ids = []
        for label in labels:
            if isinstance(label, str):
                if label not in self.label_names:
                    raise ValueError(f"sample {sample!r}: unknown label {label!r}; known: {self.label_names}")
                label = self.label_names.index(label)
            elif isinstance(label, bool) or not isinstance(label, Integral):
                raise ValueError(f"sample {sample!r}: label {label!r} is neither an integer id nor a tag name")
            if not 0 <= int(label) < len(self.label_names):
                raise ValueError(f"sample {sample!r}: label id {label} outside 0..{len(self.label_names) - 1}")
            ids.append(int(label))
        return ids

    def _groundings(
        self,
        given: list[Any],
        sentences: list[list[str]],
        images: list[Image.Image | None],
        features: list[Any],
        ids: list[str],
        grounder: Grounder | None,
    ) -> list[Grounding]:
        """Each sample's grounding: given (validated; clipped to the image) or found by the grounder."""
        groundings: list[Grounding | None] = []
        for columns, sentence, image, feature, sample in zip(given, sentences, images, features, ids):
            grounding = Grounding.of(columns, sample)
            if grounding is not None:
                grounding.check_spans(len(sentence), sample)
            if feature is not None:
                found = 0 if grounding is None else len(grounding)
                if found != len(feature):
                    raise ValueError(f"sample {sample!r}: {len(feature)} object features for {found} grounded objects")
                grounding = grounding or Grounding()  # zero features, zero objects: nothing to ground
            elif grounding is not None and image is None and len(grounding):
                logger.warning(
                    "sample %r: %d grounded objects but no image to crop them from; using it text-only",
                    sample,
                    len(grounding),
                )
                grounding = Grounding(grounder=grounding.grounder)
            groundings.append(grounding)
        # Samples with cached features are neither grounded nor clipped: their objects are fixed by the features.
        to_ground = [None if feature is not None else image for image, feature in zip(images, features)]
        if grounder is None and all(image is None for image in to_ground):  # no image: no grounder is built
            return [Grounding() if g is None else g for g in groundings]
        grounded = ground_batch(grounder or self.visual_grounder, to_ground, sentences, ids, groundings)
        return [Grounding() if g is None else g for g in grounded]

    def _encode(self, sentences: list[list[str]]) -> Any:
        """One tokenizer call for the batch. A word the tokenizer maps to no sub-token (e.g. "", a zero-width
        space) is replaced by the unknown token and its sentence encoded again, so that every word keeps a
        sub-token and word ids stay 0..n-1; words after the last kept sub-token of a cut sentence are truncated."""
        max_length = self.effective_max_length
        encoding = self.tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
        fixed, changed = [], False
        for i, sentence in enumerate(sentences):
            present = {w for w in encoding.word_ids(i) if w is not None}
            cut = len(encoding["input_ids"][i]) >= max_length
            last = max(present) + 1 if cut and present else len(sentence)
            empty = [w for w in range(last) if w not in present]
            if empty and self.tokenizer.unk_token is None:
                raise ValueError(
                    f"words {empty} of sentence {i} make no sub-token and the tokenizer has no unknown token"
                )
            empty_set = set(empty)
            fixed.append([self.tokenizer.unk_token if w in empty_set else word for w, word in enumerate(sentence)])
            changed = changed or bool(empty)
        if changed:
            encoding = self.tokenizer(fixed, is_split_into_words=True, truncation=True, max_length=max_length)
        return encoding

    def _example(
        self,
        encoding: Any,
        i: int,
        words: list[str],
        labels: list[int] | None,
        image: Image.Image | None,
        features: Any,
        grounding: Grounding,
        sample: str,
    ) -> dict[str, Any]:
        """One unpadded example: token inputs, kept labels, objects and the token x object adjacency."""
        word_ids = [-1 if w is None else w for w in encoding.word_ids(i)]
        kept_words = max(word_ids) + 1
        example: dict[str, Any] = {
            "input_ids": encoding["input_ids"][i],
            "attention_mask": encoding["attention_mask"][i],
        }
        if "token_type_ids" in encoding:
            example["token_type_ids"] = encoding["token_type_ids"][i]
        example["word_ids"] = word_ids
        if labels is not None:
            example["labels"] = labels[:kept_words]
        if features is not None:
            features = torch.as_tensor(features, dtype=torch.float32)
            example["object_features"] = (
                features.reshape(len(grounding), -1) if len(grounding) else features.reshape(0, 0)
            )
        else:
            crops = [crop_box(image, box) for box in grounding.boxes] if image is not None else []
            example["pixel_values"] = self.image_processor(crops)["pixel_values"]
        word_adjacency = word_object_adjacency(grounding.word_starts, grounding.word_ends, kept_words)
        example["inter_modal_adjacency"] = token_object_adjacency(word_adjacency, word_ids)
        example.update(
            sample_id=sample,
            words=words,
            num_words=len(words),
            truncated_words=len(words) - kept_words,
            **{key: value for key, value in grounding.to_columns().items() if key != "grounder"},
        )
        return example
