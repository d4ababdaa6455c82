"""The model's inputs: their names (one list) and their checks at the model's boundary.

Shapes and dtypes are checked on the host; the checks of values are reduced on the device and read back in one
sync, which also brings the batch's number of words. Written because transformers checks none of this: a bad id
fails deep inside an embedding lookup, a float label or a misaligned ``word_ids`` silently gives wrong results.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import torch

from .configuration_umgf import UMGFConfig
from .schema import LABEL_PAD_VALUE


@dataclass
class ModelInputs:
    """The tensors a UMGF forward takes (any may be None)."""

    input_ids: torch.Tensor | None = None
    attention_mask: torch.Tensor | None = None
    token_type_ids: torch.Tensor | None = None
    inputs_embeds: torch.Tensor | None = None
    word_ids: torch.Tensor | None = None
    labels: torch.Tensor | None = None
    pixel_values: torch.Tensor | None = None
    object_features: torch.Tensor | None = None
    object_mask: torch.Tensor | None = None
    inter_modal_adjacency: torch.Tensor | None = None

    @classmethod
    def from_keywords(cls, keywords: Mapping[str, Any]) -> ModelInputs:
        """The model inputs among a forward's ``keywords``, by field name (other keywords are not inputs)."""
        return cls(**{field.name: keywords[field.name] for field in fields(cls) if field.name in keywords})


# What a processor returns and a model takes, by name: every input but ``inputs_embeds`` (an alternative to
# ``input_ids`` that no processor builds).
MODEL_INPUT_NAMES: tuple[str, ...] = tuple(field.name for field in fields(ModelInputs) if field.name != "inputs_embeds")

# The model inputs that carry the image: without them the model tags a post text-only.
VISUAL_INPUTS: tuple[str, ...] = ("pixel_values", "object_features", "object_mask", "inter_modal_adjacency")


def word_numbering_errors(word_ids: torch.Tensor) -> torch.Tensor:
    """``[B, T]`` bool: sub-tokens whose word id breaks the numbering (words 0..n-1 in order, each word's
    sub-tokens contiguous, -1 elsewhere). A sub-token must continue the word of the sub-token before it or start
    the next word."""
    previous = torch.cat([word_ids.new_full((word_ids.shape[0], 1), -1), word_ids[:, :-1]], dim=1)
    last_word = torch.cummax(previous, dim=1).values  # the highest word id before each position
    starts_next = word_ids == last_word + 1
    continues = (word_ids == last_word) & (previous == word_ids)
    return (word_ids >= 0) & ~(starts_next | continues)


def finite_objects(objects: torch.Tensor) -> torch.Tensor:
    """[B, O] bool: whether every value of each object's crop or features is finite.

    Read off the object's largest and smallest value (a NaN is both; an infinity is one of them): two reductions
    instead of a test of every element.
    """
    flat = objects.flatten(2)
    return torch.isfinite(flat.amax(-1)) & torch.isfinite(flat.amin(-1))


def _shape_errors(config: UMGFConfig, x: ModelInputs) -> None:
    """Raise a ValueError for any input of the wrong rank, size or dtype (host-side, free)."""
    if (x.input_ids is None) == (x.inputs_embeds is None):
        raise ValueError("give exactly one of input_ids and inputs_embeds")
    reference = x.input_ids if x.input_ids is not None else x.inputs_embeds
    assert reference is not None
    if reference.dim() != (2 if x.input_ids is not None else 3):
        raise ValueError(f"input_ids must be [batch, tokens], got shape {tuple(reference.shape)}")
    if x.input_ids is not None and (x.input_ids.is_floating_point() or x.input_ids.is_complex()):
        raise ValueError(f"input_ids must be integer token ids, got {x.input_ids.dtype}")
    batch, length = reference.shape[:2]
    for name in ("attention_mask", "token_type_ids", "word_ids"):
        value = getattr(x, name)
        if value is not None and tuple(value.shape) != (batch, length):
            raise ValueError(f"{name} must have the shape of input_ids [{batch}, {length}], got {tuple(value.shape)}")
    if x.word_ids is not None and x.word_ids.is_floating_point():
        raise ValueError(f"word_ids must be integers, got {x.word_ids.dtype}")
    limit = getattr(config.text_config, "max_position_embeddings", None)
    if limit is not None and length > limit:
        raise ValueError(
            f"the batch has {length} sub-tokens per sentence but the text encoder has {limit} positions: cut the "
            f"sentences (the processor's max_length) to at most {limit}"
        )
    if x.labels is not None:
        if x.labels.dim() != 2 or x.labels.shape[0] != batch:
            raise ValueError(f"labels must be word-level [{batch}, words], got shape {tuple(x.labels.shape)}")
        if x.labels.is_floating_point() or x.labels.dtype == torch.bool:
            raise ValueError(f"labels must be integer tag ids, got {x.labels.dtype}")
    if x.pixel_values is not None and x.object_features is not None:
        raise ValueError("give either pixel_values or object_features, not both")
    if x.pixel_values is not None and (x.pixel_values.dim() != 5 or x.pixel_values.shape[2] != 3):
        raise ValueError(f"pixel_values must be [batch, objects, 3, H, W], got shape {tuple(x.pixel_values.shape)}")
    features = x.object_features
    if (
        features is not None
        and features.shape[1] > 0
        and (features.dim() != 3 or features.shape[-1] != config.vision_feature_dim)
    ):
        raise ValueError(
            f"object_features must be [batch, objects, {config.vision_feature_dim}], got shape {tuple(features.shape)}"
        )
    objects = x.pixel_values if x.pixel_values is not None else x.object_features
    if objects is not None:
        if objects.shape[0] != batch:
            raise ValueError(f"the visual inputs hold {objects.shape[0]} samples for a batch of {batch}")
        count = objects.shape[1]
        if x.object_mask is not None and tuple(x.object_mask.shape) != (batch, count):
            raise ValueError(f"object_mask must be [{batch}, {count}], got {tuple(x.object_mask.shape)}")
        if x.inter_modal_adjacency is not None and tuple(x.inter_modal_adjacency.shape) != (batch, length, count):
            raise ValueError(
                f"inter_modal_adjacency must be [{batch}, {length}, {count}], "
                f"got {tuple(x.inter_modal_adjacency.shape)}"
            )
        if count and not config.use_visual:
            raise ValueError("this UMGF model has no visual branch (config.use_visual=False) but got objects")


