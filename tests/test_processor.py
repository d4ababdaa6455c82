"""UMGFProcessor and UMGFDataCollator: exact tensors on hand-made sentences, graphs and images (offline, CPU)."""

from __future__ import annotations

import io
import json
import logging
import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_without_package
from PIL import Image

from modeling_umgf.grounder_registry import build_grounder
from modeling_umgf.tools.tiny_models import VOCAB, tiny_processor, tiny_tokenizer

KOHL = ["Photo", "of", "Helmut", "Kohl", "at", "the", "Brandenburg", "gate"]
KOHL_TAGS = ["O", "O", "B-PER", "I-PER", "O", "O", "B-LOC", "I-LOC"]
IDS = {token: i for i, token in enumerate(VOCAB)}
QUADRANTS = {(0, 0): (255, 0, 0), (1, 0): (0, 255, 0), (0, 1): (0, 0, 255), (1, 1): (255, 255, 255)}


def quadrant_image() -> Image.Image:
    """40x20 image: red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", (40, 20))
    for (col, row), colour in QUADRANTS.items():
        image.paste(colour, (col * 20, row * 10, col * 20 + 20, row * 10 + 10))
    return image


KOHL_GROUNDING = {  # objects: Helmut Kohl (red quadrant), person (green), the Brandenburg gate (blue)
    "object_boxes": [[0, 0, 20, 10], [20, 0, 40, 10], [0, 10, 20, 20]],
    "object_scores": [0.9, 0.8, 0.7],
    "object_phrases": ["Helmut Kohl", "person", "the Brandenburg gate"],
    "object_word_start": [2, -1, 5],
    "object_word_end": [4, -1, 8],
    "grounder": "detector",
}


def ids(*tokens: str) -> list[int]:
    return [IDS[token] for token in tokens]


def test_graph_edges_follow_the_paper_and_sub_tokens_inherit() -> None:
    out = tiny_processor()(images=quadrant_image(), words=KOHL, grounding=KOHL_GROUNDING, return_tensors="pt")
    assert out["input_ids"].tolist() == [
        ids("[CLS]", "Photo", "of", "Helmut", "Ko", "##hl", "at", "the", "Brandenburg", "gate", "[SEP]")
    ]
    assert out["word_ids"].tolist() == [[-1, 0, 1, 2, 3, 3, 4, 5, 6, 7, -1]]
    # columns: Helmut Kohl, person (general word: every word), the Brandenburg gate
    expected = [
        [0, 0, 0],  # [CLS]
        [0, 1, 0],  # Photo
        [0, 1, 0],  # of
        [1, 1, 0],  # Helmut
        [1, 1, 0],  # Ko
        [1, 1, 0],  # ##hl (inherits Kohl's edges)
        [0, 1, 0],  # at
        [0, 1, 1],  # the
        [0, 1, 1],  # Brandenburg
        [0, 1, 1],  # gate
        [0, 0, 0],  # [SEP]
    ]
    assert out["inter_modal_adjacency"].int().tolist() == [expected]
    assert out["object_mask"].tolist() == [[1, 1, 1]]
    assert set(out) == {
        "input_ids",
        "attention_mask",
        "token_type_ids",
        "word_ids",
        "pixel_values",
        "object_mask",
        "inter_modal_adjacency",
    }


def test_crops_are_the_boxes_through_the_backbone_transform() -> None:
    out = tiny_processor()(images=quadrant_image(), words=KOHL, grounding=KOHL_GROUNDING, return_tensors="pt")
    assert out["pixel_values"].shape == (1, 3, 3, 8, 8)
    for j, colour in enumerate([QUADRANTS[(0, 0)], QUADRANTS[(1, 0)], QUADRANTS[(0, 1)]]):
        expected = (torch.tensor(colour, dtype=torch.float32) / 255 - 0.5) / 0.5  # mean 0.5, std 0.5
        torch.testing.assert_close(out["pixel_values"][0, j], expected[:, None, None].expand(3, 8, 8))


def test_labels_align_to_words_and_truncation_is_reported(caplog) -> None:
    processor = tiny_processor(max_length=8)
    with caplog.at_level(logging.WARNING):
        out = processor(
            words=KOHL,
            labels=KOHL_TAGS,
            grounding=KOHL_GROUNDING,
            images=quadrant_image(),
            sample_ids="tweet-1",
            return_tensors="pt",
            return_metadata=True,
        )
    assert out["input_ids"].tolist() == [ids("[CLS]", "Photo", "of", "Helmut", "Ko", "##hl", "at", "[SEP]")]
    assert out["word_ids"].tolist() == [[-1, 0, 1, 2, 3, 3, 4, -1]]
    assert out["labels"].tolist() == [[0, 0, 1, 2, 0]]  # the 3 cut words get no loss
    assert out["truncated_words"] == [3] and out["num_words"] == [8]
    assert [r.getMessage() for r in caplog.records] == [
        "1 sample(s) exceed max_length=8 sub-tokens; their last words get no loss and are tagged O: 'tweet-1' (3 words)"
    ]
    # the Brandenburg gate's words are cut: its object keeps no edge; Helmut Kohl's and person's stay.
    assert out["inter_modal_adjacency"][0].int().tolist() == [
        [0, 0, 0],
        [0, 1, 0],
        [0, 1, 0],
        [1, 1, 0],
        [1, 1, 0],
        [1, 1, 0],
        [0, 1, 0],
        [0, 0, 0],
    ]
    # A word cut in the middle keeps its first sub-token, so it stays (and keeps its label).
    cut = tiny_processor(max_length=6)(words=KOHL, labels=KOHL_TAGS, return_tensors="pt", return_metadata=True)
    assert cut["word_ids"].tolist() == [[-1, 0, 1, 2, 3, -1]] and cut["labels"].tolist() == [[0, 0, 1, 2]]
    assert cut["truncated_words"] == [4]
    assert processor.decode_word_predictions(torch.tensor([[0, 0, 1, 2, 0]]), [8]) == [
        ["O", "O", "B-PER", "I-PER", "O", "O", "O", "O"]
    ]


def test_default_max_length_is_128_and_label_ids_or_names() -> None:
    processor = tiny_processor()
    assert processor.max_length == 128
    long = processor(words=["gate"] * 200, return_tensors="pt", return_metadata=True)
    assert long["input_ids"].shape == (1, 128) and long["truncated_words"] == [74]
    by_name = processor(words=KOHL, labels=KOHL_TAGS, return_tensors="pt")["labels"]
    by_id = processor(words=KOHL, labels=[0, 0, 1, 2, 0, 0, 3, 4], return_tensors="pt")["labels"]
    assert by_name.tolist() == by_id.tolist() == [[0, 0, 1, 2, 0, 0, 3, 4]]


def test_raw_text_equals_its_words_and_single_equals_batch() -> None:
    processor = tiny_processor()
    from_text = processor(
        text="Photo of Helmut Kohl, at the Brandenburg gate!", return_tensors="pt", return_metadata=True
    )
    words = ["Photo", "of", "Helmut", "Kohl", ",", "at", "the", "Brandenburg", "gate", "!"]
    assert from_text["words"] == [words]
    from_words = processor(words=words, return_tensors="pt")
    assert from_text["input_ids"].tolist() == from_words["input_ids"].tolist()
    batch = processor(words=[KOHL, ["Berlin", "rocks"]], return_tensors="pt")
    single = processor(words=["Berlin", "rocks"], return_tensors="pt")
    assert batch["input_ids"][1, :4].tolist() == single["input_ids"][0].tolist()
    unpadded = processor(words=["Berlin", "rocks"])
    assert unpadded["input_ids"] == ids("[CLS]", "Berlin", "rocks", "[SEP]") and unpadded["word_ids"] == [-1, 0, 1, -1]


def test_words_without_sub_tokens_become_unknown_not_lost() -> None:
    out = tiny_processor()(words=["Photo", "\u200b", "", "gate"], labels=[0, 0, 0, 3], return_tensors="pt")
    assert out["input_ids"].tolist() == [ids("[CLS]", "Photo", "[UNK]", "[UNK]", "gate", "[SEP]")]
    assert out["word_ids"].tolist() == [[-1, 0, 1, 2, 3, -1]] and out["labels"].tolist() == [[0, 0, 0, 3]]


def test_bad_text_and_labels_give_clear_errors() -> None:
    processor = tiny_processor()
    for bad in ({"text": ""}, {"text": "   "}, {"words": []}, {"words": [KOHL, []], "sample_ids": ["a", "b"]}):
        with pytest.raises(ValueError, match="empty text"):
            processor(**bad)
    with pytest.raises(ValueError, match="'s9': 2 labels for 8 words"):
        processor(words=KOHL, labels=[0, 0], sample_ids="s9")
    with pytest.raises(ValueError, match="unknown label 'B-FOO'"):
        processor(words=["gate"], labels=["B-FOO"])
    with pytest.raises(ValueError, match="exactly one of"):
        processor(text="a", words=["a"])
    with pytest.raises(ValueError, match="2 entries for 1 samples"):
        processor(words=[KOHL], images=[None, None])


def test_missing_or_unreadable_images_give_text_only_inputs_with_a_warning(caplog, tmp_path: Path) -> None:
    processor = tiny_processor()
    with caplog.at_level(logging.WARNING):
        out = processor(
            images=[str(tmp_path / "gone.jpg"), b"not an image", None, quadrant_image()],
            words=[KOHL, KOHL, KOHL, KOHL],
            grounding=[KOHL_GROUNDING, None, KOHL_GROUNDING, None],
            sample_ids=["missing", "corrupt", "no-image", "fine"],
            return_tensors="pt",
            return_metadata=True,
        )
    assert "'missing': image file not found" in caplog.text and "'corrupt': cannot decode image" in caplog.text
    assert "sample 'no-image': 3 grounded objects but no image to crop them from; using it text-only" in [
        r.getMessage() for r in caplog.records
    ]
    assert out["object_mask"].tolist() == [[0] * 9, [0] * 9, [0] * 9, [1] * 9]  # "fine" gets the 3x3 grid
    assert not out["inter_modal_adjacency"][:3].any()


def test_boxes_are_clipped_and_degenerate_boxes_dropped() -> None:
    grounding = {**KOHL_GROUNDING, "object_boxes": [[-10, -10, 20, 10], [30, 5, 30.5, 9], [35, 15, 400, 400]]}
    out = tiny_processor()(
        images=quadrant_image(), words=KOHL, grounding=grounding, return_tensors="pt", return_metadata=True
    )
    assert out["object_boxes"] == [[[0, 0, 20, 10], [35, 15, 40, 20]]]
    assert out["object_phrases"] == [["Helmut Kohl", "the Brandenburg gate"]]
    assert out["inter_modal_adjacency"][0, 7:10].int().tolist() == [[0, 1]] * 3


def test_tiny_and_huge_images_work() -> None:
    processor = tiny_processor(grounder_kwargs={"grid_size": 1})
    tiny = processor(images=Image.new("RGB", (1, 1), (255, 0, 0)), words=KOHL, return_tensors="pt")
    torch.testing.assert_close(tiny["pixel_values"][0, 0, 0], torch.ones(8, 8))
    # exactly the pixel budget (image_utils.MAX_IMAGE_PIXELS): accepted
    huge = processor(images=Image.new("RGB", (8000, 5000), (0, 0, 255)), words=KOHL, return_tensors="pt")
    torch.testing.assert_close(huge["pixel_values"][0, 0, 2], torch.ones(8, 8))


def test_collator_pads_tokens_words_and_objects_dynamically() -> None:
    processor = tiny_processor()
    examples = [
        processor(words=["Berlin", "rocks"], labels=[3, 0]),
        processor(
            images=quadrant_image(),
            words=KOHL[:4],
            labels=KOHL_TAGS[:4],
            grounding={column: values[:2] for column, values in KOHL_GROUNDING.items() if column != "grounder"}
            | {"grounder": "detector"},
        ),
    ]
    batch = processor.data_collator()(examples)
    assert batch["input_ids"].tolist() == [
        ids("[CLS]", "Berlin", "rocks", "[SEP]", "[PAD]", "[PAD]", "[PAD]"),
        ids("[CLS]", "Photo", "of", "Helmut", "Ko", "##hl", "[SEP]"),
    ]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 1, 0, 0, 0], [1] * 7]
    assert batch["word_ids"].tolist() == [[-1, 0, 1, -1, -1, -1, -1], [-1, 0, 1, 2, 3, 3, -1]]
    assert batch["labels"].tolist() == [[3, 0, -100, -100], [0, 0, 1, 2]]
    assert batch["object_mask"].tolist() == [[0, 0], [1, 1]]
    assert batch["pixel_values"].shape == (2, 2, 3, 8, 8) and not batch["pixel_values"][0].any()
    assert batch["inter_modal_adjacency"].int().tolist() == [
        [[0, 0]] * 7,
        [[0, 0], [0, 1], [0, 1], [1, 1], [1, 1], [1, 1], [0, 0]],
    ]
    assert "words" not in batch
    wide = processor.data_collator(return_metadata=True, pad_to_multiple_of=16)(examples)
    assert wide["input_ids"].shape == (2, 16) and wide["inter_modal_adjacency"].shape == (2, 16, 2)
    assert wide["words"] == [["Berlin", "rocks"], KOHL[:4]] and wide["sample_id"] == ["0", "0"]
    text_only = processor.data_collator()([examples[0], examples[0]])
    assert text_only["pixel_values"].shape == (2, 0, 3, 8, 8) and text_only["inter_modal_adjacency"].shape == (2, 4, 0)


def test_cached_object_features_replace_crops() -> None:
    processor = tiny_processor()
    features = torch.arange(12.0).reshape(3, 4)
    example = processor(words=KOHL, grounding=KOHL_GROUNDING, object_features=features)
    batch = processor.data_collator()([example, processor(words=["gate"])])
    assert "pixel_values" not in batch
    torch.testing.assert_close(batch["object_features"], torch.stack([features, torch.zeros(3, 4)]))
    assert batch["object_mask"].tolist() == [[1, 1, 1], [0, 0, 0]]
    with pytest.raises(ValueError, match="2 object features for 3 grounded objects"):
        processor(words=KOHL, grounding=KOHL_GROUNDING, object_features=features[:2])


def test_dataset_transform_reads_the_contract_columns() -> None:
    from datasets import Dataset

    processor = tiny_processor()
    ungrounded = {column: [] for column in KOHL_GROUNDING} | {"grounder": ""}
    columns = {
        "id": ["t1", "t2"],
        "tokens": [KOHL, ["Berlin", "rocks"]],
        "ner_tags": [[0, 0, 1, 2, 0, 0, 3, 4], [3, 0]],
        **{column: [KOHL_GROUNDING[column], ungrounded[column]] for column in KOHL_GROUNDING},
    }
    transformed = processor.process_examples({**columns, "image": [quadrant_image(), quadrant_image()]})
    assert transformed["object_phrases"][0] == KOHL_GROUNDING["object_phrases"]
    assert len(transformed["object_phrases"][1]) == 9  # not grounded yet: the configured grid grounder ran
    dataset = Dataset.from_dict(columns).with_transform(processor.process_examples)
    batch = processor.data_collator(return_metadata=True)([dataset[0], dataset[1]])
    assert batch["sample_id"] == ["t1", "t2"] and batch["labels"].tolist() == [
        [0, 0, 1, 2, 0, 0, 3, 4],
        [3, 0] + [-100] * 6,
    ]
    assert batch["object_mask"].shape == (2, 0)  # no image column: the grounded boxes can't be cropped


def test_save_and_load_in_a_process_where_the_package_is_not_importable(tmp_path: Path) -> None:
    processor = tiny_processor(grounder_kwargs={"grid_size": 2}, max_length=12)
    processor.save_pretrained(tmp_path / "saved")
    config = json.loads((tmp_path / "saved" / "processor_config.json").read_text())
    assert config["auto_map"]["AutoProcessor"] == "processing_umgf.UMGFProcessor"
    quadrant_image().save(tmp_path / "image.png")
    expected = processor(images=quadrant_image(), words=KOHL, labels=KOHL_TAGS, return_tensors="pt")
    script = textwrap.dedent(
        f"""
        import torch
        from transformers import AutoProcessor
        processor = AutoProcessor.from_pretrained({str(tmp_path / "saved")!r}, trust_remote_code=True)
        assert type(processor).__module__.startswith("transformers_modules"), type(processor).__module__
        assert (processor.grounder, processor.grounder_kwargs, processor.max_length) == ("grid", {{"grid_size": 2}}, 12)
        out = processor(images={str(tmp_path / "image.png")!r}, words={KOHL!r}, labels={KOHL_TAGS!r}, return_tensors="pt")
        torch.save(dict(out), {str(tmp_path / "out.pt")!r})
        """
    )
    done = run_without_package(script, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = torch.load(tmp_path / "out.pt")
    assert set(loaded) == set(expected)
    for key in expected:
        torch.testing.assert_close(loaded[key], expected[key])


def test_every_argument_and_value_is_named_in_its_error() -> None:
    processor = tiny_processor()
    for name in ("sample_ids", "labels", "images", "object_features", "grounding"):
        with pytest.raises(ValueError, match=f"^{name} has 3 entries for 2 samples$"):
            processor(words=[KOHL, KOHL], **{name: [None, None, None]})
    with pytest.raises(
        ValueError, match=r"^give exactly one of `text` \(raw text\) and `words` \(pre-tokenised words\)$"
    ):
        processor(words=KOHL, text="Photo")
    with pytest.raises(ValueError, match="return_tensors must be None or 'pt', got 'np'"):
        processor(words=KOHL, return_tensors="np")
    with pytest.raises(ValueError, match=r"sample 'x': words \[1, 3\] are not strings"):
        processor(words=["a", 1, "b", None], sample_ids="x")
    for text, kind in ((123, "int"), (["Photo", 3], "list")):
        with pytest.raises(ValueError, match=f"text must be a string or a list of strings, got {kind}$"):
            processor(text=text)
    long = "Photo of " * 20
    with pytest.raises(ValueError, match=re.escape(f"got the string {long[:80]!r}: pass raw text as text=...")):
        processor(words=long)
    with pytest.raises(ValueError, match=r"words must be a list of words \(or of lists of words\), got int$"):
        processor(words=5)
    for label, message in (
        (1.0, "label 1.0 is neither"),
        (True, "label True is neither"),
        (9, r"label id 9 outside 0\.\.8$"),
        (-1, r"label id -1 outside 0\.\.8$"),
    ):
        with pytest.raises(ValueError, match=f"^sample 's2': {message}"):
            processor(words=["gate"], labels=[label], sample_ids="s2")
    bad_columns = {k: v for k, v in KOHL_GROUNDING.items() if k != "object_scores"}
    with pytest.raises(ValueError, match=r"^sample 's3': grounding lacks the columns \['object_scores'\]$"):
        processor(words=KOHL, grounding=bad_columns, sample_ids="s3")
    with pytest.raises(ValueError, match=r"^sample 's4': object 2 \('the Brandenburg gate'\) has word span \[5, 8\)"):
        processor(words=KOHL[:6], grounding=KOHL_GROUNDING, sample_ids="s4")


def test_the_grounder_setting() -> None:
    """Default: the paper's detector (built only when used); a Grounder object is used as is; a grounder given for one
    call replaces the processor's for that call only."""
    from modeling_umgf.model_free_grounding import GridGrounder

    processor = tiny_processor()
    default = type(processor)(processor.image_processor, processor.tokenizer)
    assert (default.grounder, default.grounder_kwargs, default._grounder_instance) == ("detector", {}, None)
    grid = GridGrounder(grid_size=2)
    default.set_grounder(grid)
    assert (default.grounder, default.grounder_kwargs, default.visual_grounder) == ("grid", {"grid_size": 2}, grid)
    with pytest.raises(
        ValueError, match=r"^give grounder keyword arguments with a grounder name, not with a Grounder$"
    ):
        default.set_grounder(grid, grid_size=3)
    with pytest.raises(ValueError, match=r"^unknown grounder 'nope'; choose one of \['detector', 'grid', "):
        default.set_grounder("nope")
    image = quadrant_image()
    assert processor(images=image, words=KOHL, return_tensors="pt")["object_mask"].shape == (1, 9)  # the 3 x 3 grid
    for grounder in ("precomputed", build_grounder("precomputed")):  # grounds nothing: the sample is text-only
        assert processor(images=image, words=KOHL, grounder=grounder, return_tensors="pt")["object_mask"].shape == (
            1,
            0,
        )
    assert default(images=image, words=KOHL, return_tensors="pt")["object_mask"].shape == (1, 4)


