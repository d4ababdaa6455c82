"""Evaluation of a UMGF model during and after training: word predictions over a dataloader, their seqeval (and the
UMGF authors') scores against every gold sentence, run_ner_no_trainer's flat keys and the printed Table 2.

Every gold entity of every sentence is scored: the words a sentence loses to the processor's ``max_length`` are
predicted O, never dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

from datasets_scripts.authors_format import authors_split_scores

from ..input_checks import VISUAL_INPUTS
from ..processing_umgf import UMGFProcessor
from .metrics import entity_scores, format_table2, sentence_counts

#: Display names of the test evaluations in the printed tables.
EVALUATION_TITLES = {"test_without_images": "UMGF (images removed)"}


def model_inputs(batch: dict[str, Any], processor: UMGFProcessor, use_objects: bool) -> dict[str, Any]:
    """The model's keyword arguments from a collated batch: no metadata, no labels, and no visual inputs when
    the images are removed."""
    inputs, _ = processor.split_batch(batch)
    drop = {"labels"} | (set() if use_objects else set(VISUAL_INPUTS))
    return {key: value for key, value in inputs.items() if key not in drop}


@torch.no_grad()
def predict(
    model: torch.nn.Module,
    dataloader: Any,
    accelerator: Accelerator,
    processor: UMGFProcessor,
    use_objects: bool,
    desc: str,
) -> dict[str, list[str]]:
    """Tag names for every word of every sentence, by sample id (words cut by truncation are tagged O)."""
    model.eval()
    predictions: dict[str, list[str]] = {}
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        outputs = model(**model_inputs(batch, processor, use_objects))
        tags = accelerator.gather_for_metrics(
            accelerator.pad_across_processes(outputs.predictions, dim=1, pad_index=-100)
        )
        ids = accelerator.gather_for_metrics(list(batch["sample_id"]), use_gather_object=True)
        num_words = accelerator.gather_for_metrics(list(batch["num_words"]), use_gather_object=True)
        for sample, words in zip(ids, processor.decode_word_predictions(tags.cpu(), num_words)):
            predictions[sample] = words
    return predictions


def gold_and_predicted(
    dataset: datasets.Dataset, predictions: Mapping[str, list[str]], label_names: list[str]
) -> tuple[list[list[str]], list[list[str]]]:
    """The gold tag names of every sentence of ``dataset`` and the predicted ones, in the dataset's order."""
    missing = [sample for sample in dataset["id"] if sample not in predictions]
    if missing:
        raise RuntimeError(f"no prediction for {len(missing)} sentences, e.g. {missing[:3]}")
    gold = [[label_names[t] for t in tags] for tags in dataset["ner_tags"]]
    return gold, [predictions[sample] for sample in dataset["id"]]


def score(
    dataset: datasets.Dataset, predictions: Mapping[str, list[str]], label_names: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """seqeval scores of ``predictions`` against the gold tags of every sentence of ``dataset``, and the
    per-sentence records written to predictions_*.jsonl."""
    gold, pred = gold_and_predicted(dataset, predictions, label_names)
    counts = sentence_counts(gold, pred)
    records = [
        {
            "id": sample,
            "tokens": tokens,
            "gold": g,
            "pred": p,
            "correct": int(c[0]),
            "predicted": int(c[1]),
            "gold_entities": int(c[2]),
        }
        for sample, tokens, g, p, c in zip(dataset["id"], dataset["tokens"], gold, pred, counts)
    ]
    return entity_scores(gold, pred), records


def authors_scores(
    dataset: datasets.Dataset, predictions: Mapping[str, list[str]], label_names: list[str], processor: UMGFProcessor
) -> dict[str, Any]:
    """The UMGF authors' scores of ``predictions`` (`datasets_scripts.authors_format.authors_split_scores`)."""
    gold, pred = gold_and_predicted(dataset, predictions, label_names)
    return authors_split_scores(dataset["tokens"], gold, pred, processor.tokenizer, processor.effective_max_length)


def flat_scores(prefix: str, scores: Mapping[str, Any], records: list[dict[str, Any]]) -> dict[str, float]:
    """run_ner_no_trainer's flat keys of one evaluation: ``<prefix>_precision``, ``_recall``, ``_f1`` (seqeval's
    micro averages, as in ``scores``) and ``_accuracy`` (the share of words tagged right, seqeval's
    `accuracy_score`), from the per-sentence ``records`` of `score`."""
    words = sum(len(record["gold"]) for record in records)
    right = sum(g == p for record in records for g, p in zip(record["gold"], record["pred"]))
    return {
        **{f"{prefix}_{key}": float(scores[key]) for key in ("precision", "recall", "f1")},
        f"{prefix}_accuracy": right / words if words else 0.0,
    }


def results_tables(tables: Mapping[str, Mapping[str, Any]], data: str, results: Mapping[str, Any]) -> str:
    """The printed test results of a run: Table 2's layout of each evaluation in ``tables`` on ``data``, then the
    same scored as the authors where the run did (``--metric authors``)."""
    names = {
        "test": "UMGF (with images)" if "test_without_images" in tables else f"UMGF ({results.get('preset')})",
        **EVALUATION_TITLES,
    }
    selected = (
        f"model evaluated as it is, dev F1 {100 * results['dev_f1']:.2f}"
        if results.get("mode") == "evaluate"
        else f"best epoch {results['best_epoch']} of dev F1 {100 * results['dev_f1']:.2f}"
    )
    lines = [
        f"\nTest results on {data} ({selected}; seqeval default, conlleval-compatible):",
        format_table2({names.get(key, key): scores for key, scores in tables.items()}),
    ]
    authors = {names.get(key, key): scores["authors"] for key, scores in tables.items() if "authors" in scores}
    if authors:
        lines += [
            "\nThe same, scored as the UMGF authors (their metric.py; words cut by --max_length left out):",
            format_table2(authors),
        ]
    return "\n".join(lines) + "\n"


def learning_warning(dev_f1: float, predicted: int, sentences: int, results: Mapping[str, Any]) -> str | None:
    """A loud message when the model has learned nothing visible: it predicts no entity at all on the test split
    (``predicted`` entities in ``sentences`` sentences) or its dev F1 is 0; None otherwise."""
    if predicted and dev_f1 > 0:
        return None
    what = (
        f"the model predicts no entity at all in the {sentences} test sentences (every word O)"
        if not predicted
        else "its dev F1 is 0.00"
    )
    if results.get("mode") == "evaluate":
        why = "Check that the model was trained on this kind of data and that its labels match."
    else:
        why = (
            f"It did not learn to tag: {results.get('global_step')} optimizer steps on "
            f"{results.get('train_samples')} sentences are likely too few for the CRF to leave the all-O "
            "solution. Train longer (--num_train_epochs), on more sentences (--max_train_samples), or with a "
            "higher --learning_rate for the new layers (README, Training: 'A first run on real data')."
        )
    return f"{what}. {why}"
