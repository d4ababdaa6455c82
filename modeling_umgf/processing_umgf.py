"""UMGFProcessor: a sentence and its image -> the multi-modal graph inputs of UMGF.

Like LayoutLMv3's processor runs OCR itself, this one runs the visual preprocessing that earlier MNER code
left out: noun phrases, visual grounding, object crops and the inter-modal edges of the graph. Tokenisation
is the tokenizer's, crops are transformed by timm's transform for the backbone (`UMGFImageProcessor`),
padding is `UMGFDataCollator`'s; the processor only ties them together sample by sample.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any, Mapping, Sequence

import torch
from PIL import Image
from tokenizers.pre_tokenizers import BertPreTokenizer
from transformers import AutoTokenizer, ProcessorMixin
from transformers.feature_extraction_utils import BatchFeature

from .configuration_umgf import DEFAULT_LABELS
from .data_collator_umgf import LABEL_PAD_VALUE, METADATA_KEYS, UMGFDataCollator
from .grounding import GROUNDERS, Grounder, Grounding, build_grounder
from .image_processing_umgf import UMGFImageProcessor
from .image_utils_umgf import ImageInput, UnreadableImageError, crop_box, load_rgb_image
from .multimodal_graph import token_object_adjacency, word_object_adjacency

logger = logging.getLogger(__name__)

MODEL_INPUT_NAMES = (
    "input_ids",
    "attention_mask",
    "token_type_ids",
    "word_ids",
    "labels",
    "pixel_values",
    "object_features",
    "object_mask",
    "inter_modal_adjacency",
)


@lru_cache(maxsize=4)
def _grounder(name: str, kwargs_json: str) -> Grounder:
    """One grounder (and so one loaded detector) per configuration and process."""
    return build_grounder(name, **json.loads(kwargs_json))


def _per_sample(value: Any, batched: bool, count: int, name: str) -> list[Any]:
    """``value`` as one entry per sample (None -> all None), checking a batched value's length."""
    if value is None:
        return [None] * count
    if not batched:
        return [value]
    if len(value) != count:
        raise ValueError(f"{name} has {len(value)} entries for {count} samples")
    return list(value)


