"""The Gradio Space, served headless on 127.0.0.1 and called with gradio's own client (skipped without gradio)."""

from __future__ import annotations

import importlib.util
import os
import socket
from pathlib import Path

import pytest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:gradio.queueing")  # pandas 3 vs gradio
gr = pytest.importorskip("gradio")
gradio_client = pytest.importorskip("gradio_client")

from helpers import saved_tiny_ner_folder  # noqa: E402
from test_pipeline import TWEET, quadrant_image  # noqa: E402

from modeling_umgf.tools.tiny_models import tiny_ner_pipeline  # noqa: E402

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


@pytest.fixture(scope="module")
def tiny_ner_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return saved_tiny_ner_folder(tmp_path_factory)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load_app():
    spec = importlib.util.spec_from_file_location("umgf_space_app", Path(__file__).parent.parent / "spaces" / "app.py")
    app = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(app)
    return app


@pytest.fixture(scope="module")
def served(tiny_ner_folder):
    demo = load_app().build_demo(str(tiny_ner_folder))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True)
    try:
        yield demo, gradio_client.Client(f"http://127.0.0.1:{port}/", verbose=False)
    finally:
        demo.close()


@pytest.fixture(scope="module")
def client(served):
    return served[1]


def annotations(update: dict) -> dict | None:
    """The value of a component in a predict answer (the Space returns some as component updates)."""
    return update.get("value") if update and "__type__" in update else update


def test_space_highlights_entities_and_draws_boxes(client, tmp_path) -> None:
    image_path = tmp_path / "tweet.png"
    quadrant_image().save(image_path)
    own = "the model's own (grid)"
    highlighted, annotated, raw, note = client.predict(
        TWEET, gradio_client.handle_file(str(image_path)), own, api_name="/predict"
    )
    highlighted = annotations(highlighted)
    expected = tiny_ner_pipeline()(TWEET, image=quadrant_image())
    spans = [(e["entity_group"], e["word"]) for e in expected]
    # every entity highlighted with its type and its score
    assert [(item["class_or_confidence"], item["token"]) for item in highlighted if item["class_or_confidence"]] == [
        (f"{e['entity_group']} {e['score']:.2f}", e["word"]) for e in expected
    ]
    assert not note  # the model's own grounder: nothing to say
    assert "".join(item["token"] for item in highlighted) == TWEET
    assert [(e["entity_group"], e["start"], e["end"]) for e in raw["entities"]] == [
        (e["entity_group"], e["start"], e["end"]) for e in expected
    ]
    annotated = annotations(annotated)
    assert len(annotated["annotations"]) == 9  # the grid grounder's 3 x 3 cells, each supporting the entities
    assert {a["label"] for a in annotated["annotations"]} <= {f"{t}: {w}" for t, w in spans}
    # another grounder, chosen in the Space: for the symbols grounder (no function words given) the three saturated
    # quadrants, which touch, are one symbol spanning the image, grounded to the one phrase, the whole post
    _, annotated, raw, note = client.predict(
        TWEET, gradio_client.handle_file(str(image_path)), "symbols", api_name="/predict"
    )
    assert "trained with the `grid` grounder; `symbols` gives it other objects" in note
    assert len(annotations(annotated)["annotations"]) == 1
    assert [(o["phrase"], o["box"]) for o in raw["objects"]] == [
        (" ".join(w["word"] for w in raw["words"]), {"xmin": 0.0, "ymin": 0.0, "xmax": 120.0, "ymax": 90.0})
    ]


def test_space_runs_text_only_and_rejects_empty_posts(client) -> None:
    own = "the model's own (grid)"
    highlighted, annotated, raw, _ = client.predict("Kawhi Leonard wins", None, own, api_name="/predict")
    assert annotations(annotated) is None and all(not e["boxes"] for e in raw["entities"])
    assert [item["token"] for item in annotations(highlighted) if item["class_or_confidence"]] == [
        e["word"] for e in tiny_ner_pipeline()("Kawhi Leonard wins")
    ]
    with pytest.raises(gradio_client.exceptions.AppError, match="Enter the text of a post"):
        client.predict("  ", None, own, api_name="/predict")


def test_space_errors_say_why_and_only_working_grounders_are_offered(served, monkeypatch, tmp_path) -> None:
    demo, client = served

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the detector")

    monkeypatch.setattr(demo.pipeline, "preprocess", offline)
    with pytest.raises(gradio_client.exceptions.AppError, match="OSError: We couldn't connect"):
        client.predict("Kawhi Leonard wins", None, "the model's own (grid)", api_name="/predict")
    monkeypatch.undo()
    app = load_app()
    ner = demo.pipeline
    # grid (its own) first; never precomputed; no detector whose weights are not on this machine
    assert ner._detector_on_disk("detector") is False  # the tests run offline with an empty Hub cache
    assert app.grounder_choices(ner) == ["the model's own (grid)", "symbols"]
    detector = tmp_path / "dino"
    detector.mkdir()
    (detector / "config.json").write_text("{}")
    monkeypatch.setattr(ner.processor, "grounder_kwargs", {"detector": str(detector)})
    monkeypatch.setattr(ner.processor, "grounder", "detector")
    assert app.grounder_choices(ner)[0] == "the model's own (detector)"
    assert "precomputed" not in app.grounder_choices(ner)