def test_processor_keyword_arguments_reach_transformers(tmp_path: Path) -> None:
    processor = tiny_processor()
    with_template = type(processor)(processor.image_processor, processor.tokenizer, chat_template="{{ words }}")
    assert with_template.chat_template == "{{ words }}"
    processor.save_pretrained(tmp_path)
    assert type(processor).from_pretrained(tmp_path, model_max_length=20).effective_max_length == 20


def test_a_tokenizer_that_is_not_fast_is_refused() -> None:
    from transformers import BertTokenizer

    class Slow(BertTokenizer):
        is_fast = False

    image_processor = tiny_processor().image_processor
    with pytest.raises(ValueError, match=r"^UMGFProcessor needs a fast tokenizer \(word_ids\), got Slow$"):
        type(tiny_processor())(image_processor, Slow(vocab=IDS))


def test_raw_text_batches_and_words_at_the_edges(caplog) -> None:
    """A list of raw texts is a batch like the list of their words; a word that makes no sub-token becomes [UNK]
    also at the end of the sentence; a tokenizer without an unknown token cuts long sentences but refuses such words."""
    processor = tiny_processor(max_length=6)
    texts = ["Photo of Helmut Kohl, at the Brandenburg gate", "Berlin rocks"]
    with caplog.at_level(logging.WARNING):
        processor(words=[KOHL, ["Berlin", "rocks"], KOHL], sample_ids=["a", "b", "c"])
    assert (
        "2 sample(s) exceed max_length=6 sub-tokens; their last words get no loss and are tagged O: 'a' (4 words), 'c' (4 words)"
        in caplog.text
    )
    from_text = processor(text=texts, return_tensors="pt", return_metadata=True)
    from_words = processor(words=[processor.split_words(t) for t in texts], return_tensors="pt", return_metadata=True)
    assert from_text["words"] == from_words["words"] == [KOHL[:4] + [","] + KOHL[4:], ["Berlin", "rocks"]]
    assert from_text["input_ids"].tolist() == from_words["input_ids"].tolist()
    assert from_text["truncated_words"] == [5, 0]
    unpadded = processor(text=texts)  # lists, one entry per text; a single text gives one example
    assert unpadded["words"] == from_text["words"] and unpadded["input_ids"][1] == ids(
        "[CLS]", "Berlin", "rocks", "[SEP]"
    )
    assert processor(text=texts[1])["input_ids"] == ids("[CLS]", "Berlin", "rocks", "[SEP]")
    out = processor(words=["Photo", "gate", ""], labels=[0, 3, 0], return_tensors="pt")
    assert out["input_ids"].tolist() == [ids("[CLS]", "Photo", "gate", "[UNK]", "[SEP]")]
    assert out["word_ids"].tolist() == [[-1, 0, 1, 2, -1]] and out["labels"].tolist() == [[0, 3, 0]]
    # the word before the last kept one makes no sub-token: [UNK], and the sentence encoded again is cut again
    out = processor(words=["Photo", "of", "Helmut", "", "Kohl", "at", "gate"], return_tensors="pt")
    assert out["input_ids"].tolist() == [ids("[CLS]", "Photo", "of", "Helmut", "[UNK]", "[SEP]")]
    assert out["word_ids"].tolist() == [[-1, 0, 1, 2, 3, -1]]
    processor.tokenizer.unk_token = None
    cut = processor(words=KOHL, return_tensors="pt", return_metadata=True)
    assert cut["word_ids"].tolist() == [[-1, 0, 1, 2, 3, -1]] and cut["truncated_words"] == [4]
    with pytest.raises(ValueError, match=r"^words \[1\] of sentence 0 make no sub-token and the tokenizer has no unk"):
        processor(words=["Photo", "", "gate"])


