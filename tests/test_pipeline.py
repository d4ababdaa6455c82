"""The multimodal-ner pipeline: exact offsets, scores against brute force, explanations, batching, remote code."""

from __future__ import annotations

import itertools
import json
import logging
from types import SimpleNamespace

import pytest
import torch
from helpers import QUADRANT_SIZE, saved_tiny_ner_folder
from PIL import Image
from seqeval.metrics.sequence_labeling import get_entities
from transformers import pipeline

from modeling_umgf import CRF, LABELS, UMGFForTokenClassification
from modeling_umgf.pipeline_umgf import MultimodalNERPipeline, register_pipeline
from modeling_umgf.processing_umgf import word_offsets
from modeling_umgf.tools.tiny_models import tiny_ner_pipeline

TWEET = "🔥🔥 #NBA: Kawhi Leonard wins!! https://t.co/AbC 😀"
# hand-counted code point offsets of the processor's words (emoji = 1 character each)
TWEET_WORDS = [
    ("🔥🔥", 0, 2),
    ("#", 3, 4),
    ("NBA", 4, 7),
    (":", 7, 8),
    ("Kawhi", 9, 14),
    ("Leonard", 15, 22),
    ("wins", 23, 27),
    ("!", 27, 28),
    ("!", 28, 29),
    ("https", 30, 35),
    (":", 35, 36),
    ("/", 36, 37),
    ("/", 37, 38),
    ("t", 38, 39),
    (".", 39, 40),
    ("co", 40, 42),
    ("/", 42, 43),
    ("AbC", 43, 46),
    ("😀", 47, 48),
]


@pytest.fixture(scope="module")
def pipe() -> MultimodalNERPipeline:
    return tiny_ner_pipeline()


def quadrant_image() -> Image.Image:
    """Red top-left, green top-right, blue bottom-left, white bottom-right."""
    image = Image.new("RGB", QUADRANT_SIZE)
    w, h = QUADRANT_SIZE[0] // 2, QUADRANT_SIZE[1] // 2
    for (col, row), colour in {
        (0, 0): (255, 0, 0),
        (1, 0): (0, 255, 0),
        (0, 1): (0, 0, 255),
        (1, 1): (255,) * 3,
    }.items():
        image.paste(colour, (col * w, row * h, col * w + w, row * h + h))
    return image


def test_word_and_entity_offsets_are_exact_with_emoji_urls_and_hashtags(pipe) -> None:
    result = pipe(TWEET, return_words=True)
    assert [(w["word"], w["start"], w["end"]) for w in result["words"]] == TWEET_WORDS
    assert result["entities"], "the tiny tagger never prefers O, so there must be entities"
    tags = [w["tag"] for w in result["words"]]
    assert [(e["entity_group"], e["word_start"], e["word_end"] - 1) for e in result["entities"]] == get_entities(tags)
    for entity in result["entities"]:
        start, end = TWEET_WORDS[entity["word_start"]][1], TWEET_WORDS[entity["word_end"] - 1][2]
        assert (entity["start"], entity["end"], entity["word"]) == (start, end, TWEET[start:end])
    assert pipe(TWEET) == result["entities"]


def test_word_offsets_search_left_to_right() -> None:
    text = "NBA  NBA\t#NBA\nNBA"
    assert word_offsets(text, ["NBA", "NBA", "#", "NBA", "NBA"]) == [(0, 3), (5, 8), (9, 10), (10, 13), (14, 17)]
    with pytest.raises(ValueError, match=r"word 1 .'Kohl'. not found"):
        word_offsets("Helmut Kohl", ["Kohl", "Kohl"])


def test_pre_tokenised_words_are_offset_in_the_joined_text(pipe) -> None:
    result = pipe({"words": ["Helmut", "Kohl", "😀"]}, return_words=True)
    assert result["text"] == "Helmut Kohl 😀"
    assert [(w["start"], w["end"]) for w in result["words"]] == [(0, 6), (7, 11), (12, 13)]


