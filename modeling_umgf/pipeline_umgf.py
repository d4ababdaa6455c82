"""The "multimodal-ner" pipeline: a post (raw text or words) and an optional image -> its named entities.

Each entity comes with its exact character span in the input text, a calibrated probability, and, when the post
has an image, the grounded boxes linked to its words with the gate weights alpha (eq 4) that let them in.

Built on transformers' `Pipeline`, so batching, devices, `save_pretrained`/`push_to_hub` and remote loading work
the usual way: `save_pretrained` writes ``custom_pipelines`` into config.json and copies this file next to the
model's code, so ``pipeline(model=folder_or_repo, trust_remote_code=True)`` loads it without the umgf package.

One post goes down the layers once and comes back once: ``preprocess`` checks it and decodes its image
(`processing_umgf.read_post`); the batch collation runs the processor on the whole batch
(`UMGFProcessor.process_posts`: grounding, batched across posts, then tokens, crops and edges); ``_forward`` calls
the model and hands its outputs to the processor's one post-processing step
(`UMGFProcessor.post_process_entities`: words, tags, entities by `schema.chunk_entities`, their CRF scores and
grounded boxes); ``postprocess`` applies ``aggregation_strategy`` / ``ignore_labels``.

transformers' standard "token-classification" pipeline also runs a UMGF model, text only, because the model
treats every token as a word when no ``word_ids`` are given: with ``aggregation_strategy="first"`` each word gets
the argmax of its emission scores at its first sub-token, as in training. It does not use the image, the CRF
transitions or Viterbi decoding, and its scores are a softmax over the emissions, not CRF probabilities.
"""

from __future__ import annotations

import collections.abc
import dataclasses
import functools
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from PIL import Image
from torch.utils.data import DataLoader
from transformers import Pipeline
from transformers.dynamic_module_utils import custom_object_save
from transformers.pipelines.pt_utils import PipelineDataset, PipelineIterator

from .detector_grounding import DEFAULT_DETECTOR
from .grounder_registry import GROUNDERS, build_grounder
from .grounding import Grounder
from .image_utils import encoded_image_bytes, load_rgb_image
from .input_checks import check_label_maps
from .precision import autocast
from .processing_umgf import Post, read_post, with_extras
from .schema import ENTITY_TYPES
from .visualization import box_label, draw_entities, hex_colour, supported_entities

if TYPE_CHECKING:
    from .modeling_umgf import UMGFForTokenClassification
    from .processing_umgf import UMGFProcessor

logger = logging.getLogger(__name__)

TASK = "multimodal-ner"
DETECTOR_GROUNDERS = ("detector", "release")
"""The grounders that run a downloaded detector (Grounding DINO)."""


AGGREGATION_STRATEGIES = ("simple", "first", "none")
"""The ``aggregation_strategy`` values the pipeline takes: "simple" (the default) and "first" give entities (the
CRF tags whole words, each read at its first sub-token, so both group the same word tags); "none" gives one item
per word. transformers' "average" and "max" combine sub-token scores into a word's, which a word-level CRF does not
have: they are refused with a ValueError."""


class TaggedPost(list):
    """The result for one post: a list of its entities (of its words with ``aggregation_strategy="none"``), the
    same type whatever the parameters. What else the pipeline read is kept beside the list: the attributes
    ``text``, ``entities``, ``words`` (every word ``{"word", "start", "end", "tag", "score"}``), ``objects`` and
    ``truncated_words``, also readable by key (``post["words"]``), and all together as a dict by `to_dict`."""

    DETAILS = ("text", "entities", "words", "objects", "truncated_words")

    def __init__(self, items: Sequence[dict[str, Any]], **details: Any) -> None:
        super().__init__(items)
        for name in self.DETAILS:
            setattr(self, name, details[name])

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            if key not in self.DETAILS:
                raise KeyError(f"{key!r}: a post's details are {list(self.DETAILS)}")
            return getattr(self, key)
        return super().__getitem__(key)

    def to_dict(self) -> dict[str, Any]:
        """``{"text", "entities", "words", "objects", "truncated_words"}`` (JSON-ready)."""
        return {name: getattr(self, name) for name in self.DETAILS}


def aggregation_of(strategy: Any) -> str:
    """The ``aggregation_strategy`` as one of `AGGREGATION_STRATEGIES` (a string or transformers' enum), or a
    ValueError saying what this pipeline does instead."""
    name = str(getattr(strategy, "value", strategy)).lower()
    if name in ("average", "max"):
        raise ValueError(
            f"aggregation_strategy={name!r} combines the scores of a word's sub-tokens; this model's CRF tags and "
            "scores whole words, so there is nothing to combine: use 'simple' (or 'first', the same) for entities, "
            "'none' for words"
        )
    if name not in AGGREGATION_STRATEGIES:
        raise ValueError(f"aggregation_strategy must be one of {list(AGGREGATION_STRATEGIES)}, got {strategy!r}")
    return name


