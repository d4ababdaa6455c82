"""Grounders, noun phrases and grounding records, checked against independent computations (offline, CPU)."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from helpers import save_tiny_grounding_dino
from PIL import Image
from transformers import AutoModelForZeroShotObjectDetection, AutoProcessor
from transformers.models.grounding_dino.modeling_grounding_dino import MultiScaleDeformableAttention

from modeling_umgf.detector_grounding import (
    GatherDeformableAttention,
    ReleaseGrounder,
    ZeroShotDetectorGrounder,
    _load_detector,
)
from modeling_umgf.grounder_registry import build_grounder
from modeling_umgf.grounding import Grounding
from modeling_umgf.model_free_grounding import GridGrounder, PrecomputedGrounder
from modeling_umgf.noun_phrases import NounPhraseExtractor, Phrase
from modeling_umgf.tools.tiny_models import tiny_processor

KOHL = ["Photo", "of", "Helmut", "Kohl", "at", "the", "Brandenburg", "gate"]
LEONARD = ["Leonard", "wins"]


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> str:
    return str(save_tiny_grounding_dino(tmp_path_factory.mktemp("grounding-dino")))


def noise_image(width: int, height: int, seed: int) -> Image.Image:
    return Image.fromarray(np.random.RandomState(seed).randint(0, 256, (height, width, 3), dtype=np.uint8))


def test_noun_phrases_are_word_spans_of_the_input_from_spacy() -> None:
    phrases = NounPhraseExtractor()([KOHL, ["I", "love", "it"], LEONARD])
    assert phrases[0] == [Phrase("Photo", 0, 1), Phrase("Helmut Kohl", 2, 4), Phrase("the Brandenburg gate", 5, 8)]
    assert phrases[1] == []  # pronoun-headed chunks name nothing visible
    assert phrases[2] == [Phrase("Leonard", 0, 1)]
    assert NounPhraseExtractor(drop_pronouns=False)([["I", "love", "it"]])[0] == [Phrase("I", 0, 1), Phrase("it", 2, 3)]


def test_detector_caption_separates_queries_and_locates_them() -> None:
    caption, spans = ZeroShotDetectorGrounder._caption([Phrase("person", -1, -1), Phrase("U.S. Army", 0, 2)])
    assert caption == "person . u s army ."
    assert [caption[s:e] for s, e in spans] == ["person", "u s army"]


def test_detector_grounder_matches_a_by_hand_phrase_grounding(detector: str) -> None:
    """Each query's box is the detector query with the best score over the query's tokens, each image detected as
    it is alone (images of different sizes are not padded into one batch), with transformers' own model."""
    images = [noise_image(80, 50, 0), noise_image(40, 60, 1)]
    grounder = ZeroShotDetectorGrounder(
        detector, box_threshold=0.0, max_boxes_per_phrase=1, max_objects=100, device="cpu"
    )
    found = grounder.ground(images, [KOHL, LEONARD], ["kohl", "leonard"])

    general = [("person", -1, -1, [1]), ("location", -1, -1, [3]), ("organization", -1, -1, [5]), ("misc", -1, -1, [7])]
    # "person . location . organization . misc . photo . helmut kohl . the brandenburg gate ." token positions
    queries = [
        general + [("Photo", 0, 1, [9]), ("Helmut Kohl", 2, 4, [11, 12]), ("the Brandenburg gate", 5, 8, [14, 15, 16])],
        general + [("Leonard", 0, 1, [9])],
    ]
    captions = [
        "person . location . organization . misc . photo . helmut kohl . the brandenburg gate .",
        "person . location . organization . misc . leonard .",
    ]
    processor = AutoProcessor.from_pretrained(detector)
    model = AutoModelForZeroShotObjectDetection.from_pretrained(detector).eval()
    for b, (image, caption, sample_queries) in enumerate(zip(images, captions, queries)):
        with torch.no_grad():
            outputs = model(**processor(images=[image], text=[caption], return_tensors="pt"))
        width, height = image.size
        expected = []
        for text, start, end, positions in sample_queries:
            scores = [max(torch.sigmoid(outputs.logits[0, q, t]).item() for t in positions) for q in range(12)]
            best = int(np.argmax(scores))
            cx, cy, w, h = outputs.pred_boxes[0, best].tolist()
            box = [
                min(max((cx - w / 2) * width, 0), width),
                min(max((cy - h / 2) * height, 0), height),
                min(max((cx + w / 2) * width, 0), width),
                min(max((cy + h / 2) * height, 0), height),
            ]
            if box[2] - box[0] >= 1 and box[3] - box[1] >= 1:
                expected.append((scores[best], text, start, end, box))
        expected.sort(key=lambda item: -item[0])
        grounding = found[b]
        assert grounding.grounder == "detector"
        assert grounding.phrases == [text for _, text, _, _, _ in expected]
        assert grounding.word_starts == [start for _, _, start, _, _ in expected]
        assert grounding.word_ends == [end for _, _, _, end, _ in expected]
        np.testing.assert_allclose(grounding.scores, [score for score, *_ in expected], rtol=1e-5)
        np.testing.assert_allclose(grounding.boxes, [box for *_, box in expected], rtol=1e-4, atol=1e-3)


