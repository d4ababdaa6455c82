"""The one schema of umgf: entity types, tag sets, how tags read as entities, grounding columns and dataset features.

Every module that names an entity type, a tag, a grounding column or a dataset column imports it from here:
the configuration (default labels), the dataset builders, the processor, the collator, the metrics, the CLI
and the Space. The input contract these names belong to is written out in CONTRACT.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from seqeval.metrics.sequence_labeling import end_of_chunk, get_entities, start_of_chunk

if TYPE_CHECKING:
    import datasets

ENTITY_TYPES: tuple[str, ...] = ("PER", "LOC", "ORG", "MISC")
"""The four entity types of the Twitter MNER benchmarks, in the column order of the paper's Tables 1 and 2."""

TYPE_ALIASES: dict[str, str] = {"OTHER": "MISC"}
"""Other names of the types: Twitter-2015 (and the authors' released code) say OTHER where Twitter-2017 says MISC."""

LABELS: tuple[str, ...] = ("O",) + tuple(f"{prefix}-{t}" for t in ENTITY_TYPES for prefix in ("B", "I"))
"""Word-level BIO2 tags in class-id order: the default ``id2label`` of a model and the dataset's ClassLabel."""

RELEASE_TOKEN_LABELS: tuple[str, ...] = (
    "PAD",
    "B-PER",
    "I-PER",
    "B-LOC",
    "I-LOC",
    "B-ORG",
    "I-ORG",
    "B-OTHER",
    "I-OTHER",
    "O",
    "X",
    "CLS",
    "SEP",
)
"""The sub-token tag set of the authors' released CRF, in their id order (``tag2idx`` of their config.py): the
word tags (OTHER for MISC) at each word's first sub-token, X at its other sub-tokens, CLS and SEP at the special
tokens, PAD at padding."""

CONTINUATION_TAG, FIRST_SPECIAL_TAG, LAST_SPECIAL_TAG, PADDING_TAG = "X", "CLS", "SEP", "PAD"
"""The token-level tags that are not word tags: read as O when a word's tag is read at its first sub-token."""

GENERAL_WORDS: tuple[str, ...] = ("person", "location", "organization", "misc")
"""The general words of the four types, grounded in every image and linked to every word (paper, "Multi-modal
Graph")."""

GROUNDING_COLUMNS: tuple[str, ...] = (
    "object_boxes",
    "object_scores",
    "object_phrases",
    "object_word_start",
    "object_word_end",
    "grounder",
)
"""The grounding of a sample as dataset columns (CONTRACT.md, "Grounding"): parallel lists, one entry per visual
object, and the name of the grounder that made them ("" = not grounded yet)."""

METADATA_KEYS: tuple[str, ...] = (
    "sample_id",
    "words",
    "num_words",
    "truncated_words",
    *GROUNDING_COLUMNS[:-1],
)
"""Per-sample information the processor returns beside the model inputs (pop them before calling the model)."""


LABEL_PAD_VALUE = -100
"""Label of padded word slots (ignored by the loss, as in transformers' token classification)."""


def normalise_tag(tag: str) -> str | None:
    """A BIO tag in `LABELS` naming (``B-OTHER`` -> ``B-MISC``); None when it is not a known tag."""
    prefix, sep, entity_type = tag.partition("-")
    if not sep:
        return tag if tag == "O" else None
    normalised = f"{prefix}-{TYPE_ALIASES.get(entity_type, entity_type)}"
    return normalised if normalised in LABELS else None


def token_label_of(word_label: str, token_labels: Sequence[str]) -> str:
    """The token-level tag of a word tag: the same name, or the name with the type's alias (B-MISC -> B-OTHER)."""
    if word_label in token_labels:
        return word_label
    prefix, _, entity_type = word_label.partition("-")
    for alias, name in TYPE_ALIASES.items():
        if name == entity_type and f"{prefix}-{alias}" in token_labels:
            return f"{prefix}-{alias}"
    raise ValueError(f"the token labels {list(token_labels)} have no tag for the word label {word_label!r}")


def word_label_of(token_label: str) -> str:
    """How a token-level tag reads as a word tag (the authors' scoring): X, CLS, SEP and PAD read as O, OTHER as
    MISC."""
    if token_label in (CONTINUATION_TAG, FIRST_SPECIAL_TAG, LAST_SPECIAL_TAG, PADDING_TAG):
        return "O"
    return normalise_tag(token_label) or token_label


