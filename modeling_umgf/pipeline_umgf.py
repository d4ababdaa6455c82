"""The "multimodal-ner" pipeline: a post (raw text or words) and an optional image -> its named entities.

Each entity comes with its exact character span in the input text, a calibrated probability, and, when the post
has an image, the grounded boxes linked to its words with the gate weights alpha (eq 4) that let them in.

Built on transformers' `Pipeline`, so batching, devices, `save_pretrained`/`push_to_hub` and remote loading work
the usual way: `save_pretrained` writes ``custom_pipelines`` into config.json and copies this file next to the
model's code, so ``pipeline(model=folder_or_repo, trust_remote_code=True)`` loads it without the umgf package.
Batches are padded by `UMGFDataCollator` (the processor's), not by transformers' token-only ``pad_collate_fn``,
because UMGF inputs also carry objects and a token x object adjacency.

Entity chunks are seqeval's (`get_entities`, the conlleval rules the benchmarks are scored with). The entity score
is written here because no library computes it: it is the CRF probability that the entity's words form exactly
this entity, summed over all tag sequences of the sentence (see `entity_probabilities`).

transformers' standard "token-classification" pipeline also runs a UMGF model, text only, because the model
treats every token as a word when no ``word_ids`` are given: with ``aggregation_strategy="first"`` each word gets
the argmax of its emission scores at its first sub-token, as in training. It does not use the image, the CRF
transitions or Viterbi decoding, and its scores are a softmax over the emissions, not CRF probabilities.
"""

from __future__ import annotations

import base64
import binascii
import collections.abc
import logging
import os
from typing import Any, Iterator, Mapping, Sequence

import httpx
import torch
from seqeval.metrics.sequence_labeling import get_entities
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

logger = logging.getLogger(__name__)

TASK = "multimodal-ner"


