"""Entity-level evaluation of MNER predictions: seqeval scores, the paper's Table 2 layout, significance.

Scores are seqeval's, called directly (``evaluate.load("seqeval")`` needs the Hub), in seqeval's *default
mode*, which is compatible with conlleval, the Perl script of CoNLL-2000 used by the published Twitter MNER
baselines: an entity is a maximal B-/I- chunk of one type, and a chunk that starts with an I- tag still counts
as an entity. Precision/recall/F1 are micro-averaged over the four entity types.

`authors_entity_scores` is the other scoring, the one the UMGF authors' numbers come from (their ``metric.py``,
re-implemented here from its behaviour): every scored word of the split concatenated into one sequence, chunked
with their rules (an entity is a run of B-/I- tags of one type; a B- tag or a change of type starts a new one, an I-
tag after O starts one), precision = correct / predicted and recall = correct / gold, each 0 when nothing is
correct. It differs from seqeval only where an entity at the end of a tweet runs into an I- tag of the same type
at the start of the next one (one entity there, two for seqeval).

The paired bootstrap test (Koehn 2004; Berg-Kirkpatrick et al. 2012) is written here with numpy because no
maintained library resamples *sentences* while scoring *entity-level* F1: each sentence is reduced once to its
counts (correct, predicted, gold entities, found with seqeval's own chunker), so a resample is a sum.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from seqeval.metrics import classification_report
from seqeval.metrics.sequence_labeling import get_entities

from ..schema import ENTITY_TYPES


def _check(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> None:
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold sentences but {len(pred)} predicted ones")
    for index, (g, p) in enumerate(zip(gold, pred)):
        if len(g) != len(p):
            raise ValueError(f"sentence {index}: {len(g)} gold tags but {len(p)} predicted tags")


def entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """seqeval scores (default, conlleval-compatible mode) of tag-name sequences, one list per sentence.

    Returns ``{"precision", "recall", "f1", "support", "per_type": {type: {"precision", "recall", "f1",
    "support"}}}`` with fractions in [0, 1]; a type absent from both gold and predictions scores 0 with
    support 0.
    """
    _check(gold, pred)
    gold, pred = [list(g) for g in gold], [list(p) for p in pred]
    report = classification_report(gold, pred, output_dict=True, zero_division=0)
    micro = report["micro avg"]
    types = sorted({key for key in report if not key.endswith(" avg")} | set(ENTITY_TYPES))
    empty = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    per_type = {}
    for entity_type in types:
        row = report.get(entity_type, empty)
        per_type[entity_type] = {
            "precision": float(row["precision"]),
            "recall": float(row["recall"]),
            "f1": float(row["f1-score"]),
            "support": int(row["support"]),
        }
    return {
        "precision": float(micro["precision"]),
        "recall": float(micro["recall"]),
        "f1": float(micro["f1-score"]),
        "support": int(micro["support"]),
        "per_type": per_type,
    }


def authors_chunks(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities of one tag sequence as the authors' metric finds them: ``(type, start, end)``, end exclusive.

    A tag's class is the text before its first ``-`` and its type the text after its last ``-`` (a tag without
    ``-`` is both); ``O`` ends an entity; an entity ends before a tag of another type or of class ``B``."""
    chunks: set[tuple[str, int, int]] = set()
    kind: str | None = None
    start = 0
    for position, tag in enumerate(tags):
        if tag == "O":
            if kind is not None:
                chunks.add((kind, start, position))
            kind = None
            continue
        tag_class, tag_type = tag.split("-")[0], tag.split("-")[-1]
        if kind is not None and (tag_type != kind or tag_class == "B"):
            chunks.add((kind, start, position))
            kind = None
        if kind is None:
            kind, start = tag_type, position
    if kind is not None:
        chunks.add((kind, start, len(tags)))
    return chunks