@pytest.mark.assumes("transformers", "5.24-5.25", "MultiScaleDeformableAttention's call signature and sampling")
def test_gather_deformable_attention_equals_transformers_kernel() -> None:
    """Samples inside, on the border of and outside the maps (zero padding), maps one cell wide, two images."""
    g = torch.Generator().manual_seed(0)
    shapes = [(5, 7), (3, 4), (1, 1), (2, 1)]
    batch, heads, dim, queries, points = 2, 2, 4, 6, 3
    value = torch.randn(batch, sum(h * w for h, w in shapes), heads, dim, generator=g)
    spatial_shapes = torch.tensor(shapes)
    level_start = torch.tensor([0] + [h * w for h, w in shapes]).cumsum(0)[:-1]
    locations = torch.rand(batch, queries, heads, len(shapes), points, 2, generator=g) * 1.6 - 0.3
    locations[0, 0, 0, 0, 0] = torch.tensor([0.0, 1.0])  # the maps' corners
    weights = torch.rand(batch, queries, heads, len(shapes), points, generator=g)
    args = (value, spatial_shapes, shapes, level_start, locations, weights, 64)
    expected = MultiScaleDeformableAttention()(*args)
    torch.testing.assert_close(GatherDeformableAttention()(*args), expected, rtol=1e-5, atol=1e-6)


def set_deformable_attention(model: torch.nn.Module, kind: type[torch.nn.Module]) -> None:
    for module in list(model.modules()):
        for name, child in module.named_children():
            if isinstance(child, (GatherDeformableAttention, MultiScaleDeformableAttention)):
                setattr(module, name, kind())


@pytest.mark.assumes(
    "transformers", "5.24-5.25", "Grounding DINO's module layout (its deformable attention replaced by ours)"
)
def test_detector_finds_the_boxes_of_the_plain_way_batched_and_with_the_gather_kernel(detector: str) -> None:
    """The plain way: transformers' deformable attention, one image per forward pass. The grounder on CPU: the gather
    kernel, same-size images batched together (different sizes are never padded into one batch)."""
    images = [noise_image(80, 50, 0), noise_image(40, 60, 1), noise_image(80, 50, 2), noise_image(80, 50, 3)]
    sentences, ids = [KOHL, LEONARD, LEONARD, KOHL], ["a", "b", "c", "d"]
    _, model = _load_detector(detector, "cpu")
    assert sum(isinstance(m, GatherDeformableAttention) for m in model.modules()) == 3  # 1 encoder + 2 decoder layers
    kwargs = {"box_threshold": 0.0, "max_objects": 100, "device": "cpu"}
    batched = ZeroShotDetectorGrounder(detector, batch_size=3, **kwargs).ground(images, sentences, ids)
    try:
        set_deformable_attention(model, MultiScaleDeformableAttention)
        plain = ZeroShotDetectorGrounder(detector, batch_size=1, **kwargs).ground(images, sentences, ids)
    finally:
        set_deformable_attention(model, GatherDeformableAttention)
    for fast, reference in zip(batched, plain):
        assert fast.phrases == reference.phrases and len(fast) > 4
        np.testing.assert_allclose(fast.scores, reference.scores, rtol=1e-5)
        np.testing.assert_allclose(fast.boxes, reference.boxes, rtol=1e-5, atol=1e-4)


