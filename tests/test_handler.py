"""The Inference Endpoints handler, called locally the way the Endpoints runtime calls it."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
from pathlib import Path

import pytest
from helpers import saved_tiny_ner_folder
from test_pipeline import TWEET, quadrant_image

from modeling_umgf.tools.tiny_models import tiny_ner_pipeline


@pytest.fixture(scope="module")
def tiny_ner_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_tiny_ner_folder(tmp_path_factory)


@pytest.fixture(scope="module")
def handler(tiny_ner_folder):
    spec = importlib.util.spec_from_file_location("umgf_endpoint_handler", Path(__file__).parent.parent / "handler.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.EndpointHandler(str(tiny_ner_folder))


def png_base64() -> str:
    buffer = io.BytesIO()
    quadrant_image().save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def test_round_trip_text_and_base64_image(handler) -> None:
    local = tiny_ner_pipeline()
    response = handler({"inputs": TWEET, "image": png_base64()})
    json.dumps(response)  # JSON-serialisable, as the endpoint returns it
    expected = local(TWEET, image=quadrant_image())
    assert [(e["entity_group"], e["start"], e["end"]) for e in response] == [
        (e["entity_group"], e["start"], e["end"]) for e in expected
    ]
    assert [e["score"] for e in response] == pytest.approx([e["score"] for e in expected], abs=1e-5)
    assert all(len(e["boxes"]) == 9 for e in response)
    data_uri = handler({"inputs": TWEET, "image": "data:image/png;base64," + png_base64()})
    assert [e["boxes"] for e in data_uri] == [e["boxes"] for e in response]


def test_text_only_batch_and_parameters(handler) -> None:
    local = tiny_ner_pipeline()
    texts = ["Kawhi Leonard wins", "Berlin rocks !"]
    response = handler({"inputs": texts, "image": [None, png_base64()], "parameters": {"batch_size": 2}})
    assert len(response) == 2
    assert [(e["entity_group"], e["start"], e["end"]) for e in response[0]] == [
        (e["entity_group"], e["start"], e["end"]) for e in local(texts[0])
    ]
    assert all(not e["boxes"] for e in response[0]) and all(e["boxes"] for e in response[1])
    detailed = handler({"inputs": texts[0], "parameters": {"return_words": True}})
    assert [w["word"] for w in detailed["words"]] == ["Kawhi", "Leonard", "wins"]


@pytest.mark.parametrize(
    "request_body, message",
    [
        ({"text": "x"}, '"inputs"'),
        ({"inputs": 3}, "a string, a list of strings, or"),
        ({"inputs": "Berlin", "image": "not base64!"}, "must be base64 image data or a data:image"),
        ({"inputs": ["a", "b"], "image": ["x"]}, '"image" must be a list of 2'),
    ],
)
def test_bad_requests_are_rejected_clearly(handler, request_body, message) -> None:
    with pytest.raises(ValueError, match=message):
        handler(request_body)


def test_parameters_choose_the_grounder_and_a_grounding_can_be_sent(handler) -> None:
    grid = handler({"inputs": TWEET, "image": png_base64()})
    symbols = handler({"inputs": TWEET, "image": png_base64(), "parameters": {"grounder": "symbols"}})
    assert all(len(e["boxes"]) == 9 for e in grid) and all(len(e["boxes"]) == 1 for e in symbols)
    grounding = {
        "object_boxes": [[0, 0, 60, 45]],
        "object_scores": [0.9],
        "object_phrases": ["Kawhi"],
        "object_word_start": [0],
        "object_word_end": [1],
        "grounder": "detector",
    }
    sent = handler(
        {
            "inputs": "Kawhi Leonard wins",
            "image": png_base64(),
            "grounding": grounding,
            "parameters": {"return_words": True},
        }
    )
    assert sent["objects"] == [
        {"box": {"xmin": 0.0, "ymin": 0.0, "xmax": 60.0, "ymax": 45.0}, "phrase": "Kawhi", "score": 0.9}
    ]
    batch = handler(
        {
            "inputs": ["Kawhi Leonard wins", "Berlin rocks"],
            "image": [png_base64(), None],
            "grounding": [grounding, None],
        }
    )
    assert [len(e["boxes"]) for e in batch[0]] == [1 if e["word_start"] == 0 else 0 for e in batch[0]]
    with pytest.raises(ValueError, match='"grounding" must be a list of 2'):
        handler({"inputs": ["a", "b"], "grounding": [grounding]})


# ------------------------------------------------------------------------------------- what a request may read
@pytest.mark.parametrize("path_exists", [True, False])
def test_local_paths_are_refused_without_saying_whether_they_exist(handler, tmp_path, path_exists) -> None:
    image = tmp_path / "secret.png"
    if path_exists:
        quadrant_image().save(image)
    with pytest.raises(ValueError) as refused:
        handler({"inputs": "Berlin", "image": str(image)})
    message = str(refused.value)
    assert "base64" in message and str(image) not in message and "not found" not in message
    # the same words whether the file is there or not
    assert message == "'image' must be base64 image data or a data:image/...;base64, URI"


def test_image_urls_need_the_switch(handler, monkeypatch) -> None:
    fetched = []
    monkeypatch.setattr(handler.pipeline, "load_image", lambda source: fetched.append(source) or quadrant_image())
    with pytest.raises(ValueError, match=r"image URLs are disabled on this endpoint .*UMGF_HANDLER_ALLOW_URLS=1"):
        handler({"inputs": "Berlin", "image": "http://169.254.169.254/latest/meta-data"})
    assert fetched == []
    monkeypatch.setenv("UMGF_HANDLER_ALLOW_URLS", "1")
    handler({"inputs": "Berlin", "image": "https://example.org/tweet.png"})
    assert fetched == ["https://example.org/tweet.png"]


def test_a_decompression_bomb_is_refused_before_decoding(handler, monkeypatch) -> None:
    from PIL import Image, ImageFile

    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")  # 100 megapixels in a few kilobytes
    assert len(buffer.getvalue()) < 100_000
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    with pytest.raises(ValueError, match=r"10000 x 10000 = 100000000 pixels exceeds the pixel budget of 40000000"):
        handler({"inputs": "Berlin", "image": base64.b64encode(buffer.getvalue()).decode()})
    assert decoded == []  # refused from the header: no pixel decoded
    monkeypatch.setenv("UMGF_MAX_IMAGE_PIXELS", "1000")  # the budget is configurable
    with pytest.raises(ValueError, match="exceeds the pixel budget of 1000 pixels"):
        handler({"inputs": "Berlin", "image": png_base64()})


@pytest.mark.parametrize(
    "request_body, message",
    [
        ({"inputs": []}, '"inputs" is an empty list'),
        ({"inputs": "a", "parameters": "return_words"}, '"parameters" must be a JSON object, got str'),
        ({"inputs": "a", "parameters": ["return_words"]}, '"parameters" must be a JSON object, got list'),
        (
            {"inputs": "a", "parameters": {"grounder": {"name": "grid"}}},
            'parameter "grounder" must be a str, got object',
        ),
        ({"inputs": "a", "parameters": {"return_words": "no"}}, 'parameter "return_words" must be a bool, got string'),
        ({"inputs": "a", "parameters": {"batch_size": True}}, 'parameter "batch_size" must be a int, got boolean'),
        ({"inputs": "a", "parameters": {"batch_size": 0}}, '"batch_size" must be >= 1'),
        ({"inputs": "a", "parameters": {"device": "cuda"}}, "unknown parameter 'device'"),
        ({"inputs": "a", "image": 3}, "'image' must be a base64 string, got number"),
    ],
)
def test_malformed_requests_name_what_is_wrong(handler, request_body, message) -> None:
    with pytest.raises(ValueError, match=message):
        handler(request_body)


def test_the_inference_endpoints_object_form_is_accepted(handler) -> None:
    image = png_base64()
    plain = handler({"inputs": TWEET, "image": image})
    assert handler({"inputs": {"text": TWEET, "image": image}}) == plain
    texts = ["Kawhi Leonard wins", "Berlin rocks !"]
    batch = handler({"inputs": [{"text": texts[0]}, {"text": texts[1], "image": image}]})
    assert batch == handler({"inputs": texts, "image": [None, image]})
    words = handler({"inputs": {"words": ["Berlin", "rocks"]}, "parameters": {"return_words": True}})
    assert [w["word"] for w in words["words"]] == ["Berlin", "rocks"]
    with pytest.raises(ValueError, match='"inputs" must have "text"'):
        handler({"inputs": {"image": image}})
    with pytest.raises(ValueError, match="inside each object"):
        handler({"inputs": {"text": TWEET}, "image": image})