def brute_force_chunk_probabilities(log_joint: torch.Tensor, sequences: list[tuple[int, ...]]) -> dict:
    """P(chunk) = sum of p(y) over the tag sequences y whose seqeval entities include the chunk."""
    probabilities: dict[tuple[str, int, int], float] = {}
    for p, sequence in zip(log_joint.exp().tolist(), sequences):
        for chunk in get_entities([LABELS[t] for t in sequence]):
            probabilities[chunk] = probabilities.get(chunk, 0.0) + p
    return probabilities


def chunk_probability(model, logits, word_mask, row: int, chunk: tuple[str, int, int]) -> float:
    entity_type, start, last = chunk
    entities = [(row, entity_type, start, last + 1)]
    outputs = SimpleNamespace(logits=logits, word_mask=word_mask, word_positions=torch.zeros_like(word_mask).long())
    return float(UMGFForTokenClassification.entity_probabilities(model, outputs, entities)[0])


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_entity_probabilities_equal_brute_force_enumeration(decoder: str) -> None:
    torch.manual_seed(1)
    num_tags, lengths = len(LABELS), (4, 3)  # the second sentence is padded to 4 words
    logits = torch.randn(2, 4, num_tags) * 2
    word_mask = torch.tensor([[True] * 4, [True, True, True, False]])
    crf = CRF(num_tags)
    for parameter in crf.parameters():
        torch.nn.init.uniform_(parameter, -0.1, 0.1)
    # the method on a stand-in that has only what it reads: the decoder and the label names
    config = SimpleNamespace(label_names=list(LABELS), crf_level="word")
    model = SimpleNamespace(crf=crf if decoder == "crf" else None, config=config)
    for row, length in enumerate(lengths):
        sequences = list(itertools.product(range(num_tags), repeat=length))
        tags = torch.tensor(sequences)
        emissions = logits[row, :length].expand(len(sequences), -1, -1)
        if decoder == "crf":
            mask = torch.ones(len(sequences), length, dtype=torch.bool)
            log_joint = crf.log_likelihood(emissions, tags, mask)
        else:
            log_joint = logits[row, :length].log_softmax(-1).gather(1, tags.T).sum(0)
        expected = brute_force_chunk_probabilities(log_joint, sequences)
        assert len(expected) > 20
        for chunk, probability in expected.items():
            assert chunk_probability(model, logits, word_mask, row, chunk) == pytest.approx(probability, abs=1e-5)


def test_pipeline_tags_and_scores_match_the_model_and_brute_force(pipe) -> None:
    text = "Kawhi Leonard wins !"
    entities = pipe(text)
    inputs = pipe.processor(text=text, return_tensors="pt")
    with torch.no_grad():
        outputs = pipe.model(**inputs)
    tags = [LABELS[t] for t in outputs.predictions[0].tolist()]
    assert [(e["entity_group"], e["word_start"], e["word_end"] - 1) for e in entities] == get_entities(tags)
    sequences = list(itertools.product(range(len(LABELS)), repeat=4))
    emissions = outputs.logits[0].expand(len(sequences), -1, -1)
    log_joint = pipe.model.crf.log_likelihood(
        emissions, torch.tensor(sequences), torch.ones(len(sequences), 4, dtype=torch.bool)
    )
    expected = brute_force_chunk_probabilities(log_joint, sequences)
    for entity in entities:
        chunk = (entity["entity_group"], entity["word_start"], entity["word_end"] - 1)
        assert entity["score"] == pytest.approx(expected[chunk], abs=1e-5)