def test_unpadded_examples_and_cached_features() -> None:
    """An example holds the model inputs and the metadata; cached features become float32 [N, F] ([0, 0] without
    objects, even when the sample has an image: cached features fix the objects, nothing is grounded)."""
    processor = tiny_processor()
    example = processor(words=KOHL, grounding=KOHL_GROUNDING, object_features=np.ones((3, 4)), sample_ids="k")
    assert set(example) == {
        "input_ids", "attention_mask", "token_type_ids", "word_ids", "object_features", "inter_modal_adjacency",
        "sample_id", "words", "num_words", "truncated_words",
        "object_boxes", "object_scores", "object_phrases", "object_word_start", "object_word_end",
    }  # fmt: skip
    assert example["object_features"].dtype == torch.float32 and example["object_features"].shape == (3, 4)
    outside = {**KOHL_GROUNDING, "object_boxes": [[30, 5, 60, 30], [-5, 0, 10, 10], [0, 0, 1, 1]]}
    kept = processor(images=quadrant_image(), words=KOHL, grounding=outside, object_features=np.ones((3, 4)))
    assert kept["object_boxes"] == outside["object_boxes"]  # the features fix the objects: no clipping
    bare = processor(images=quadrant_image(), words=KOHL, object_features=torch.zeros(0, 4))
    assert bare["object_features"].shape == (0, 0) and bare["object_boxes"] == []
    assert bare["inter_modal_adjacency"].shape == (11, 0)


