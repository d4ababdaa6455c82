"""Tests of datasets_scripts.statistics: Table 1 of the paper against an independent entity count."""

from __future__ import annotations

from pathlib import Path

import pytest
from twitter_fixtures import CONTRACT_LABELS, count_entities, expected_rows

from datasets_scripts.statistics import dataset_statistics, tag_statistics


@pytest.mark.parametrize("config", ["twitter2015", "twitter2017", "twitter2017c"])
def test_statistics_match_independent_count(built: dict, image_dir: Path, config: str) -> None:
    for split, dataset in built[config][0].items():
        tags = [[CONTRACT_LABELS[i] for i in row["ner_tags"]] for row in expected_rows(config, split, image_dir)]
        per_type, starting_with_i = count_entities(tags)
        stats = dataset_statistics(dataset)
        assert stats.entities == {t: per_type[t] for t in ("PER", "LOC", "ORG", "MISC")}
        assert stats.total == sum(per_type.values())
        assert (stats.tweets, stats.starting_with_i) == (len(tags), starting_with_i)


def test_statistics_count_i_starts_as_entities() -> None:
    stats = tag_statistics([["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"], ["O"]])
    assert stats.entities == {"PER": 1, "LOC": 2, "ORG": 1, "MISC": 0}
    assert (stats.tweets, stats.starting_with_i) == (2, 3)