def test_boxes_are_the_linked_objects_with_their_mean_alpha(pipe) -> None:
    words = ["Photo", "of", "Helmut", "Kohl", "at", "the", "Brandenburg", "Gate"]
    grounding = {  # Helmut Kohl (red quadrant), person (general: every word), the Brandenburg Gate (blue)
        "object_boxes": [[0, 0, 60, 45], [60, 0, 120, 45], [0, 45, 60, 90]],
        "object_scores": [0.9, 0.8, 0.7],
        "object_phrases": ["Helmut Kohl", "person", "the Brandenburg Gate"],
        "object_word_start": [2, -1, 5],
        "object_word_end": [4, -1, 8],
        "grounder": "detector",
    }
    result = pipe({"words": words, "image": quadrant_image(), "grounding": grounding}, return_words=True)
    assert [o["phrase"] for o in result["objects"]] == grounding["object_phrases"]

    inputs = pipe.processor(images=quadrant_image(), words=words, grounding=grounding, return_tensors="pt")
    with torch.no_grad():
        gates = torch.stack(pipe.model(**inputs, output_gates=True).gates)[:, 0]  # [layers, tokens, objects]
    first = {}
    for position, word in enumerate(inputs["word_ids"][0].tolist()):
        first.setdefault(word, position)
    assert result["entities"]
    for entity in result["entities"]:
        span = range(entity["word_start"], entity["word_end"])
        expected = {}
        for o, (start, end) in enumerate(zip(grounding["object_word_start"], grounding["object_word_end"])):
            linked = [w for w in span if (start, end) == (-1, -1) or start <= w < end]
            if linked:
                per_layer = [sum(float(gates[layer, first[w], o]) for w in linked) / len(linked) for layer in range(2)]
                expected[grounding["object_phrases"][o]] = (grounding["object_boxes"][o], per_layer)
        assert {b["phrase"] for b in entity["boxes"]} == set(expected)
        assert [b["alpha"] for b in entity["boxes"]] == sorted((b["alpha"] for b in entity["boxes"]), reverse=True)
        for box in entity["boxes"]:
            coordinates, per_layer = expected[box["phrase"]]
            assert box["box"] == dict(zip(("xmin", "ymin", "xmax", "ymax"), coordinates))
            assert box["alpha_per_layer"] == pytest.approx(per_layer, abs=1e-6)
            assert box["alpha"] == pytest.approx(sum(per_layer) / 2, abs=1e-6)


def test_a_batch_gives_the_results_of_single_calls(pipe) -> None:
    inputs = ["Kawhi Leonard wins", {"text": TWEET, "image": quadrant_image()}, {"words": ["Berlin", "rocks", "!"]}]
    batched = pipe(inputs, batch_size=3)
    for item, result in zip(inputs, batched):
        single = pipe(item)
        assert [(e["entity_group"], e["start"], e["end"]) for e in result] == [
            (e["entity_group"], e["start"], e["end"]) for e in single
        ]
        for e, s in zip(result, single):
            assert e["score"] == pytest.approx(s["score"], abs=1e-5)
            assert [b["alpha"] for b in e["boxes"]] == pytest.approx([b["alpha"] for b in s["boxes"]], abs=1e-5)
    assert all(not e["boxes"] for e in batched[0]) and all(len(e["boxes"]) == 9 for e in batched[1])


def test_unreadable_image_falls_back_to_text_only_with_a_warning(pipe, caplog) -> None:
    with caplog.at_level(logging.WARNING):
        result = pipe("Kawhi Leonard wins", image=b"not an image")
    assert "using it text-only" in caplog.text
    assert result == pipe("Kawhi Leonard wins")
    with pytest.raises(ValueError, match="empty text"):
        pipe("   ")


def test_registered_task_builds_the_pipeline(pipe) -> None:
    register_pipeline()
    register_pipeline()  # idempotent
    ner = pipeline("multimodal-ner", model=pipe.model, processor=pipe.processor, device=-1)
    assert isinstance(ner, MultimodalNERPipeline)
    assert ner("Berlin rocks") == pipe("Berlin rocks")