def test_dataset_columns_with_cached_features_and_without_grounding() -> None:
    processor = tiny_processor()
    features = [torch.arange(12.0).reshape(3, 4).tolist(), []]
    columns = {
        "tokens": [KOHL, ["Berlin"]],
        "object_features": features,
        **{column: [KOHL_GROUNDING[column], [] if column != "grounder" else ""] for column in KOHL_GROUNDING},
    }
    examples = processor.process_examples(columns)
    batch = processor.data_collator()([{key: values[i] for key, values in examples.items()} for i in range(2)])
    torch.testing.assert_close(batch["object_features"][0], torch.tensor(features[0]))
    assert batch["object_mask"].tolist() == [[1, 1, 1], [0, 0, 0]]
    text_only = processor.process_examples({"tokens": [["Berlin", "rocks"]]})
    assert text_only["word_ids"] == [[-1, 0, 1, -1]] and text_only["object_boxes"] == [[]]


def test_token_edges_of_a_sentence_without_tokens() -> None:
    from modeling_umgf.multimodal_graph import token_object_adjacency

    words = torch.tensor([[True, False], [False, True]])
    assert token_object_adjacency(words, []).shape == (0, 2)
    assert token_object_adjacency(words, [-1, 1, 0, -1]).tolist() == [
        [False, False],
        [False, True],
        [True, False],
        [False, False],
    ]