class MultimodalNERPipeline(Pipeline):
    """Named entities of social media posts with their images, by UMGF.

    Inputs, one sample or a list (a batch; set ``batch_size``):

    - a string (raw text), with ``image=`` (and ``grounding=``) for one string, or lists of them for a list of
      strings;
    - a dict ``{"text": str | "words": list[str], "image": ..., "grounding": ..., "id": str}``: ``words`` are
      pre-tokenised words (their character offsets then refer to ``" ".join(words)``); ``grounding`` holds the
      grounding columns when boxes are precomputed (CONTRACT.md).

    An image is anything `image_utils.load_rgb_image` reads (path, URL, base64 or data URI, PIL image, bytes,
    array). Without an image the post is tagged text-only. An image that cannot be read or downloaded is dropped
    with a warning and the post is tagged text-only (the processor's policy).

    Parameters: ``grounder`` (a grounder name or `Grounder` to use instead of the processor's own; e.g.
    ``pipeline(model=..., grounder="grid")`` or per call), ``aggregation_strategy`` (`AGGREGATION_STRATEGIES`),
    ``ignore_labels`` (entity types, or with "none" word tags, left out; default ``["O"]``), ``timeout`` (image
    downloads), ``return_words`` (accepted for compatibility: the words are always in the result). A model without a
    visual branch ignores an image (and a grounding), with one warning, and never runs a grounder. ``precision``
    (``"auto"`` by default, ``"fp32"``, ``"bf16"`` or ``"int8"``: the model's `set_inference_precision`; the
    detector runs under bfloat16 autocast only when ``"bf16"`` is asked for by name, since its boxes moved in bf16
    (BENCHMARKS.md): "auto" keeps it float32, as does ``"int8"``; see `precision`).

    Output per sample: a list of entities, each ``{"entity_group", "score", "word", "start", "end", "words",
    "word_start", "word_end", "boxes"}`` (the first five as in transformers' "token-classification" pipeline):
    ``word = text[start:end]``; ``score`` is the probability that these words form exactly this entity (CRF,
    see `UMGFForTokenClassification.entity_probabilities`); ``boxes`` are the grounded objects linked to the
    entity's words, most attended first, each ``{"box": {"xmin", "ymin", "xmax", "ymax"}, "phrase",
    "detector_score", "alpha", "alpha_per_layer"}`` (boxes as transformers' object-detection pipeline gives them,
    in pixels) with ``alpha`` the mean gate (eq 4) over fusion layers and over the entity's linked words, read at
    each word's first sub-token (the node the decoder reads). Every result is a `TaggedPost`: the list above, with
    the post's details beside it as attributes (``post.words``, ``post["words"]``, ``post.to_dict()``): ``text``,
    ``entities``, ``words`` (``[{"word", "start", "end", "tag", "score"}]``, a word's ``score`` the CRF marginal of
    its tag, None for words cut by ``max_length``, tagged O), ``objects`` and ``truncated_words``. With
    ``aggregation_strategy="none"`` the list holds one item per word instead, ``{"entity": tag, "score", "index":
    word number from 0, "word", "start", "end"}``, as transformers' "token-classification" pipeline gives per token.
    """

    model: UMGFForTokenClassification
    processor: UMGFProcessor
    _load_processor = True  # type: ignore[assignment]
    _load_tokenizer = False  # type: ignore[assignment]
    _load_image_processor = False  # type: ignore[assignment]
    _load_feature_extractor = False  # type: ignore[assignment]
    _load_video_processor = False  # type: ignore[assignment]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("precision", "auto")
        super().__init__(*args, **kwargs)
        # A processor whose labels are not the model's would name the tags wrongly (or fail on a tag id).
        check_label_maps(self.model.config, self.model.name_or_path or "the model", self.processor.label_names)
        # Sentences are cut to what the text encoder can read, whatever the tokenizer was saved with.
        positions = getattr(self.model.config.text_encoder_config, "max_position_embeddings", None)
        if positions and self.processor.effective_max_length > positions:
            logger.info(
                "cutting posts to the text encoder's %d positions (max_length was %d)",
                positions,
                self.processor.effective_max_length,
            )
            self.processor.tokenizer.model_max_length = positions

    def __call__(self, inputs: Any, image: Any = None, grounding: Any = None, **kwargs: Any) -> Any:  # type: ignore[override]
        """Tag ``inputs`` (see the class docstring); ``image`` / ``grounding`` go with string inputs."""
        if image is not None or grounding is not None:
            inputs = with_extras(inputs, image, grounding)
        return super().__call__(inputs, **kwargs)

    def _sanitize_parameters(
        self,
        return_words: bool | None = None,
        timeout: float | None = None,
        grounder: str | Grounder | None = None,
        aggregation_strategy: Any = None,
        ignore_labels: Sequence[str] | None = None,
        precision: str | None = None,
        **kwargs: Any,
    ) -> tuple[dict, dict, dict]:
        if kwargs:
            raise TypeError(f"unknown arguments for the {TASK} pipeline: {sorted(kwargs)}")
        if precision is not None:
            self.model.set_inference_precision(precision)
            self._detector_precision = "bf16" if precision == "bf16" else "fp32"  # opt-in only: BENCHMARKS.md
        preprocess: dict[str, Any] = {} if timeout is None else {"timeout": timeout}
        if grounder is not None and self.has_visual_branch:  # a text-only model never grounds
            preprocess["grounder"] = build_grounder(grounder) if isinstance(grounder, str) else grounder
        postprocess: dict[str, Any] = {}
        if aggregation_strategy is not None:
            postprocess["aggregation_strategy"] = aggregation_of(aggregation_strategy)
        if ignore_labels is not None:
            if isinstance(ignore_labels, str) or not all(isinstance(label, str) for label in ignore_labels):
                raise ValueError(f"ignore_labels must be a list of labels, got {ignore_labels!r}")
            postprocess["ignore_labels"] = tuple(ignore_labels)
        return preprocess, {}, postprocess

    @property
    def has_visual_branch(self) -> bool:
        """Whether the model reads images at all (a text-only preset has no visual branch)."""
        return bool(getattr(self.model.config, "use_visual", True))

    def _without_visual_inputs(self, sample: Any) -> Any:
        """``sample`` (a post mapping or `Post`) without its image and grounding when the model has no visual
        branch (warned once)."""
        if self.has_visual_branch or not isinstance(sample, (Mapping, Post)):
            return sample
        image, grounding = (
            (sample.image, sample.grounding)
            if isinstance(sample, Post)
            else (sample.get("image"), sample.get("grounding"))
        )
        if image is None and grounding is None:
            return sample
        if not getattr(self, "_warned_text_only", False):
            logger.warning("this model has no visual branch (a text-only model): images are ignored, none is grounded")
            self._warned_text_only = True
        if isinstance(sample, Post):
            return dataclasses.replace(sample, image=None, grounding=None)
        return {**sample, "image": None, "grounding": None}

    def read_post(self, sample: Any, where: str = "input", strict: bool = False, timeout: float | None = None) -> Post:
        """`processing_umgf.read_post` with this pipeline's `load_image` (a `Post` is kept as it is): the one
        check and decoding of a post for every entry point (pipeline, CLI, handler, Space)."""
        sample = self._without_visual_inputs(sample)
        if isinstance(sample, Post):
            return sample
        load = self.load_image if timeout is None else functools.partial(self.load_image, timeout=timeout)
        return read_post(sample, where, strict=strict, load=load)

    def preprocess(self, item: Any, timeout: float | None = None) -> Post:  # type: ignore[override]
        return self.read_post(item, timeout=timeout)

    def _collate(self, posts: list[Post], grounder: Grounder | None = None) -> dict[str, Any]:
        """The processor on the whole batch: one batched grounder call, one tokenizer call, padding."""
        with autocast(getattr(self, "_detector_precision", "fp32"), self.device.type):  # the detector
            batch = self.processor.process_posts(posts, grounder=grounder)
        return {"batch": batch, "text": [post.text for post in posts]}

    # Pipeline's own iterator collates with pad_collate_fn; here the processor collates, so a batch grounds at once.
    def get_iterator(
        self, inputs, num_workers: int, batch_size: int, preprocess_params, forward_params, postprocess_params
    ) -> Iterator[Any]:
        preprocess_params = dict(preprocess_params)
        grounder = preprocess_params.pop("grounder", None)
        dataset: PipelineDataset | PipelineIterator
        if isinstance(inputs, collections.abc.Sized):
            dataset = PipelineDataset(inputs, self.preprocess, preprocess_params)
        else:
            dataset = PipelineIterator(inputs, self.preprocess, preprocess_params)
            num_workers = min(num_workers, 1)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=num_workers,
            collate_fn=functools.partial(self._collate, grounder=grounder),
        )
        return (
            self.postprocess(sample, **postprocess_params)
            for batch in loader
            for sample in self.forward(batch, **forward_params)
        )

    # One post is a batch of one: the grounder parameter belongs to the collation, which Pipeline.run_single skips.
    def run_single(self, inputs, preprocess_params, forward_params, postprocess_params) -> Any:
        return next(iter(self.get_iterator([inputs], 0, 1, preprocess_params, forward_params, postprocess_params)))

    def _forward(self, model_inputs: dict[str, Any]) -> list[dict[str, Any]]:  # type: ignore[override]
        inputs, _ = self.processor.split_batch(model_inputs["batch"])
        outputs = self.model(**inputs, output_gates=True)
        # scored here, on the model's device: the CRF probabilities are the model's (Pipeline.forward then moves to cpu)
        return self.processor.post_process_entities(outputs, model_inputs["batch"], model_inputs["text"], self.model)

    def postprocess(  # type: ignore[override]
        self,
        post: dict[str, Any],
        aggregation_strategy: str = "simple",
        ignore_labels: Sequence[str] = ("O",),
    ) -> TaggedPost:
        entities = [entity for entity in post["entities"] if entity["entity_group"] not in ignore_labels]
        items = entities
        if aggregation_strategy == "none":  # one item per word, as the token-classification pipeline gives
            items = [
                {
                    "entity": w["tag"],
                    "score": w["score"],
                    "index": index,
                    "word": w["word"],
                    "start": w["start"],
                    "end": w["end"],
                }
                for index, w in enumerate(post["words"])
                if w["tag"] not in ignore_labels
            ]
        return TaggedPost(items, **{**post, "entities": entities})

    load_image = staticmethod(load_rgb_image)
    encoded_image_bytes = staticmethod(encoded_image_bytes)
    """Bytes of a base64 string or data URI, else None (`image_utils.encoded_image_bytes`): for servers that must
    never read a path."""
    """The pipeline's image loader (path, URL, base64, data URI, ...): raises a ValueError naming what is wrong."""

    with_extras = staticmethod(with_extras)
    """Posts of a text or list of texts with their ``image`` / ``grounding`` (`processing_umgf.with_extras`)."""

    @staticmethod
    def draw_entities(image: Image.Image, entities: Sequence[dict[str, Any]], text: str | None = None) -> Image.Image:
        """``image`` with the grounded boxes that feed ``entities`` (this pipeline's output), outlined in the colour
        of the entity attending to each most and labelled with its score, above the post ``text`` and the entities'
        scores (`visualization.draw_entities`)."""
        return draw_entities(image, entities, text)

    @staticmethod
    def box_annotations(entities: Sequence[dict[str, Any]]) -> list[tuple[tuple[int, int, int, int], str]]:
        """One ``(box, "TYPE: words")`` per grounded box that feeds an entity, labelled with the entity attending
        to it most (for `gradio.AnnotatedImage`)."""
        return [
            (tuple(round(v) for v in box), box_label(linked[0]))  # type: ignore[misc]
            for box, linked in supported_entities(entities)
        ]

    @staticmethod
    def available_grounders() -> list[str]:
        """The names a ``grounder`` parameter takes."""
        return sorted(GROUNDERS)

    def usable_grounders(self) -> list[str]:
        """The grounders that can ground a typed post with its image here, the model's own first: none for a model
        without a visual branch; never "precomputed" (a typed post brings no boxes); the detector grounders only
        when their detector's weights are on this machine (a local folder or the Hub cache: no download)."""
        if not self.has_visual_branch:
            return []
        own = self.processor.grounder
        names = [own, *(name for name in sorted(GROUNDERS) if name != own)]
        return [
            name
            for name in names
            if name != "precomputed" and (name not in DETECTOR_GROUNDERS or self._detector_on_disk(name))
        ]

    def _detector_on_disk(self, grounder: str) -> bool:
        """Whether the detector of ``grounder`` (the processor's settings for its own) loads without a download."""
        settings = self.processor.grounder_kwargs if grounder == self.processor.grounder else {}
        detector = str((settings or {}).get("detector", DEFAULT_DETECTOR))
        if os.path.isdir(detector):
            return os.path.isfile(os.path.join(detector, "config.json"))
        from huggingface_hub import try_to_load_from_cache

        cached = [try_to_load_from_cache(detector, name) for name in ("config.json", "model.safetensors")]
        return all(isinstance(path, str) for path in cached)

    @staticmethod
    def entity_colours(entities: Sequence[dict[str, Any]] | None = None) -> dict[str, str]:
        """``#rrggbb`` per entity type (and per `box_annotations` label of ``entities``), for display widgets."""
        colours = {entity_type: hex_colour(entity_type) for entity_type in ENTITY_TYPES}
        for entity in entities or ():
            colours[box_label(entity)] = hex_colour(entity["entity_group"])
        return colours

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
    "AGGREGATION_STRATEGIES",
    "TASK",
    "MultimodalNERPipeline",
    "TaggedPost",
    "aggregation_of",
    "register_pipeline",
]