@pytest.mark.assumes("transformers", "5.24-5.25", "the token-classification pipeline's first-sub-token word reading")
def test_standard_token_classification_pipeline_tags_words_by_their_first_sub_token(pipe) -> None:
    """transformers' own pipeline (text only): per word, the argmax of UMGF's emissions at its first sub-token.
    (test_hub runs it from a saved folder as remote code, the way the model card shows.)"""
    standard = pipeline(
        "token-classification",
        model=pipe.model,
        tokenizer=pipe.processor.tokenizer,
        aggregation_strategy="none",
        device=-1,
    )
    text = "Photo of Helmut Kohl at the Brandenburg Gate"
    tokens = standard(text)
    inputs = pipe.processor(text=text, return_tensors="pt")
    with torch.no_grad():
        logits = pipe.model(**inputs).logits[0]
    word_ids = inputs["word_ids"][0].tolist()
    first_positions = {word_ids.index(w): w for w in range(len(logits))}
    by_index = {token["index"]: token for token in tokens}
    for position, word in first_positions.items():
        label = LABELS[int(logits[word].argmax())]
        if label == "O":
            assert position not in by_index
        else:
            assert by_index[position]["entity"] == label
            assert float(by_index[position]["score"]) == pytest.approx(float(logits[word].softmax(-1).max()), abs=1e-5)


def test_grounder_and_grounding_parameters(pipe, tmp_path) -> None:
    """A grounder chosen when the pipeline is built or per call, and a grounding given per post."""
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    symbols = pipeline(model=str(folder), trust_remote_code=True, grounder="symbols")
    result = symbols(TWEET, image=quadrant_image(), return_words=True)
    assert [o["phrase"] for o in result["objects"]] == [" ".join(w["word"] for w in result["words"])]
    assert len(pipe(TWEET, image=quadrant_image(), return_words=True)["objects"]) == 9  # the model's own: grid
    per_call = pipe(TWEET, image=quadrant_image(), grounder="symbols", return_words=True)
    assert per_call["objects"] == result["objects"]
    grounding = {
        "object_boxes": [[0, 0, 60, 45]],
        "object_scores": [0.5],
        "object_phrases": ["NBA"],
        "object_word_start": [2],
        "object_word_end": [3],
        "grounder": "detector",
    }
    given = pipe(TWEET, image=quadrant_image(), grounding=grounding, return_words=True)
    assert [(o["phrase"], o["score"]) for o in given["objects"]] == [("NBA", 0.5)]
    linked = [e for e in given["entities"] if e["boxes"]]
    assert all(e["word_start"] <= 2 < e["word_end"] for e in linked)
    with pytest.raises(ValueError, match="unknown grounder"):
        pipe(TWEET, grounder="yolo")


@pytest.mark.assumes("transformers", "5.24-5.25", "the token-classification pipeline cutting at model_max_length")
def test_a_300_word_post_is_tagged_by_every_pipeline(pipe, tmp_path) -> None:
    """The text encoder has 64 positions: the post is cut (words after it tagged O and counted), never a crash;
    transformers' standard token-classification pipeline cuts it too (the saved tokenizer's model_max_length)."""
    words = ["Kawhi", "Leonard", "wins", "!"] * 75
    text = " ".join(words)
    pieces = [len(pipe.processor.tokenizer.tokenize(word)) for word in words]  # "Kawhi" is Kaw ##hi
    kept = sum(1 for total in itertools.accumulate(pieces) if total <= 62)  # 64 positions - [CLS], [SEP]
    result = pipe(text, return_words=True)
    assert len(result["words"]) == 300 and result["truncated_words"] == 300 - kept == 251
    assert all(w["tag"] == "O" and w["score"] is None for w in result["words"][kept:])
    assert all(w["score"] is not None for w in result["words"][:kept])
    assert result["entities"] and all(e["word_end"] <= kept for e in result["entities"])
    folder = tmp_path / "saved"
    pipe.save_pretrained(folder)
    standard = pipeline("token-classification", model=str(folder), trust_remote_code=True, aggregation_strategy="first")
    assert standard.tokenizer.model_max_length == 64
    entities = standard(text)
    assert entities and max(e["end"] for e in entities) <= len(text)


