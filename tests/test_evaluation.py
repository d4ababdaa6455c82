"""Tests of modeling_umgf.tools.evaluation: scores and per-sentence records against seqeval, run_ner_no_trainer's
flat keys, the printed tables and the warning of a model that learned nothing."""

from __future__ import annotations

import datasets
import pytest
from seqeval.metrics import accuracy_score, f1_score, precision_score, recall_score

from modeling_umgf.tools.evaluation import flat_scores, learning_warning, results_tables, score

LABELS = ["O", "B-PER", "I-PER", "B-LOC"]
GOLD = [["B-PER", "I-PER", "O"], ["B-LOC", "O"], ["O", "B-PER"]]
PRED = {"a": ["B-PER", "O", "O"], "b": ["B-LOC", "O"], "c": ["O", "B-PER"]}


def gold_dataset() -> datasets.Dataset:
    return datasets.Dataset.from_dict(
        {
            "id": ["a", "b", "c"],
            "tokens": [["w"] * len(tags) for tags in GOLD],
            "ner_tags": [[LABELS.index(t) for t in tags] for tags in GOLD],
        }
    )


def test_scores_and_records_match_seqeval() -> None:
    scores, records = score(gold_dataset(), PRED, LABELS)
    pred = list(PRED.values())
    assert scores["f1"] == pytest.approx(f1_score(GOLD, pred))
    assert scores["precision"] == pytest.approx(precision_score(GOLD, pred))
    assert [r["gold"] for r in records] == GOLD and [r["pred"] for r in records] == pred
    assert [(r["correct"], r["predicted"], r["gold_entities"]) for r in records] == [(0, 1, 1), (1, 1, 1), (1, 1, 1)]
    flat = flat_scores("test", scores, records)
    assert flat["test_recall"] == pytest.approx(recall_score(GOLD, pred))
    assert flat["test_accuracy"] == pytest.approx(accuracy_score(GOLD, pred))


def test_a_sentence_without_prediction_is_an_error() -> None:
    with pytest.raises(RuntimeError, match=r"no prediction for 1 sentences, e.g. \['c'\]"):
        score(gold_dataset(), {key: PRED[key] for key in "ab"}, LABELS)


def test_the_tables_name_each_evaluation_and_the_selected_epoch() -> None:
    scores, _ = score(gold_dataset(), PRED, LABELS)
    text = results_tables(
        {"test": scores, "test_without_images": scores}, "twitter2015", {"best_epoch": 2, "dev_f1": 0.5}
    )
    assert "Test results on twitter2015 (best epoch 2 of dev F1 50.00" in text
    assert "UMGF (with images)" in text and "UMGF (images removed)" in text and "authors" not in text


def test_a_model_that_learned_nothing_is_warned_about() -> None:
    assert learning_warning(0.5, 3, 10, {}) is None
    assert "dev F1 is 0.00" in learning_warning(0.0, 3, 10, {"mode": "train"})
    said = learning_warning(0.5, 0, 10, {"mode": "evaluate"})
    assert said.startswith("the model predicts no entity at all in the 10 test sentences") and "labels match" in said
