"""Bad input at every boundary gets one clear error naming what and where, never a crash deep inside torch, never a
silent wrong result (model inputs, processor words, grounder, saved folders)."""

from __future__ import annotations

import logging
import shutil

import hypothesis.extra.numpy as hnp
import hypothesis.strategies as st
import numpy as np
import pytest
import torch
from helpers import saved_tiny_ner_folder
from hypothesis import given, settings
from PIL import Image

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.input_checks import finite_objects
from modeling_umgf.model_free_grounding import GridGrounder
from modeling_umgf.tools.cli import main as predict_main
from modeling_umgf.tools.loading import load_saved
from modeling_umgf.tools.tiny_models import tiny_config, tiny_inputs


def build(**overrides) -> UMGFForTokenClassification:
    torch.manual_seed(0)
    return UMGFForTokenClassification(tiny_config(**overrides)).eval()


def test_labels_ids_positions_and_word_ids_are_checked() -> None:
    model, x = build(), tiny_inputs()
    labels = torch.tensor([[1, 2, 0, 3, 4], [5, 6, 0, 7, -100]])
    with pytest.raises(ValueError, match=r"labels must be integer tag ids, got torch\.float32"):
        model(**x, labels=labels.float())
    with pytest.raises(ValueError, match=r"labels of batch item 1 must be tag ids 0\.\.8 .*got \[9\]"):
        model(**x, labels=labels.masked_fill(labels == 7, 9))
    with pytest.raises(
        ValueError, match=r"input_ids of batch item 0 hold ids outside the vocabulary 0\.\.119: \[500\]"
    ):
        model(**{**x, "input_ids": x["input_ids"].masked_fill(torch.arange(8) == 3, 500)})
    with pytest.raises(ValueError, match=r"word_ids must have the shape of input_ids \[2, 8\], got \(1, 8\)"):
        model(**{**x, "word_ids": x["word_ids"][:1]})  # a tweet would silently be dropped
    with pytest.raises(ValueError, match=r"word_ids must have the shape of input_ids \[2, 8\], got \(2, 7\)"):
        model(**{**x, "word_ids": x["word_ids"][:, :7]})
    long = torch.randint(1, 100, (1, 65))
    with pytest.raises(ValueError, match="65 sub-tokens per sentence but the text encoder has 64 positions"):
        model(input_ids=long)
    with pytest.raises(ValueError, match="labels hold 3 words per sentence but the batch has 5 words"):
        model(**x, labels=labels[:, :3])


def test_non_finite_object_features_are_an_error_in_real_slots_and_ignored_in_padding() -> None:
    model, x = build(), tiny_inputs()
    features = model.umgf.encode_objects(x["pixel_values"], x["object_mask"]).detach()
    inputs = {k: v for k, v in x.items() if k != "pixel_values"}
    clean = model(**inputs, object_features=features).logits
    padded = features.clone()
    padded[1, 2] = float("nan")  # object 2 of item 1 is padding (object_mask 0)
    assert int(x["object_mask"][1, 2]) == 0
    torch.testing.assert_close(model(**inputs, object_features=padded).logits, clean)  # nothing leaks from padding
    for value in (float("nan"), float("inf"), -float("inf")):
        real = features.clone()
        real[0, 1, 5] = value
        with pytest.raises(ValueError, match="object_features of batch item 0, object 1, hold NaN or infinite values"):
            model(**inputs, object_features=real)
    pixels = x["pixel_values"].clone()
    pixels[1, 2] = float("nan")
    torch.testing.assert_close(model(**{**x, "pixel_values": pixels}).logits, model(**x).logits)


def test_a_string_of_words_is_refused(tmp_path_factory) -> None:
    from modeling_umgf.tools.tiny_models import tiny_processor

    with pytest.raises(ValueError, match="got the string 'Photo of Berlin': pass raw text as text="):
        tiny_processor()(words="Photo of Berlin")
    with pytest.raises(ValueError, match="text must be a string or a list of strings, got int"):
        tiny_processor()(text=123)


def test_the_grid_grounder_says_when_an_image_is_too_small_for_its_grid(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        found = GridGrounder(grid_size=3).ground([Image.new("RGB", (1, 5000))], [["a"]], ["tall"])[0]
    assert len(found) == 0 and "sample 'tall'" in caplog.text and "9 of 9 cells are under a pixel" in caplog.text


def test_damaged_model_folders_are_named(tmp_path, tmp_path_factory, capsys) -> None:
    saved = saved_tiny_ner_folder(tmp_path_factory)
    corrupt, truncated = tmp_path / "corrupt", tmp_path / "truncated"
    shutil.copytree(saved, corrupt)
    (corrupt / "processor_config.json").write_text("{not json")
    shutil.copytree(saved, truncated)
    weights = (truncated / "model.safetensors").read_bytes()
    (truncated / "model.safetensors").write_bytes(weights[: len(weights) // 2])
    with pytest.raises(ValueError, match=r"corrupt/processor_config.json:1:2: not valid JSON"):
        load_saved(corrupt)
    with pytest.raises(ValueError, match="its weights file is damaged"):
        load_saved(truncated)
    capsys.readouterr()
    for folder, message in (
        (corrupt, "processor_config.json:1:2: not valid JSON"),
        (truncated, "weights file is damaged"),
    ):
        assert predict_main(["--model", str(folder), "--text", "Berlin rocks"]) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and message in err


@given(
    values=hnp.arrays(
        np.float32,
        hnp.array_shapes(min_dims=3, max_dims=5, min_side=1, max_side=4),
        elements=st.floats(width=32, allow_nan=True, allow_infinity=True),
    )
)
@settings(max_examples=200, deadline=None)
def test_finite_objects_is_elementwise_isfinite(values: np.ndarray) -> None:
    objects = torch.from_numpy(values)
    expected = torch.isfinite(objects).flatten(2).all(-1)  # the direct definition
    assert torch.equal(finite_objects(objects), expected)