@pytest.mark.assumes("transformers", "5.24-5.25", "pipeline() handing its model arguments to the processor")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_pipeline_loaded_with_a_dtype_saves_and_reloads(dtype, tmp_path_factory, tmp_path) -> None:
    """transformers' `pipeline` also passes its model arguments (``dtype``) to the processor; they must not end up
    in the saved tokenizer configuration (a `torch.dtype` is not JSON serialisable)."""
    ner = pipeline(model=str(saved_tiny_ner_folder(tmp_path_factory)), trust_remote_code=True, dtype=dtype, device=-1)
    assert next(ner.model.parameters()).dtype == dtype
    ner.save_pretrained(tmp_path / "saved")
    assert "dtype" not in json.loads((tmp_path / "saved" / "tokenizer_config.json").read_text())
    assert json.loads((tmp_path / "saved" / "config.json").read_text())["dtype"] == str(dtype).removeprefix("torch.")
    again = pipeline(model=str(tmp_path / "saved"), trust_remote_code=True, device=-1)
    assert next(again.model.parameters()).dtype == dtype
    assert again("Kawhi Leonard wins the fan vote") == ner("Kawhi Leonard wins the fan vote")


def test_a_saved_folder_whose_weights_do_not_match_its_config_is_refused_by_pipeline(tmp_path) -> None:
    """pipeline(model=folder, trust_remote_code=True), as the handler and the Hub load it: an edited config.json is
    an error naming the tensors, not a model with random layers."""
    folder = tmp_path / "model"
    tiny_ner_pipeline().save_pretrained(folder)
    config = json.loads((folder / "config.json").read_text())
    config["num_fusion_layers"] = 3
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"weights lack: umgf\.layers\.2\."):
        pipeline(model=str(folder), trust_remote_code=True)


def test_a_processor_with_other_labels_than_the_model_is_refused() -> None:
    local = tiny_ner_pipeline()
    local.processor.label_names = local.processor.label_names[:3]
    with pytest.raises(ValueError, match=r"the processor's label_names .* differ from the model's id2label"):
        MultimodalNERPipeline(model=local.model, processor=local.processor, device=-1)


def test_a_decompression_bomb_is_tagged_text_only_without_decoding_it(monkeypatch, caplog) -> None:
    import io

    from PIL import ImageFile

    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")  # 100 megapixels in a few kilobytes
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    local = tiny_ner_pipeline()
    with caplog.at_level(logging.WARNING):
        result = local({"text": TWEET, "image": buffer.getvalue(), "id": "bomb"}, return_words=True)
    assert decoded == [] and result["objects"] == []
    assert "sample 'bomb': image of 10000 x 10000 = 100000000 pixels exceeds the pixel budget" in caplog.text


# ------------------------------------------------------------------ the token-classification pipeline's habits
def test_aggregation_strategy_none_gives_every_word_and_ignore_labels_filters(pipe) -> None:
    post = pipe(TWEET)
    words = post.words  # every word with its tag and CRF marginal
    per_word = pipe(TWEET, aggregation_strategy="none")
    expected = [
        {"entity": w["tag"], "score": w["score"], "index": i, "word": w["word"], "start": w["start"], "end": w["end"]}
        for i, w in enumerate(words)
        if w["tag"] != "O"
    ]
    assert per_word == expected and expected
    assert all(TWEET[item["start"] : item["end"]] == item["word"] for item in per_word)
    assert len(pipe(TWEET, aggregation_strategy="none", ignore_labels=[])) == len(words)
    assert pipe(TWEET, aggregation_strategy="simple") == pipe(TWEET, aggregation_strategy="first") == post
    dropped = post[0]["entity_group"]
    kept = pipe(TWEET, ignore_labels=[dropped])
    assert kept == [e for e in post if e["entity_group"] != dropped] and len(kept) < len(post)
    for strategy in ("average", "max"):
        with pytest.raises(ValueError, match="CRF tags and scores whole words"):
            pipe(TWEET, aggregation_strategy=strategy)
    with pytest.raises(ValueError, match="aggregation_strategy must be one of"):
        pipe(TWEET, aggregation_strategy="longest")


