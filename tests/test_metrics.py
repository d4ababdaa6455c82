"""Tests of modeling_umgf.tools.metrics: seqeval scores counted by hand from small handmade tag sequences, Table 2's
layout, mean ± std against numpy and the paired bootstrap against resampled seqeval."""

from __future__ import annotations

import numpy as np
import pytest
from seqeval.metrics import f1_score

from modeling_umgf.tools.metrics import entity_scores, format_table2, mean_std, paired_bootstrap

# Gold entities: PER(0-1), LOC(3) | ORG(0), MISC(2-3) | PER(1), which starts with I- and still counts (conlleval).
GOLD = [["B-PER", "I-PER", "O", "B-LOC", "O"], ["B-ORG", "O", "B-MISC", "I-MISC"], ["O", "I-PER", "O"]]
# Predicted: PER(0-1) right, ORG(3) wrong type | ORG(0) right, MISC(2) wrong boundary | PER(1) right.
PRED = [["B-PER", "I-PER", "O", "B-ORG", "O"], ["B-ORG", "O", "B-MISC", "O"], ["O", "B-PER", "O"]]


def test_entity_scores_match_hand_counts():
    scores = entity_scores(GOLD, PRED)
    # 5 gold, 5 predicted, 3 correct entities.
    assert scores["precision"] == pytest.approx(3 / 5)
    assert scores["recall"] == pytest.approx(3 / 5)
    assert scores["f1"] == pytest.approx(3 / 5)
    assert scores["support"] == 5
    per_type = scores["per_type"]
    assert per_type["PER"] == pytest.approx({"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2})
    assert per_type["LOC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})
    org_p, org_r = 1 / 2, 1 / 1
    assert per_type["ORG"] == pytest.approx(
        {"precision": org_p, "recall": org_r, "f1": 2 * org_p * org_r / (org_p + org_r), "support": 1}
    )
    assert per_type["MISC"] == pytest.approx({"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1})


def test_entity_scores_rejects_misaligned_sentences():
    with pytest.raises(ValueError, match="sentence 1"):
        entity_scores(GOLD, [PRED[0], PRED[1][:2], PRED[2]])


def test_table2_layout():
    table = format_table2({"UMGF": entity_scores(GOLD, PRED)}, title="T")
    lines = table.splitlines()
    assert lines[0] == "T" and "Single Type (F1)" in lines[1] and "Overall" in lines[1]
    assert lines[2].split() == ["Model", "PER", "LOC", "ORG", "MISC", "|", "Pre.", "Rec.", "F1"]
    assert lines[4].split() == ["UMGF", "100.00", "0.00", "66.67", "0.00", "|", "60.00", "60.00", "60.00"]


def test_mean_std_matches_numpy():
    runs = [entity_scores(GOLD, PRED), entity_scores(GOLD, GOLD), entity_scores(GOLD, [["O"] * len(s) for s in GOLD])]
    summary = mean_std(runs)
    f1s = [0.6, 1.0, 0.0]
    assert summary["f1"]["mean"] == pytest.approx(np.mean(f1s))
    assert summary["f1"]["std"] == pytest.approx(np.std(f1s, ddof=1))
    assert summary["per_type"]["PER"]["f1"]["mean"] == pytest.approx(np.mean([1.0, 1.0, 0.0]))


def test_paired_bootstrap_against_resampled_seqeval():
    gold = GOLD * 4
    pred_a, pred_b = GOLD * 4, PRED * 4
    result = paired_bootstrap(gold, pred_a, pred_b, samples=200, seed=3)
    # Same resamples, scored independently with seqeval's own f1_score.
    draws = np.random.default_rng(3).integers(0, len(gold), size=(200, len(gold)))
    worse = 0
    for draw in draws:
        g = [gold[i] for i in draw]
        worse += f1_score(g, [pred_a[i] for i in draw]) <= f1_score(g, [pred_b[i] for i in draw])
    assert result["p_value"] == pytest.approx(worse / 200)
    assert result["f1_a"] == pytest.approx(1.0) and result["f1_b"] == pytest.approx(0.6)
    assert paired_bootstrap(gold, pred_b, pred_b, samples=50)["p_value"] == 1.0  # a tie never beats