def word_offsets(text: str, words: Sequence[str]) -> list[tuple[int, int]]:
    """Character span ``[start, end)`` of each word in ``text``, found left to right.

    The words must appear in ``text`` in order, unchanged (the processor's `split_words` only splits at spaces
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


def fetch_image(image: Any, timeout: float | None = None) -> Any:
    """Download an ``http(s)://`` URL and decode a ``data:image/...;base64,`` string into bytes; anything else is
    returned unchanged for the processor to read. Raises ValueError when the download or the decoding fails."""
    if isinstance(image, str) and image.startswith(("http://", "https://")):
        try:
            response = httpx.get(image, timeout=timeout or 10.0, follow_redirects=True)
            response.raise_for_status()
        except httpx.HTTPError as error:
            raise ValueError(f"cannot download image {image}: {error}") from error
        return response.content
    if isinstance(image, str) and image.startswith("data:image/") and "," in image:
        try:
            return base64.b64decode(image.split(",", 1)[1], validate=True)
        except binascii.Error as error:
            raise ValueError(f"invalid base64 image data: {error}") from error
    return image


def entity_allowed_tags(
    label2id: Mapping[str, int], entity_type: str, start: int, end: int, num_words: int, num_slots: int
) -> list[torch.Tensor]:
    """The tag sequences in which words ``[start, end)`` form exactly one ``entity_type`` chunk (conlleval rules).

    A chunk starts with B-X (or with I-X after anything but B-X/I-X), continues with I-X and ends before a word
    that is not I-X. Returned as one ``[num_slots, num_tags]`` bool mask per way to start it (B-X, I-X); a tag
    sequence is in the set when every word's tag is allowed by one of the masks (the masks are disjoint).
    """
    begin, inside = label2id.get(f"B-{entity_type}"), label2id.get(f"I-{entity_type}")
    masks = []
    for first in (begin, inside):
        if first is None or (end - start > 1 and inside is None):
            continue
        allowed = torch.ones(num_slots, len(label2id), dtype=torch.bool)
        allowed[start] = False
        allowed[start, first] = True
        if end - start > 1:
            allowed[start + 1 : end] = False
            allowed[start + 1 : end, inside] = True
        if end < num_words and inside is not None:
            allowed[end, inside] = False  # the chunk is not continued to the right
        if first == inside and start > 0:
            allowed[start - 1, inside] = False  # nor from the left: I-X starts a chunk only after a non-X tag
            if begin is not None:
                allowed[start - 1, begin] = False
        masks.append(allowed)
    return masks


@torch.no_grad()
def entity_probabilities(
    model: torch.nn.Module, logits: torch.Tensor, word_mask: torch.Tensor, rows: torch.Tensor, allowed: torch.Tensor
) -> torch.Tensor:
    """Probability of each constrained tag set: ``p(y in allowed[k] | sentence rows[k])``, ``[K]``.

    With the CRF (eq 9) this is ``exp(log Z_allowed - log Z)``: the forward algorithm over emissions with the
    disallowed tags set to -inf, i.e. the exact sum over every tag sequence in the set, not a product of per-word
    marginals. With the softmax decoder the words are independent and it is the product over words of the
    allowed tags' probability mass.
    """
    emissions, mask = logits[rows].float(), word_mask[rows]
    allowed = allowed.to(emissions.device) | ~mask.unsqueeze(-1)
    crf = getattr(model, "crf", None)
    if crf is None:
        return (emissions.softmax(-1) * allowed).sum(-1).prod(-1)
    constrained = emissions.masked_fill(~allowed, float("-inf"))
    return (crf.log_partition(constrained, mask) - crf.log_partition(emissions, mask)).exp()


class MultimodalNERPipeline(Pipeline):
    """Named entities of social media posts with their images, by UMGF.

    Inputs, one sample or a list (a batch; set ``batch_size``):

    - a string (raw text), with ``image=`` for one string or a list of images for a list of strings;
    - a dict ``{"text": str | "words": list[str], "image": ..., "grounding": ..., "id": str}``: ``words`` are
      pre-tokenised words (their character offsets then refer to ``" ".join(words)``); ``grounding`` holds the
      CONTRACT.md grounding columns when boxes are precomputed.

    An image is anything `UMGFProcessor` reads (path, PIL image, bytes, array) or an ``http(s)://`` URL or
    ``data:image/...;base64,`` string. Without an image the post is tagged text-only. An image that cannot be
    read or downloaded is dropped with a warning and the post is tagged text-only (the processor's policy).

    Output per sample: a list of entities, each ``{"entity_group", "score", "word", "start", "end", "words",
    "word_start", "word_end", "boxes"}`` (the first five as in transformers' "token-classification" pipeline):
    ``word = text[start:end]``; ``score`` is the probability that these words form exactly this entity (CRF,
    see `entity_probabilities`); ``boxes`` are the grounded objects linked to the entity's words, most
    attended first, each ``{"box": [x0, y0, x1, y1], "phrase", "detector_score", "alpha", "alpha_per_layer"}``
    with ``alpha`` the mean gate (eq 4) over fusion layers and over the entity's linked words, read at each
    word's first sub-token (the node the decoder reads). With ``return_words=True`` a sample gives instead
    ``{"text", "entities", "words": [{"word", "start", "end", "tag", "score"}], "objects", "truncated_words"}``,
    where a word's ``score`` is the CRF marginal of its tag (None for words cut by ``max_length``, tagged O).
    """

    _load_processor = True
    _load_tokenizer = False
    _load_image_processor = False
    _load_feature_extractor = False
    _load_video_processor = False

    def __call__(self, inputs: Any, image: Any = None, **kwargs: Any) -> Any:
        """Tag ``inputs`` (see the class docstring); ``image`` pairs images with string inputs."""
        if image is not None:
            inputs = self._with_images(inputs, image)
        return super().__call__(inputs, **kwargs)

    @staticmethod
    def _with_images(inputs: Any, image: Any) -> Any:
        if isinstance(inputs, str):
            return {"text": inputs, "image": image}
        if isinstance(inputs, list) and isinstance(image, list) and len(inputs) == len(image):
            return [{"text": x, "image": i} if isinstance(x, str) else {**x, "image": i} for x, i in zip(inputs, image)]
        raise ValueError("image= goes with one text, or as a list of images with a list of texts of the same length")

    def _sanitize_parameters(
        self, return_words: bool | None = None, timeout: float | None = None, **kwargs: Any
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(f"unknown arguments for the {TASK} pipeline: {sorted(kwargs)}")
        preprocess = {} if timeout is None else {"timeout": timeout}
        postprocess = {} if return_words is None else {"return_words": return_words}
        return preprocess, {}, postprocess

    def preprocess(self, item: Any, timeout: float | None = None) -> dict[str, Any]:
        sample = {"text": item} if isinstance(item, str) else item
        if not isinstance(sample, Mapping) or ("text" in sample) == ("words" in sample):
            raise ValueError(f"each input must be a string or a dict with 'text' or 'words', got {item!r:.200}")
        if "text" in sample:
            text = sample["text"]
            if not isinstance(text, str):
                raise ValueError(f"'text' must be a string, got {type(text).__name__}")
            words = self.processor.split_words(text)
        else:
            words = list(sample["words"])
            text = " ".join(words)
        image = sample.get("image")
        try:
            image = fetch_image(image, timeout)
        except ValueError as error:
            logger.warning("%s; tagging the post text-only", error)
            image = None
        example = self.processor(
            images=image, words=words, grounding=sample.get("grounding"), sample_ids=sample.get("id")
        )
        return {"example": dict(example), "text": text, "offsets": word_offsets(text, words)}

    def _collate(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.processor.data_collator(return_metadata=True)([item["example"] for item in items])
        return {
            "batch": batch,
            "text": [item["text"] for item in items],
            "offsets": [item["offsets"] for item in items],
        }

    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ) -> Iterator[Any]:
        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers, collate_fn=self._collate)
        return (
            self.postprocess(sample, **postprocess_params)
            for batch in loader
            for sample in self.forward(batch, **forward_params)
        )

    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params) -> Any:
        return next(iter(self.get_iterator([inputs], 0, 1, preprocess_params, forward_params, postprocess_params)))

    def _forward(self, model_inputs: dict[str, Any]) -> list[dict[str, Any]]:
        batch = dict(model_inputs["batch"])
        metadata = {key: batch.pop(key) for key in self.processor.metadata_keys if key in batch}
        outputs = self.model(**batch, output_gates=True)
        probabilities = self.model.tag_probabilities(outputs.logits, outputs.word_mask)
        tags = self.processor.decode_word_predictions(outputs.predictions, metadata["num_words"])
        label2id = {label: int(i) for i, label in self.model.config.id2label.items()}
        word_ids = batch["word_ids"].tolist()
        alphas = None if outputs.gates is None else torch.stack(outputs.gates).float()  # [layers, B, T, O]

        samples, rows, allowed, owners = [], [], [], []
        for b in range(len(tags)):
            kept = int(outputs.word_mask[b].sum())
            first = {}
            for position, word in enumerate(word_ids[b]):
                first.setdefault(word, position)
            entities = []
            for entity_type, start, last in get_entities(tags[b][:kept]):
                masks = entity_allowed_tags(label2id, entity_type, start, last + 1, kept, outputs.logits.shape[1])
                for mask in masks:
                    rows.append(b)
                    allowed.append(mask)
                    owners.append((b, len(entities)))
                positions = [first[w] for w in range(start, last + 1)]
                entities.append(
                    {
                        "type": entity_type,
                        "word_start": start,
                        "word_end": last + 1,
                        "score": 0.0,
                        "boxes": self._explain(alphas, batch, metadata, b, positions),
                    }
                )
            predicted = outputs.predictions[b, :kept]
            word_scores = probabilities[b, torch.arange(kept, device=predicted.device), predicted].tolist()
            samples.append(
                {
                    "text": model_inputs["text"][b],
                    "offsets": model_inputs["offsets"][b],
                    "words": metadata["words"][b],
                    "tags": tags[b],
                    "word_scores": word_scores + [None] * (len(tags[b]) - kept),
                    "truncated_words": metadata["truncated_words"][b],
                    "objects": [
                        {"box": box, "phrase": phrase, "score": score}
                        for box, phrase, score in zip(
                            metadata["object_boxes"][b], metadata["object_phrases"][b], metadata["object_scores"][b]
                        )
                    ],
                    "entities": entities,
                }
            )
        if rows:
            scores = entity_probabilities(
                self.model,
                outputs.logits,
                outputs.word_mask,
                torch.tensor(rows, device=outputs.logits.device),
                torch.stack(allowed),
            )
            for (b, index), score in zip(owners, scores.tolist()):
                samples[b]["entities"][index]["score"] += score
        return samples

    @staticmethod
    def _explain(alphas, batch, metadata, b: int, positions: list[int]) -> list[dict[str, Any]]:
        """The grounded objects linked to an entity's words, with their mean alpha gate (eq 4), best first."""
        if alphas is None or not metadata["object_boxes"][b]:
            return []
        alpha = alphas[:, b, positions]  # [layers, words, O]
        edges = batch["inter_modal_adjacency"][b, positions].bool()  # [words, O]
        boxes = []
        for o, box in enumerate(metadata["object_boxes"][b]):
            linked = edges[:, o]
            if not bool(linked.any()):
                continue
            per_layer = alpha[:, linked, o].mean(1)
            boxes.append(
                {
                    "box": [float(v) for v in box],
                    "phrase": metadata["object_phrases"][b][o],
                    "detector_score": float(metadata["object_scores"][b][o]),
                    "alpha": float(per_layer.mean()),
                    "alpha_per_layer": per_layer.tolist(),
                }
            )
        return sorted(boxes, key=lambda entry: -entry["alpha"])

    def postprocess(self, sample: dict[str, Any], return_words: bool = False) -> Any:
        text, offsets = sample["text"], sample["offsets"]
        entities = []
        for entity in sample["entities"]:
            start, end = offsets[entity["word_start"]][0], offsets[entity["word_end"] - 1][1]
            entities.append(
                {
                    "entity_group": entity["type"],
                    "score": entity["score"],
                    "word": text[start:end],
                    "start": start,
                    "end": end,
                    "words": sample["words"][entity["word_start"] : entity["word_end"]],
                    "word_start": entity["word_start"],
                    "word_end": entity["word_end"],
                    "boxes": entity["boxes"],
                }
            )
        if not return_words:
            return entities
        words = [
            {"word": word, "start": start, "end": end, "tag": tag, "score": score}
            for word, (start, end), tag, score in zip(sample["words"], offsets, sample["tags"], sample["word_scores"])
        ]
        return {
            "text": text,
            "entities": entities,
            "words": words,
            "objects": sample["objects"],
            "truncated_words": sample["truncated_words"],
        }

    def save_pretrained(self, save_directory: str | os.PathLike, **kwargs: Any) -> None:
        """Save the model, the processor and this pipeline's code, with ``custom_pipelines`` in config.json, so
        that ``pipeline(model=save_directory, trust_remote_code=True)`` rebuilds this pipeline anywhere."""
        os.makedirs(save_directory, exist_ok=True)
        module = type(self).__module__.rsplit(".", 1)[-1]
        self.model.config.custom_pipelines = {
            TASK: {
                "impl": f"{module}.{type(self).__name__}",
                "pt": ("AutoModelForTokenClassification",),
                "type": "multimodal",
            }
        }
        custom_object_save(self, save_directory)
        self.model.save_pretrained(save_directory, **kwargs)
        self.processor.save_pretrained(save_directory, **kwargs)


def register_pipeline() -> None:
    """Register the "multimodal-ner" task with transformers (once per process), so that
    ``pipeline("multimodal-ner", model=..., processor=...)`` finds `MultimodalNERPipeline`."""
    from transformers import AutoModelForTokenClassification
    from transformers.pipelines import PIPELINE_REGISTRY

    if PIPELINE_REGISTRY.supported_tasks.get(TASK, {}).get("impl") is MultimodalNERPipeline:
        return
    PIPELINE_REGISTRY.register_pipeline(
        TASK, pipeline_class=MultimodalNERPipeline, pt_model=AutoModelForTokenClassification, type="multimodal"
    )


__all__ = [
    "TASK",
    "MultimodalNERPipeline",
    "entity_allowed_tags",
    "entity_probabilities",
    "fetch_image",
    "register_pipeline",
    "word_offsets",
]
