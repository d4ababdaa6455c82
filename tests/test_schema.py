"""The names shared by all modules (`modeling_umgf.schema`): the one tag -> entity chunker and its score masks,
checked against seqeval, and the word / token label maps."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from seqeval.metrics.sequence_labeling import get_entities

from modeling_umgf.schema import LABELS, RELEASE_TOKEN_LABELS, chunk_entities, entity_tag_masks, token_label_of


def seqeval_tags(labels: tuple[str, ...]):
    return st.lists(st.sampled_from(labels), min_size=1, max_size=7)


BIOES = ("O", *(f"{prefix}-{t}" for t in ("PER", "LOC") for prefix in "BIES"))
HYPHENATED = ("O", "B-PER", "I-PER", "B-X-Y", "I-X-Y")  # a type with a hyphen, read as seqeval reads it


@pytest.mark.parametrize("labels", [LABELS, BIOES, HYPHENATED], ids=["bio", "bioes", "hyphenated-type"])
def test_the_chunker_and_its_masks_are_seqevals_entities(labels) -> None:
    """`chunk_entities` (the entities) and `entity_tag_masks` (the tag sequences scored for an entity) against
    seqeval's `get_entities` on random tag sequences: a sequence is allowed by exactly one mask of a span and type
    when seqeval finds that entity in it, by none otherwise."""
    label2id = {label: i for i, label in enumerate(labels)}
    types = sorted({label[2:] for label in labels if label != "O"})

    @settings(max_examples=150, deadline=None)
    @given(seqeval_tags(labels))
    def check(tags: list[str]) -> None:
        expected = {(t, start, last + 1) for t, start, last in get_entities(tags)}
        assert chunk_entities(tags) == [(t, start, last + 1) for t, start, last in get_entities(tags)]
        ids = torch.tensor([label2id[tag] for tag in tags])
        slots = len(tags) + 1  # one padded slot
        for start in range(len(tags)):
            for end in range(start + 1, len(tags) + 1):
                for entity_type in types:
                    masks = entity_tag_masks(label2id, entity_type, start, end, len(tags), slots)
                    hits = sum(bool(mask[torch.arange(len(tags)), ids].all()) for mask in masks)
                    assert hits == ((entity_type, start, end) in expected), (tags, entity_type, start, end)

    check()


def test_token_labels_of_word_labels() -> None:
    """A word tag maps to itself, or to its type's alias (MISC -> OTHER, the authors' names), never to another
    type's tag; a tag with no counterpart is an error naming both sides."""
    assert [token_label_of(label, RELEASE_TOKEN_LABELS) for label in LABELS] == [
        label.replace("MISC", "OTHER") for label in LABELS
    ]
    assert token_label_of("B-PER", LABELS) == "B-PER"
    with pytest.raises(ValueError, match=r"\['O', 'B-OTHER', 'I-OTHER'\] have no tag for the word label 'B-PER'"):
        token_label_of("B-PER", ("O", "B-OTHER", "I-OTHER"))