def check_inputs(config: UMGFConfig, inputs: ModelInputs, labels_for_every_word: bool = False) -> int | None:
    """Check ``inputs`` and return the number of words of the batch (None without ``word_ids``).

    ``labels_for_every_word``: every real word needs a label (a CRF scores whole tag sequences).
    Raises a ValueError naming the input, the batch item and the offending value.
    """
    _shape_errors(config, inputs)
    reference = inputs.input_ids if inputs.input_ids is not None else inputs.inputs_embeds
    assert reference is not None
    device, (batch, length) = reference.device, reference.shape[:2]
    zero = torch.zeros((), dtype=torch.long, device=device)
    real = inputs.attention_mask.bool() if inputs.attention_mask is not None else None
    checks: dict[str, torch.Tensor] = {}
    if inputs.input_ids is not None:
        vocab = config.text_encoder_config.vocab_size
        checks["ids"] = ((inputs.input_ids < 0) | (inputs.input_ids >= vocab)).any()
    if real is not None:
        checks["empty"] = (~real.any(1)).any()
    word_count = None
    if inputs.word_ids is not None:
        word_ids = inputs.word_ids.long()
        checks["numbering"] = word_numbering_errors(word_ids).any()
        word_count = word_ids.max(1).values + 1 if length else torch.zeros(batch, dtype=torch.long, device=device)
        checks["words"] = word_count.max() if batch else zero
        if inputs.labels is not None:
            labels = inputs.labels.long()
            width = labels.shape[1]
            checks["short"] = (word_count > width).any()
            real_word = torch.arange(width, device=device) < word_count[:, None]
            outside = (labels >= len(config.label_names)) | ((labels < 0) & (labels != LABEL_PAD_VALUE))
            checks["outside"] = (outside & real_word).any()
            if labels_for_every_word:
                checks["missing"] = ((labels == LABEL_PAD_VALUE) & real_word).any()
    objects = inputs.pixel_values if inputs.pixel_values is not None else inputs.object_features
    if objects is not None and objects.shape[1] and objects.numel():
        finite = finite_objects(objects)
        present = inputs.object_mask.bool() if inputs.object_mask is not None else torch.ones_like(finite)
        checks["nonfinite"] = (present & ~finite).any()
    if not checks:
        return None
    values = dict(zip(checks, torch.stack([c.long() for c in checks.values()]).tolist()))  # the one sync
    _raise_for(config, inputs, values)
    return int(values["words"]) if "words" in values else None


def _first_row(mask: torch.Tensor) -> int:
    return int(mask.reshape(mask.shape[0], -1).any(1).nonzero()[0, 0])