def test_split_batch_separates_inputs_and_metadata() -> None:
    processor = tiny_processor()
    batch = processor(words=[KOHL, ["gate"]], labels=[KOHL_TAGS, ["O"]], return_tensors="pt", return_metadata=True)
    inputs, metadata = processor.split_batch(batch)
    assert set(inputs) == {"input_ids", "attention_mask", "token_type_ids", "word_ids", "labels", "pixel_values",
                           "object_mask", "inter_modal_adjacency"}  # fmt: skip
    assert set(metadata) == set(processor.metadata_keys) and metadata["words"] == [KOHL, ["gate"]]
    assert all(inputs[key] is batch[key] for key in inputs)


def test_padding_uses_the_tokenizers_pad_id() -> None:
    vocab = [*VOCAB[1:9], "[PAD]", *VOCAB[9:]]  # [PAD] is id 8
    processor = tiny_processor()
    processor.tokenizer = tiny_tokenizer(vocab)
    batch = processor(words=[KOHL, ["gate"]], return_tensors="pt")
    assert batch["input_ids"][1].tolist() == [vocab.index(t) for t in ("[CLS]", "gate", "[SEP]")] + [8] * 8


@pytest.mark.assumes("transformers", "5.24-5.25", "pipeline() handing dtype to the processor")
def test_loading_ignores_the_models_dtype_and_the_backbones_default_to_the_papers(tmp_path: Path, monkeypatch) -> None:
    """transformers' pipeline hands ``dtype`` to the processor too: it is dropped, so the loaded processor saves.
    ``from_backbones`` builds the tokenizer and crop transform of the paper's BERT and ResNet-152 by default."""
    from modeling_umgf import processing_umgf

    processor = tiny_processor()
    processor.save_pretrained(tmp_path / "saved")
    for key in ("dtype", "torch_dtype"):
        loaded = type(processor).from_pretrained(tmp_path / "saved", **{key: torch.bfloat16})
        loaded.save_pretrained(tmp_path / key)
        assert "bfloat16" not in (tmp_path / key / "tokenizer_config.json").read_text()
    made = []
    monkeypatch.setattr(
        processing_umgf.AutoTokenizer, "from_pretrained", lambda name: made.append(name) or tiny_tokenizer()
    )
    monkeypatch.setattr(
        processing_umgf, "UMGFImageProcessor", lambda name: made.append(name) or processor.image_processor
    )
    built = type(processor).from_backbones(grounder="grid", max_length=20)
    assert made == ["resnet152", "bert-base-cased"] and (built.grounder, built.max_length) == ("grid", 20)
    assert built.image_processor is processor.image_processor and built.tokenizer.vocab == processor.tokenizer.vocab
    type(processor).from_backbones("my-bert", "my-resnet")
    assert made[2:] == ["my-resnet", "my-bert"]