def authors_entity_scores(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> dict[str, Any]:
    """The authors' scores (their ``metric.py``) of tag-name sequences, one list per sentence: the sentences are
    concatenated into one sequence, as their scoring file is, then chunked with `authors_chunks`.

    Returns the keys of `entity_scores` (``support``: gold entities), with ``per_type`` for the four types, and
    ``accuracy`` (the share of equal tags). OTHER and MISC are the same type under either name."""
    _check(gold, pred)
    gold_tags = [tag for sentence in gold for tag in sentence]
    pred_tags = [tag for sentence in pred for tag in sentence]
    gold_chunks, pred_chunks = authors_chunks(gold_tags), authors_chunks(pred_tags)

    def prf(correct: int, predicted: int, total: int) -> dict[str, Any]:
        precision = correct / predicted if correct else 0.0
        recall = correct / total if correct else 0.0
        f1 = 2 * precision * recall / (precision + recall) if correct else 0.0
        return {"precision": precision, "recall": recall, "f1": f1, "support": total}

    def of_type(chunks: set[tuple[str, int, int]], entity_type: str) -> set[tuple[str, int, int]]:
        names = {entity_type, "OTHER"} if entity_type == "MISC" else {entity_type}
        return {chunk for chunk in chunks if chunk[0] in names}

    scores = prf(len(gold_chunks & pred_chunks), len(pred_chunks), len(gold_chunks))
    per_type = {}
    for entity_type in ENTITY_TYPES:
        gold_type, pred_type = of_type(gold_chunks, entity_type), of_type(pred_chunks, entity_type)
        per_type[entity_type] = prf(len(gold_type & pred_type), len(pred_type), len(gold_type))
    equal = sum(g == p for g, p in zip(gold_tags, pred_tags))
    return {**scores, "accuracy": equal / len(gold_tags) if gold_tags else 0.0, "per_type": per_type}


def format_table2(rows: Mapping[str, Mapping[str, Any]], title: str = "") -> str:
    """Rows of scores (from `entity_scores`, or mean/std dicts from `mean_std`) in the layout of the paper's
    Table 2: per-type F1 for PER / LOC / ORG / MISC, then overall precision, recall and F1, in percent."""

    def cell(value: Any) -> str:
        if isinstance(value, Mapping):  # {"mean": m, "std": s}
            return f"{100 * value['mean']:.2f}±{100 * value['std']:.2f}"
        return f"{100 * value:.2f}"

    name_width = max([len("Model"), *map(len, rows)])
    header_cells = [*ENTITY_TYPES, "Pre.", "Rec.", "F1"]
    body = [
        [cell(r["per_type"][t]["f1"]) for t in ENTITY_TYPES] + [cell(r[k]) for k in ("precision", "recall", "f1")]
        for r in rows.values()
    ]
    width = max([6, *(len(c) for line in body for c in line)])
    group = f"{'Single Type (F1)':^{4 * (width + 1) - 1}} | {'Overall':^{3 * (width + 1) - 1}}"
    lines = [title] if title else []
    lines += [
        f"{'':<{name_width}}   {group}",
        f"{'Model':<{name_width}}   "
        + " ".join(f"{h:>{width}}" for h in header_cells[:4])
        + " | "
        + " ".join(f"{h:>{width}}" for h in header_cells[4:]),
    ]
    lines.append("-" * len(lines[-1]))
    for name, line in zip(rows, body):
        lines.append(
            f"{name:<{name_width}}   "
            + " ".join(f"{c:>{width}}" for c in line[:4])
            + " | "
            + " ".join(f"{c:>{width}}" for c in line[4:])
        )
    return "\n".join(lines)


def mean_std(runs: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof=1; 0 for one run) of `entity_scores` results over runs."""
    if not runs:
        raise ValueError("mean_std needs at least one run")

    def stat(values: list[float]) -> dict[str, float]:
        return {"mean": float(np.mean(values)), "std": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0}

    types = runs[0]["per_type"]
    return {
        **{k: stat([r[k] for r in runs]) for k in ("precision", "recall", "f1")},
        "per_type": {
            t: {k: stat([r["per_type"][t][k] for r in runs]) for k in ("precision", "recall", "f1")} for t in types
        },
        "runs": len(runs),
    }


def sentence_counts(gold: Sequence[Sequence[str]], pred: Sequence[Sequence[str]]) -> np.ndarray:
    """Per sentence: [correct, predicted, gold] entity counts, [N, 3] (seqeval's chunking, default mode)."""
    _check(gold, pred)
    counts = np.zeros((len(gold), 3), dtype=np.int64)
    for index, (g, p) in enumerate(zip(gold, pred)):
        gold_entities, pred_entities = set(get_entities(list(g))), set(get_entities(list(p)))
        counts[index] = (len(gold_entities & pred_entities), len(pred_entities), len(gold_entities))
    return counts


def _f1(counts: np.ndarray) -> np.ndarray:
    """Micro F1 from summed counts [..., 3] (0 where nothing was predicted or nothing is gold)."""
    correct, predicted, gold = counts[..., 0], counts[..., 1], counts[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        f1 = np.where(predicted + gold > 0, 2 * correct / (predicted + gold), 0.0)
    return f1


def paired_bootstrap(
    gold: Sequence[Sequence[str]],
    pred_a: Sequence[Sequence[str]],
    pred_b: Sequence[Sequence[str]],
    samples: int = 1000,
    seed: int = 0,
) -> dict[str, float]:
    """Paired bootstrap test of "system A has a higher entity F1 than system B" on the same sentences.

    Draws ``samples`` resamples of the sentences (with replacement; the same draw for both systems) and
    returns ``f1_a``, ``f1_b``, ``delta`` (A - B on the full set) and ``p_value``: the share of resamples in
    which A does not beat B (one-sided; Koehn 2004). ``2 * min(p, 1 - p)`` is a two-sided value.
    """
    counts_a, counts_b = sentence_counts(gold, pred_a), sentence_counts(gold, pred_b)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, len(gold), size=(samples, len(gold)))
    f1_a, f1_b = _f1(counts_a[draws].sum(1)), _f1(counts_b[draws].sum(1))
    full_a, full_b = float(_f1(counts_a.sum(0))), float(_f1(counts_b.sum(0)))
    return {
        "f1_a": full_a,
        "f1_b": full_b,
        "delta": full_a - full_b,
        "p_value": float(np.mean(f1_a <= f1_b)),
        "samples": samples,
    }


__all__ = [
    "authors_chunks",
    "authors_entity_scores",
    "entity_scores",
    "format_table2",
    "mean_std",
    "paired_bootstrap",
    "sentence_counts",
]