def dataset_features() -> datasets.Features:
    """The ``datasets`` features of every dataset umgf builds or reads (CONTRACT.md, "Dataset columns")."""
    import datasets

    string = datasets.Value("string")
    return datasets.Features(
        {
            "id": string,
            "image_id": string,
            "tokens": datasets.List(string),
            "ner_tags": datasets.List(datasets.ClassLabel(names=list(LABELS))),
            "image": datasets.Image(),
            "object_boxes": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
            "object_scores": datasets.List(datasets.Value("float32")),
            "object_phrases": datasets.List(string),
            "object_word_start": datasets.List(datasets.Value("int32")),
            "object_word_end": datasets.List(datasets.Value("int32")),
            "grounder": string,
        }
    )


def empty_grounding() -> dict[str, Any]:
    """The grounding columns of a sample that is not grounded (yet)."""
    return {column: "" if column == "grounder" else [] for column in GROUNDING_COLUMNS}


def _seqeval_parts(tag: str) -> tuple[str, str]:
    """A tag as seqeval reads it (prefix mode): its chunk tag (B, I, O, ...) and its type."""
    return tag[0], tag[1:].split("-", maxsplit=1)[-1] or "_"


_OUTSIDE = _seqeval_parts("O")
"""What seqeval reads before the first word and after the last one: after it every typed tag starts a chunk, and
every typed tag ends a chunk before it."""


def _starts(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    return start_of_chunk(previous[0], current[0], previous[1], current[1])


def _ends(previous: tuple[str, str], current: tuple[str, str]) -> bool:
    return end_of_chunk(previous[0], current[0], previous[1], current[1])


def chunk_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """The entities of a tag sequence as ``(type, start, end)`` word spans, ``end`` exclusive: seqeval's chunks
    (`get_entities`, the conlleval rules the benchmarks are scored with)."""
    return [(entity_type, start, last + 1) for entity_type, start, last in get_entities(list(tags))]


def entity_tag_masks(
    label2id: dict[str, int], entity_type: str, start: int, end: int, num_words: int, num_slots: int
) -> list[torch.Tensor]:
    """The tag sequences in which words ``[start, end)`` form exactly one ``entity_type`` entity of
    `chunk_entities`, as disjoint ``[num_slots, num_tags]`` bool masks: a sequence is in the set when every word's
    tag is allowed by one of the masks.

    The rule is seqeval's: a chunk starts at ``start`` (`start_of_chunk` after the word before), neither starts
    nor ends inside, and ends at ``end`` (`end_of_chunk` before the word after). With the entity's own tags fixed,
    each of those conditions constrains one neighbouring word, so there is one mask per way to tag the entity.
    """
    parts = {label: _seqeval_parts(label) for label in label2id}
    # the first tag must start a chunk after some neighbour: O (or the sentence start) is the most permissive one
    ways: list[list[str]] = [
        [label] for label, part in parts.items() if part[1] == entity_type and _starts(_OUTSIDE, part)
    ]
    for _ in range(start + 1, end):
        ways = [
            [*way, label]
            for way in ways
            for label, part in parts.items()
            if not _starts(parts[way[-1]], part) and not _ends(parts[way[-1]], part)
        ]
    masks = []
    for way in ways:  # every way can end: an O (or the sentence end) after it ends any typed chunk
        allowed = torch.ones(num_slots, len(label2id), dtype=torch.bool)
        for position, label in enumerate(way, start):
            allowed[position] = False
            allowed[position, label2id[label]] = True
        if start > 0:
            allowed[start - 1] = torch.tensor([_starts(parts[label], parts[way[0]]) for label in label2id])
        if end < num_words:
            allowed[end] = torch.tensor([_ends(parts[way[-1]], parts[label]) for label in label2id])
        masks.append(allowed)
    return masks


__all__ = [
    "ENTITY_TYPES",
    "GENERAL_WORDS",
    "GROUNDING_COLUMNS",
    "LABELS",
    "LABEL_PAD_VALUE",
    "METADATA_KEYS",
    "RELEASE_TOKEN_LABELS",
    "TYPE_ALIASES",
    "chunk_entities",
    "dataset_features",
    "empty_grounding",
    "entity_tag_masks",
    "normalise_tag",
    "token_label_of",
    "word_label_of",
]