def test_label_names_cut_short_are_a_clear_error_not_an_index_error() -> None:
    processor = tiny_processor()
    processor.label_names = processor.label_names[:3]
    with pytest.raises(ValueError, match=r"sample 1: predicted tag ids \[5, 8\] have no name in the processor's 3"):
        processor.decode_word_predictions(torch.tensor([[0, 1, 2], [5, 8, -100]]), [3, 2])


def test_an_image_over_the_pixel_budget_is_never_decoded(monkeypatch, caplog) -> None:
    """The processor's policy for an unreadable image (text-only, with a warning naming it) holds for a
    decompression bomb, refused from its header."""
    from PIL import ImageFile

    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    with caplog.at_level(logging.WARNING):
        batch = tiny_processor()(words=[["Berlin"]], images=[buffer.getvalue()], sample_ids=["bomb"])
    assert decoded == [] and "sample 'bomb': image of 10000 x 10000" in caplog.text and "pixel budget" in caplog.text
    assert batch["object_boxes"] == [[]]  # used text-only (a readable image gets the grid's 9 boxes)


def test_read_post_checks_a_post_and_names_where(caplog) -> None:
    """The one check of a post for every entry point: errors name ``where``; an unreadable image is an error with
    ``strict`` (the CLI, the handler), else a warning and a text-only post (the pipeline)."""
    from modeling_umgf.processing_umgf import Post, read_post, with_extras

    post = read_post({"words": ["Helmut", "Kohl"], "image": quadrant_image(), "id": 7}, "line 3")
    assert (post.text, post.words, post.id, post.image.size) == ("Helmut Kohl", ["Helmut", "Kohl"], "7", (40, 20))
    assert read_post("Helmut Kohl!") == Post("Helmut Kohl!", ["Helmut", "Kohl", "!"])
    for sample, message in [
        ({"image": None}, 'line 3 must have "text"'),
        ({"text": "a", "words": ["a"]}, 'line 3 must have "text"'),
        ({"text": 3}, 'line 3: "text" must be a string, got int'),
        ({"words": "a b"}, 'line 3: "words" must be a list of strings'),
        ({"text": " "}, "line 3: empty text"),
        ({"text": "a", "grounding": [1]}, 'line 3: "grounding" must be an object of grounding columns'),
    ]:
        with pytest.raises(ValueError, match=re.escape(message)):
            read_post(sample, "line 3")
    with pytest.raises(ValueError, match=re.escape("line 3: unknown key(s) ['imgae']")):
        read_post({"text": "a", "imgae": "x.png"}, "line 3", strict=True)
    with pytest.raises(ValueError, match="line 3: cannot read image: cannot decode image"):
        read_post({"text": "a", "image": b"not an image"}, "line 3", strict=True)
    with caplog.at_level(logging.WARNING):
        assert read_post({"text": "a", "image": b"not an image", "imgae": 1}).image is None
    assert "using it text-only" in caplog.text
    assert with_extras(["a", "b"], [1, None], None) == [
        {"text": "a", "image": 1, "grounding": None},
        {"text": "b", "image": None, "grounding": None},
    ]
    with pytest.raises(ValueError, match=re.escape('with 2 texts, "grounding" must be a list of 2 (or None)')):
        with_extras(["a", "b"], None, [None])