def test_the_result_is_always_a_list_of_entities(pipe) -> None:
    plain, with_words = pipe(TWEET), pipe(TWEET, return_words=True)
    assert type(plain) is type(with_words) and isinstance(with_words, list)
    assert with_words == plain  # the same entities, whatever return_words says
    details = with_words.to_dict()
    assert set(details) == {"text", "entities", "words", "objects", "truncated_words"}
    assert details["entities"] == list(plain) and with_words["words"] == with_words.words == details["words"]
    json.dumps(details)
    [batched] = pipe([TWEET], batch_size=1)
    assert isinstance(batched, list) and batched == plain


def test_a_model_without_a_visual_branch_ignores_images_with_one_warning(monkeypatch, caplog) -> None:
    from modeling_umgf import detector_grounding, pipeline_umgf
    from modeling_umgf.tools.tiny_models import tiny_config, tiny_processor

    def no_detector(*args, **kwargs):
        raise AssertionError("a text-only model must not build or run a grounder")

    monkeypatch.setattr(detector_grounding.ZeroShotDetectorGrounder, "__init__", no_detector)
    monkeypatch.setattr(pipeline_umgf, "build_grounder", no_detector)
    torch.manual_seed(0)
    model = UMGFForTokenClassification(tiny_config(use_visual=False)).eval()
    text_only = MultimodalNERPipeline(model=model, processor=tiny_processor("detector"), device=-1)
    expected = text_only(TWEET)
    with caplog.at_level(logging.WARNING, logger="modeling_umgf.pipeline_umgf"):
        first = text_only(TWEET, image=quadrant_image())
        second = text_only([TWEET, TWEET], image=[quadrant_image(), quadrant_image()], grounder="detector")
    assert first == expected and second == [expected, expected]
    assert first.objects == [] and all(not e["boxes"] for e in first)
    warnings = [r.getMessage() for r in caplog.records if "no visual branch" in r.getMessage()]
    assert len(warnings) == 1


def count_decodes(monkeypatch) -> dict[str, int]:
    """Counts of ``Image.open`` (decoding encoded bytes) and of ``ImageOps.exif_transpose`` (one per run of the
    loader, whatever the image was given as) from now on."""
    from PIL import ImageOps

    counts = {"open": 0, "load": 0}
    opened, transposed = Image.open, ImageOps.exif_transpose

    def counted_open(*args, **kwargs):
        counts["open"] += 1
        return opened(*args, **kwargs)

    def counted_transpose(*args, **kwargs):
        counts["load"] += 1
        return transposed(*args, **kwargs)

    monkeypatch.setattr(Image, "open", counted_open)
    monkeypatch.setattr(ImageOps, "exif_transpose", counted_transpose)
    return counts


def png_bytes(image: Image.Image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_each_image_is_decoded_once_per_post(pipe, monkeypatch) -> None:
    encoded = png_bytes(quadrant_image())
    expected = pipe("Kawhi Leonard wins", image=quadrant_image())
    counts = count_decodes(monkeypatch)
    assert pipe("Kawhi Leonard wins", image=encoded) == expected
    assert counts == {"open": 1, "load": 1}
    pipe(["Kawhi Leonard wins", "Berlin rocks", "no image"], image=[encoded, encoded, None], batch_size=2)
    assert counts == {"open": 3, "load": 3}