def test_detector_runs_one_image_per_pass_on_cpu_unless_told(detector: str) -> None:
    assert ZeroShotDetectorGrounder(detector, device="cpu").images_per_pass == 1
    assert ZeroShotDetectorGrounder(detector, device="cuda").images_per_pass == 8
    assert ZeroShotDetectorGrounder(detector, batch_size=4, device="cpu").images_per_pass == 4


def test_detector_image_size_sets_the_detector_input(detector: str) -> None:
    grounder = ZeroShotDetectorGrounder(detector, image_size=16, device="cpu")
    assert grounder.config()["image_size"] == 16
    _, model = _load_detector(detector, "cpu")
    seen = []
    hook = model.register_forward_pre_hook(
        lambda module, args, kwargs: seen.append(kwargs["pixel_values"].shape), with_kwargs=True
    )
    try:
        grounding = grounder.ground([noise_image(80, 50, 0)], [KOHL], ["a"])[0]
    finally:
        hook.remove()
    assert seen == [(1, 3, 16, 25)]  # shortest side 16, longest 80 * 16 / 50 = 25.6 (under the cap of 2 x 16)
    assert all(0 <= x0 < x1 <= 80 and 0 <= y0 < y1 <= 50 for x0, y0, x1, y1 in grounding.boxes)


def test_detector_thresholds_caps_and_downscaling(detector: str) -> None:
    big = noise_image(60, 40, 2).resize((6000, 4000), Image.NEAREST)
    small = big.copy()
    small.thumbnail((60, 60))
    grounder = ZeroShotDetectorGrounder(detector, box_threshold=0.0, max_objects=3, max_image_side=60, device="cpu")
    on_big, on_small = grounder.ground([big, small], [KOHL, KOHL], ["big", "small"])
    assert len(on_small) == 3  # capped
    # The 6000x4000 image is shrunk to 60x40 before detection (the same pixels), boxes scaled back up.
    np.testing.assert_allclose(np.array(on_big.boxes), np.array(on_small.boxes) * 100, rtol=1e-4)
    nothing = ZeroShotDetectorGrounder(detector, box_threshold=1.01, device="cpu").ground([small], [KOHL], ["x"])
    assert len(nothing[0]) == 0


def test_release_grounder_keeps_the_top_box_of_each_general_word(detector: str) -> None:
    grounding = ReleaseGrounder(detector, device="cpu").ground([noise_image(64, 64, 3)], [KOHL], ["r"])[0]
    assert sorted(grounding.phrases) == ["location", "misc", "organization", "person"]
    assert grounding.word_starts == grounding.word_ends == [-1] * 4
    assert grounding.grounder == "release"


def test_processor_runs_the_detector_end_to_end_and_survives_no_detection(detector: str) -> None:
    kwargs = {"detector": detector, "box_threshold": 0.0, "max_objects": 5, "device": "cpu"}
    processor = tiny_processor("detector", kwargs)
    batch = processor(
        images=[noise_image(80, 50, 0), None], words=[KOHL, LEONARD], return_tensors="pt", return_metadata=True
    )
    count = len(batch["object_boxes"][0])
    assert count == 5 and batch["object_boxes"][1] == []
    assert batch["pixel_values"].shape == (2, 5, 3, 8, 8)
    assert batch["object_mask"].tolist() == [[1] * 5, [0] * 5]
    empty = tiny_processor("detector", {**kwargs, "box_threshold": 1.01})(
        images=noise_image(30, 30, 0), words=KOHL, return_tensors="pt"
    )
    assert empty["pixel_values"].shape == (1, 0, 3, 8, 8) and empty["inter_modal_adjacency"].shape[-1] == 0


