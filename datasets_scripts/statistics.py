"""Table 1 of the UMGF paper (entities per type and tweets per split) for built configs.

Entities are the chunks that ``seqeval`` (conlleval-compatible default mode) extracts, i.e. exactly the
gold entities an evaluation with seqeval sees. An ``I-`` tag that follows ``O`` or a different type
starts a new entity; such entities (present in Twitter-2015) are counted separately as well, so the
strict-IOB2 count (entities that start with ``B-``) is the total minus that row.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import datasets
from seqeval.metrics.sequence_labeling import get_entities

from modeling_umgf.schema import ENTITY_TYPES

TYPE_NAMES: dict[str, str] = {"PER": "Person", "LOC": "Location", "ORG": "Organization", "MISC": "Misc."}


@dataclass(frozen=True)
class SplitStatistics:
    """One column of Table 1.

    Attributes:
        entities: entity count per type in :data:`ENTITY_TYPES`.
        tweets: number of tweets.
        starting_with_i: entities whose first tag is ``I-`` (None when unknown, as for the paper).
    """

    entities: Mapping[str, int]
    tweets: int
    starting_with_i: int | None = None

    @property
    def total(self) -> int:
        """All entities."""
        return sum(self.entities.values())


def tag_statistics(tag_sequences: Iterable[Sequence[str]]) -> SplitStatistics:
    """Count tweets and entities in sequences of tag names (``"B-PER"``, ``"I-PER"``, ``"O"``...)."""
    entities: Counter[str] = Counter(dict.fromkeys(ENTITY_TYPES, 0))
    starting_with_i = 0
    tweets = 0
    for tags in tag_sequences:
        tweets += 1
        for entity_type, start, _ in get_entities(list(tags)):
            entities[entity_type] += 1
            starting_with_i += tags[start].startswith("I-")
    return SplitStatistics(entities=dict(entities), tweets=tweets, starting_with_i=starting_with_i)


def dataset_statistics(dataset: datasets.Dataset) -> SplitStatistics:
    """Table 1 column of one split (reads only the ``ner_tags`` column)."""
    label = dataset.features["ner_tags"].feature
    return tag_statistics(label.int2str(tags) for tags in dataset.select_columns("ner_tags")["ner_tags"])


def format_table1(columns: Mapping[str, SplitStatistics]) -> str:
    """Render columns (header -> statistics) as a Markdown table in the layout of the paper's Table 1."""
    rows = [[TYPE_NAMES[t], *(str(s.entities[t]) for s in columns.values())] for t in ENTITY_TYPES]
    rows.append(["Total", *(str(s.total) for s in columns.values())])
    rows.append(
        [
            "of which start with I-",
            *("n/a" if s.starting_with_i is None else str(s.starting_with_i) for s in columns.values()),
        ]
    )
    rows.append(["Tweets", *(str(s.tweets) for s in columns.values())])
    lines = ["| Entity type | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _paper_column(per: int, loc: int, org: int, misc: int, tweets: int) -> SplitStatistics:
    return SplitStatistics(entities={"PER": per, "LOC": loc, "ORG": org, "MISC": misc}, tweets=tweets)


PAPER_TABLE1: dict[str, SplitStatistics] = {
    "twitter2015 train": _paper_column(2217, 2091, 928, 940, 4000),
    "twitter2015 validation": _paper_column(552, 522, 247, 225, 1000),
    "twitter2015 test": _paper_column(1816, 1697, 839, 726, 3257),
    "twitter2017 train": _paper_column(2943, 731, 1674, 701, 3373),
    "twitter2017 validation": _paper_column(626, 173, 375, 150, 723),
    "twitter2017 test": _paper_column(621, 178, 395, 157, 723),
    "twitter2017c train": _paper_column(2586, 630, 1605, 629, 3075),
    "twitter2017c validation": _paper_column(626, 173, 375, 150, 659),
    "twitter2017c test": _paper_column(621, 178, 395, 157, 661),
}
"""Table 1 as printed in Zhang et al. (2021), same column headers as :func:`config_statistics`."""


def config_statistics(config_name: str, dataset_dict: datasets.DatasetDict) -> dict[str, SplitStatistics]:
    """Table 1 columns ``"<config> <split>"`` of one built config."""
    return {f"{config_name} {split}": dataset_statistics(dataset) for split, dataset in dataset_dict.items()}
