"""Processor + collator + tiny UMGF model: padding a sample into a batch never changes its outputs."""

from __future__ import annotations

import torch
from PIL import Image

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.image_processing_umgf import UMGFImageProcessor
from modeling_umgf.processing_umgf import UMGFProcessor
from modeling_umgf.tools.tiny_models import TINY_IMAGE, tiny_config, tiny_processor, tiny_tokenizer

SAMPLES = [  # (words, labels, (phrase span, box) per object): different lengths and object counts
    (
        ["Photo", "of", "Helmut", "Kohl", "at", "the", "Brandenburg", "gate"],
        [0, 0, 1, 2, 0, 0, 3, 4],
        [((2, 4), [0, 0, 20, 30]), ((-1, -1), [10, 5, 40, 30]), ((5, 8), [2, 2, 12, 9])],
    ),
    (["Leonard", "wins"], [1, 0], [((0, 1), [5, 5, 25, 25])]),
    (["Berlin", "rocks", "!"], [3, 0, 0], []),
]


def grounding(objects) -> dict:
    return {
        "object_boxes": [box for _, box in objects],
        "object_scores": [1.0] * len(objects),
        "object_phrases": ["phrase"] * len(objects),
        "object_word_start": [start for (start, _), _ in objects],
        "object_word_end": [end for (_, end), _ in objects],
        "grounder": "detector",
    }


def test_collated_batches_give_each_sample_its_unbatched_outputs() -> None:
    torch.manual_seed(0)
    model = UMGFForTokenClassification(tiny_config()).eval()
    data_config = {
        "input_size": [3, TINY_IMAGE, TINY_IMAGE],
        "interpolation": "bilinear",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": [0.5] * 3,
        "std": [0.25] * 3,
    }
    processor = UMGFProcessor(
        UMGFImageProcessor("test_resnet", data_config=data_config), tiny_tokenizer(), grounder="precomputed"
    )
    noise = torch.Generator().manual_seed(1)
    image = Image.fromarray(torch.randint(0, 256, (30, 40, 3), generator=noise, dtype=torch.uint8).numpy())
    examples = [
        processor(images=image, words=words, labels=labels, grounding=grounding(objects))
        for words, labels, objects in SAMPLES
    ]
    with torch.no_grad():
        batch = processor.data_collator(pad_to_multiple_of=16)(examples)
        assert batch["input_ids"].shape == (3, 16) and batch["object_mask"].shape == (3, 3)
        together = model(**batch)
        losses = []
        for i, example in enumerate(examples):
            alone = model(**processor.data_collator()([example]))
            words = len(SAMPLES[i][0])
            torch.testing.assert_close(together.logits[i, :words], alone.logits[0], atol=1e-5, rtol=1e-5)
            assert together.predictions[i, :words].tolist() == alone.predictions[0].tolist()
            assert (together.predictions[i, words:] == -100).all()
            losses.append(alone.loss)
        torch.testing.assert_close(together.loss, torch.stack(losses).mean(), atol=1e-5, rtol=1e-5)  # mean over samples


def test_a_batch_may_mix_cached_features_and_samples_without_objects() -> None:
    """Rows with cached features next to rows with no objects (e.g. no image) process and collate as one batch."""
    processor = tiny_processor(grounder="precomputed")
    grounding = {
        "object_boxes": [[0.0, 0.0, 4.0, 4.0]],
        "object_scores": [0.9],
        "object_phrases": ["person"],
        "object_word_start": [-1],
        "object_word_end": [-1],
        "grounder": "precomputed",
    }
    features = torch.arange(6, dtype=torch.float32).reshape(1, 6)
    out = processor(
        words=[["a", "b"], ["c"]], grounding=[grounding, None], object_features=[features, []], return_tensors="pt"
    )
    assert out["object_features"].shape == (2, 1, 6)
    assert out["object_mask"].tolist() == [[1], [0]]
    assert torch.equal(out["object_features"][0, 0], features[0])
    assert not out["inter_modal_adjacency"][1].any()