def test_grid_grounder_splits_the_image_into_equal_cells() -> None:
    grounding = GridGrounder(grid_size=3).ground([Image.new("RGB", (30, 20))], [KOHL], ["g"])[0]
    xs, ys = np.linspace(0, 30, 4), np.linspace(0, 20, 4)
    expected = [[xs[c], ys[r], xs[c + 1], ys[r + 1]] for r in range(3) for c in range(3)]
    np.testing.assert_allclose(grounding.boxes, expected)
    assert grounding.word_starts == grounding.word_ends == [-1] * 9
    # A 1x1 image: one cell covers the pixel, the other cells are under a pixel wide and dropped.
    assert GridGrounder(grid_size=2).ground([Image.new("RGB", (1, 1))], [KOHL], ["tiny"])[0].boxes == []
    assert GridGrounder(grid_size=1).ground([Image.new("RGB", (1, 1))], [KOHL], ["tiny"])[0].boxes == [[0, 0, 1, 1]]


def test_precomputed_grounder_warns_and_finds_nothing(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        found = build_grounder("precomputed").ground([Image.new("RGB", (4, 4))], [KOHL], ["tweet-7"])
    assert len(found[0]) == 0 and "tweet-7" in caplog.text
    assert isinstance(build_grounder("grid", grid_size=2), GridGrounder)
    assert isinstance(build_grounder("precomputed"), PrecomputedGrounder)
    with pytest.raises(ValueError, match="unknown grounder"):
        build_grounder("yolo")


def test_grounding_columns_round_trip_clip_and_validate() -> None:
    columns = {
        "object_boxes": [[-5, -5, 10, 10], [5, 5, 5.5, 20], [0, 0, 100, 100], [math.nan, 0, 1, 1]],
        "object_scores": [0.9, 0.8, 0.7, 0.6],
        "object_phrases": ["Helmut Kohl", "gate", "person", "bad"],
        "object_word_start": [2, 7, -1, 0],
        "object_word_end": [4, 8, -1, 1],
        "grounder": "detector",
    }
    grounding = Grounding.from_columns(columns)
    round_trip = grounding.to_columns()
    np.testing.assert_array_equal(round_trip.pop("object_boxes"), np.array(columns["object_boxes"], dtype=float))
    assert round_trip == {key: value for key, value in columns.items() if key != "object_boxes"}
    clipped = grounding.clipped(20, 10)
    assert clipped.boxes == [[0, 0, 10, 10], [0, 0, 20, 10]]
    assert clipped.phrases == ["Helmut Kohl", "person"] and clipped.scores == [0.9, 0.7]
    assert clipped.word_starts == [2, -1] and clipped.word_ends == [4, -1]
    with pytest.raises(ValueError, match="differ in length"):
        Grounding.from_columns({**columns, "object_scores": [0.9]}, sample="s1")
    with pytest.raises(ValueError, match="outside the sentence"):
        grounding.check_spans(num_words=3, sample="s1")


@pytest.mark.parametrize(
    "change, message",
    [
        ({"object_boxes": [[0, 0, "a", 4]]}, r"sample 's7': object_boxes of object 0 must be numbers, got 'a'"),
        ({"object_boxes": [5]}, r"sample 's7': object boxes \[0\] are not \[x0, y0, x1, y1\]"),
        ({"object_scores": ["high"]}, r"sample 's7': object_scores of object 0 must be numbers, got 'high'"),
        ({"object_scores": [None]}, r"object_scores of object 0 must be numbers, got None"),
        ({"object_word_start": [1.7], "object_word_end": [3.2]}, r"object_word_start of object 0 must be a whole word"),
        ({"object_word_end": [True]}, r"object_word_end of object 0 must be numbers, got True"),
    ],
)
def test_grounding_values_of_the_wrong_kind_name_the_sample(change, message) -> None:
    columns = {
        "object_boxes": [[0, 0, 4, 4]],
        "object_scores": [0.5],
        "object_phrases": ["x"],
        "object_word_start": [1],
        "object_word_end": [3],
        "grounder": "detector",
    }
    assert Grounding.from_columns({**columns, "object_word_start": [1.0]}).word_starts == [1]  # whole floats are fine
    with pytest.raises(ValueError, match=message):
        Grounding.from_columns({**columns, **change}, sample="s7")
