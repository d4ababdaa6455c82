"""Tests of modeling_umgf.symbol_grounding: the grounder of the synthetic task's drawn symbols."""

from __future__ import annotations

from datasets_scripts.synthetic import SyntheticMNERConfig, build_synthetic_dataset, function_words
from modeling_umgf.symbol_grounding import SymbolGrounder


def test_the_synthetic_tasks_symbols_are_found_where_they_were_drawn():
    """The symbols grounder on the pixels gives the generator's own (gold) grounding, object for object."""
    data = build_synthetic_dataset(SyntheticMNERConfig(train_size=200, validation_size=0, test_size=0))["train"]
    rows = [row for row in data if row["image"] is not None]
    found = SymbolGrounder(function_words()).ground(
        [r["image"] for r in rows], [r["tokens"] for r in rows], [r["id"] for r in rows]
    )
    assert len(rows) > 150
    for row, grounding in zip(rows, found):
        assert grounding.boxes == row["object_boxes"], row["id"]
        assert (grounding.word_starts, grounding.word_ends) == (row["object_word_start"], row["object_word_end"])
        assert grounding.phrases == row["object_phrases"]