def _raise_for(config: UMGFConfig, x: ModelInputs, found: dict[str, int]) -> None:
    """The error message of the first failed value check (computed only when one failed)."""
    if found.get("ids"):
        assert x.input_ids is not None
        bad = (x.input_ids < 0) | (x.input_ids >= config.text_encoder_config.vocab_size)
        row, vocab = _first_row(bad), config.text_encoder_config.vocab_size
        raise ValueError(
            f"input_ids of batch item {row} hold ids outside the vocabulary 0..{vocab - 1}: "
            f"{x.input_ids[row][bad[row]].tolist()[:10]}"
        )
    if found.get("empty"):
        assert x.attention_mask is not None
        raise ValueError(f"batch item {_first_row(~x.attention_mask.bool().any(1, keepdim=True))} has no real token")
    if found.get("numbering"):
        assert x.word_ids is not None
        row = _first_row(word_numbering_errors(x.word_ids.long()))
        raise ValueError(
            f"word_ids of batch item {row} must number words 0..n-1 in order with each word's sub-tokens "
            f"contiguous; got {x.word_ids[row].tolist()}"
        )
    if found.get("short"):
        assert x.labels is not None
        raise ValueError(
            f"labels hold {x.labels.shape[1]} words per sentence but the batch has {found['words']} words: give "
            "word-level labels, one per word"
        )
    if found.get("outside") or found.get("missing"):
        assert x.labels is not None and x.word_ids is not None
        labels = x.labels.long()
        real_word = torch.arange(labels.shape[1], device=labels.device) < (x.word_ids.long().max(1).values + 1)[:, None]
        if found.get("outside"):
            bad = ((labels >= len(config.label_names)) | ((labels < 0) & (labels != LABEL_PAD_VALUE))) & real_word
            row = _first_row(bad)
            raise ValueError(
                f"labels of batch item {row} must be tag ids 0..{len(config.label_names) - 1} (or {LABEL_PAD_VALUE} at "
                f"padding); got {labels[row][bad[row]].tolist()[:10]}"
            )
        bad = (labels == LABEL_PAD_VALUE) & real_word
        row = _first_row(bad)
        word = int(bad[row].nonzero()[0, 0])
        raise ValueError(
            f"the CRF needs a label for every word in the input, but batch item {row} word {word} has {LABEL_PAD_VALUE}"
        )
    if found.get("nonfinite"):
        objects = x.pixel_values if x.pixel_values is not None else x.object_features
        assert objects is not None
        name = "pixel_values" if x.pixel_values is not None else "object_features"
        bad = ~finite_objects(objects)
        if x.object_mask is not None:
            bad &= x.object_mask.bool()
        row = _first_row(bad)
        raise ValueError(
            f"{name} of batch item {row}, object {int(bad[row].nonzero()[0, 0])}, hold NaN or infinite values"
        )


class WeightsMismatchError(ValueError):
    """A saved model whose weights do not match its configuration, or whose labels disagree with each other."""


def _listed(names: Sequence[Any], limit: int = 8) -> str:
    shown = ", ".join(str(name) for name in list(names)[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")


def check_loaded_weights(info: Mapping[str, Any], source: str, saved_by_this_class: bool) -> None:
    """Raise `WeightsMismatchError` naming the tensors when loading ``source`` found mis-sized tensors, or, for a
    folder saved by the loading class itself (``saved_by_this_class``), tensors its config needs that the weights
    lack (they would be left random) or tensors the config has no place for (they would be dropped).

    ``info`` is transformers' loading report (``from_pretrained(..., output_loading_info=True)``)."""
    problems = []
    mismatched = sorted(info.get("mismatched_keys") or [])
    if mismatched:
        sizes = [f"{key} {tuple(saved)} saved, {tuple(expected)} expected" for key, saved, expected in mismatched]
        problems.append(f"tensors of another size than the config gives: {_listed(sizes)}")
    if saved_by_this_class:
        missing, unexpected = sorted(info.get("missing_keys") or []), sorted(info.get("unexpected_keys") or [])
        if missing:
            problems.append(f"tensors the config needs but the weights lack: {_listed(missing)}")
        if unexpected:
            problems.append(f"tensors the config has no place for: {_listed(unexpected)}")
    if problems:
        raise WeightsMismatchError(
            f"the weights of {source} do not match its config.json ({'; '.join(problems)}); was config.json "
            "edited, or copied from another model?"
        )


def check_label_maps(config: Any, source: str, label_names: Sequence[str] | None = None) -> list[str]:
    """The labels of ``config`` by id, after checking that ``id2label`` numbers them 0..n-1, that ``label2id`` is
    its inverse and, when given, that a processor's ``label_names`` are the same list; else
    `WeightsMismatchError` naming ``source`` and the disagreement."""
    id2label = {int(i): label for i, label in (config.id2label or {}).items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise WeightsMismatchError(f"{source}: id2label ids {sorted(id2label)} are not 0..{len(id2label) - 1}")
    labels = [id2label[i] for i in range(len(id2label))]
    label2id = {label: int(i) for label, i in (config.label2id or {}).items()}
    if label2id != {label: i for i, label in enumerate(labels)}:
        wrong = sorted(set(label2id.items()) ^ {(label, i) for i, label in enumerate(labels)})
        raise WeightsMismatchError(f"{source}: label2id disagrees with id2label at {_listed(wrong)}")
    if label_names is not None and list(label_names) != labels:
        raise WeightsMismatchError(
            f"{source}: the processor's label_names {list(label_names)} differ from the model's id2label {labels}"
        )
    return labels


__all__ = [
    "MODEL_INPUT_NAMES",
    "ModelInputs",
    "WeightsMismatchError",
    "check_inputs",
    "check_label_maps",
    "check_loaded_weights",
    "word_numbering_errors",
]