class UMGFProcessor(ProcessorMixin):
    """Builds UMGF's graph-ready inputs from words or raw text, an optional image, and optional labels.

    Args:
        image_processor: a `UMGFImageProcessor` (the vision backbone's crop transform).
        tokenizer: the text encoder's tokenizer (a fast tokenizer: word alignment needs ``word_ids``).
        grounder: name of the visual grounder (``"detector"``, ``"release"``, ``"grid"``, ``"precomputed"``).
        grounder_kwargs: keyword arguments of that grounder (e.g. ``{"detector": ..., "box_threshold": 0.3}``).
        max_length: maximum sub-tokens per sentence, special tokens included.
        label_names: tag names by id, for string labels and `decode_word_predictions`.
    """

    model_input_names = list(MODEL_INPUT_NAMES)
    metadata_keys = METADATA_KEYS

    def __init__(
        self,
        image_processor: UMGFImageProcessor | None = None,
        tokenizer: Any = None,
        grounder: str = "detector",
        grounder_kwargs: Mapping[str, Any] | None = None,
        max_length: int = 128,
        label_names: Sequence[str] | None = None,
        **kwargs,
    ):
        if grounder not in GROUNDERS:
            raise ValueError(f"unknown grounder {grounder!r}; choose one of {sorted(GROUNDERS)}")
        self.grounder = grounder
        self.grounder_kwargs = dict(grounder_kwargs or {})
        self.max_length = max_length
        self.label_names = list(label_names or DEFAULT_LABELS)
        super().__init__(image_processor, tokenizer, **kwargs)
        if not getattr(self.tokenizer, "is_fast", False):
            raise ValueError("UMGFProcessor needs a fast tokenizer (word_ids), got " + type(self.tokenizer).__name__)

    @classmethod
    def from_backbones(
        cls, text_model: str = "bert-base-cased", vision_backbone: str = "resnet152", **kwargs
    ) -> UMGFProcessor:
        """A processor for a text encoder (Hub id or folder of its tokenizer) and a timm vision backbone."""
        return cls(UMGFImageProcessor(vision_backbone), AutoTokenizer.from_pretrained(text_model), **kwargs)

    @property
    def visual_grounder(self) -> Grounder:
        """The configured grounder, built on first use (the detector is loaded then)."""
        return _grounder(self.grounder, json.dumps(self.grounder_kwargs, sort_keys=True))

    @staticmethod
    def split_words(text: str) -> list[str]:
        """Split raw text into words the way the Twitter MNER data is tokenised: at spaces and punctuation."""
        return [word for word, _ in BertPreTokenizer().pre_tokenize_str(text)]

    def data_collator(self, return_metadata: bool = False, pad_to_multiple_of: int | None = None) -> UMGFDataCollator:
        """A `UMGFDataCollator` for examples made by this processor with ``return_tensors=None``."""
        return UMGFDataCollator(self, return_metadata=return_metadata, pad_to_multiple_of=pad_to_multiple_of)

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
        return_tensors: str | None = None,
        return_metadata: bool = False,
    ) -> BatchFeature:
        """Process one sample or a batch.

        Args:
            images: an image per sample (see `ImageInput`); None, missing or unreadable -> text-only sample
                (with a warning naming it for the last two).
            text: raw text (a string, or a list of strings for a batch), split with `split_words`.
            words: pre-tokenised words instead of ``text`` (a list of strings, or a list of lists).
            labels: word-level tags per sample (ids, or names from ``label_names``), one per word.
            grounding: per sample, a `Grounding` or a mapping with the CONTRACT.md grounding columns; used as
                is (boxes clipped to the image) unless its ``grounder`` is "" (not grounded), in which case
                the configured grounder runs on the sample's image.
            object_features: per sample, cached backbone features ``[N, F]`` of its ``N`` grounded objects,
                used instead of crops (needs ``grounding`` with the same ``N`` objects; no clipping then).
            sample_ids: names of the samples in warnings and errors (default: their batch index).
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
        if (text is None) == (words is None):
            raise ValueError("give exactly one of `text` (raw text) and `words` (pre-tokenised words)")
        if text is not None:
            batched = not isinstance(text, str)
            sentences = [self.split_words(t) for t in ([text] if not batched else text)]
        else:
            batched = len(words) > 0 and not isinstance(words[0], str)
            sentences = [list(w) for w in (words if batched else [words])]
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
        labels = [
            self._label_ids(tags, sentence, sample)
            for tags, sentence, sample in zip(_per_sample(labels, batched, count, "labels"), sentences, ids)
        ]
        images = [
            self._load_image(image, sample) for image, sample in zip(_per_sample(images, batched, count, "images"), ids)
        ]
        features = _per_sample(object_features, batched, count, "object_features")
        groundings = self._groundings(
            _per_sample(grounding, batched, count, "grounding"), sentences, images, features, ids
        )

        encoding = self.tokenizer(
            self._tokenizable(sentences), is_split_into_words=True, truncation=True, max_length=self.max_length
        )
        examples = [
            self._example(encoding, i, sentences[i], labels[i], images[i], features[i], groundings[i], ids[i])
            for i in range(count)
        ]
        truncated = [f"{e['sample_id']!r} ({e['truncated_words']} words)" for e in examples if e["truncated_words"]]
        if truncated:
            logger.warning(
                "%d sample(s) exceed max_length=%d sub-tokens; their last words get no loss and are tagged O: %s",
                len(truncated),
                self.max_length,
                ", ".join(truncated),
            )
        if return_tensors == "pt":
            return self.data_collator(return_metadata=return_metadata)(examples)
        if not batched:
            return BatchFeature(examples[0])
        keys = dict.fromkeys(key for example in examples for key in example)  # crops for some, features for others
        return BatchFeature({key: [example.get(key) for example in examples] for key in keys})

    def process_examples(self, examples: Mapping[str, Sequence[Any]]) -> dict[str, list[Any]]:
        """Batched dataset transform (``dataset.with_transform``/``map``) over the CONTRACT.md columns.

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

    def decode_word_predictions(
        self, predictions: torch.Tensor | Sequence[Sequence[int]], num_words: Sequence[int]
    ) -> list[list[str]]:
        """Tag names for every word of each sample: the model's word-level ``predictions`` ``[B, W]`` (-100 at
        padding), then O for the words truncation cut off, so evaluation still scores their gold entities."""
        if isinstance(predictions, torch.Tensor):
            predictions = predictions.tolist()
        tags = []
        for row, total in zip(predictions, num_words):
            names = [self.label_names[tag] for tag in row if tag != LABEL_PAD_VALUE][:total]
            tags.append(names + [self.label_names[0]] * (total - len(names)))
        return tags

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
            if not 0 <= int(label) < len(self.label_names):
                raise ValueError(f"sample {sample!r}: label id {label} outside 0..{len(self.label_names) - 1}")
            ids.append(int(label))
        return ids

    @staticmethod
    def _load_image(image: ImageInput, sample: str) -> Image.Image | None:
        if image is None:
            return None
        try:
            return load_rgb_image(image)
        except UnreadableImageError as error:
            logger.warning("sample %r: %s; using it text-only", sample, error)
            return None

    def _groundings(self, given, sentences, images, features, ids) -> list[Grounding]:
        """Each sample's grounding: given (validated, clipped) or from the configured grounder."""
        groundings: list[Grounding | None] = []
        for columns, sentence, image, feature, sample in zip(given, sentences, images, features, ids):
            grounding = (
                columns
                if isinstance(columns, Grounding) or columns is None
                else Grounding.from_columns(columns, sample)
            )
            if grounding is not None and not grounding.grounder:
                grounding = None  # not grounded yet
            if grounding is not None:
                grounding.check_spans(len(sentence), sample)
            if feature is not None:
                found = 0 if grounding is None else len(grounding)
                if found != len(feature):
                    raise ValueError(f"sample {sample!r}: {len(feature)} object features for {found} grounded objects")
                if grounding is None:
                    grounding = Grounding()  # zero features, zero objects: nothing to ground
            elif grounding is not None and image is not None:
                grounding = grounding.clipped(*image.size)
            elif grounding is not None and len(grounding):
                logger.warning(
                    "sample %r: %d grounded objects but no image to crop them from; using it text-only",
                    sample,
                    len(grounding),
                )
                grounding = Grounding(grounder=grounding.grounder)
            groundings.append(grounding)
        todo = [i for i, g in enumerate(groundings) if g is None and images[i] is not None]
        if todo:
            found = self.visual_grounder.ground(
                [images[i] for i in todo], [sentences[i] for i in todo], [ids[i] for i in todo]
            )
            for i, grounding in zip(todo, found):
                groundings[i] = grounding
        return [Grounding() if g is None else g for g in groundings]

    def _tokenizable(self, sentences: list[list[str]]) -> list[list[str]]:
        """The sentences with words the tokenizer maps to no sub-token (e.g. "", zero-width spaces) replaced by
        the unknown token, so that every word keeps a sub-token and word ids stay 0..n-1."""
        encoding = self.tokenizer(sentences, is_split_into_words=True, add_special_tokens=False)
        fixed = []
        for i, sentence in enumerate(sentences):
            present = set(encoding.word_ids(i))
            if len(present) == len(sentence):
                fixed.append(sentence)
                continue
            if self.tokenizer.unk_token is None:
                raise ValueError(
                    f"words {sorted(set(range(len(sentence))) - present)} of sentence {i} make no sub-token"
                )
            fixed.append([word if w in present else self.tokenizer.unk_token for w, word in enumerate(sentence)])
        return fixed

    def _example(self, encoding, i, words, labels, image, features, grounding, sample) -> dict[str, Any]:
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
            example["object_features"] = features.reshape(len(grounding), -1) if len(grounding) else features.reshape(0, 0)
        else:
            crops = [crop_box(image, box) for box in grounding.boxes]
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


UMGFProcessor.register_for_auto_class()
UMGFImageProcessor.register_for_auto_class("AutoImageProcessor")
