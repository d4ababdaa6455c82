"""Hub publishing: the folder save_for_hub writes, the rendered model card (metadata, widget, tested snippets), push."""

from __future__ import annotations

import json
import re
import textwrap

import pytest
from conftest import run_without_package
from huggingface_hub import ModelCard
from inference_fixtures import tiny_ner_pipeline
from test_pipeline import TWEET, quadrant_image

from modeling_umgf import hub

RESULTS = {
    "best_epoch": 3,
    "dev_f1": 0.8123,
    "train_seconds": 12.5,
    "global_step": 120,
    "seed": 42,
    "preset": "paper",
    "scoring": "seqeval default mode (conlleval-compatible), micro-averaged entity P/R/F1",
    "test": {
        "precision": 0.851,
        "recall": 0.8602,
        "f1": 0.8556,
        "support": 1351,
        "per_type": {
            t: {"precision": 0.8, "recall": 0.8, "f1": f, "support": 10}
            for t, f in (("LOC", 0.8611), ("MISC", 0.6812), ("ORG", 0.7845), ("PER", 0.9123))
        },
    },
    "test_without_images": {"precision": 0.84, "recall": 0.85, "f1": 0.845, "support": 1351, "per_type": {}},
}
REPO = "someone/umgf-twitter2017"


@pytest.fixture(scope="module")
def hub_folder(tmp_path_factory):
    pipe = tiny_ner_pipeline()
    folder = tmp_path_factory.mktemp("hub")
    hub.save_for_hub(
        pipe.model,
        pipe.processor,
        folder,
        RESULTS,
        repo_id=REPO,
        dataset_id="someone/twitter-mner",
        dataset_config="twitter2017",
    )
    return folder


def test_folder_holds_model_processor_pipeline_handler_and_card(hub_folder) -> None:
    names = {path.name for path in hub_folder.iterdir()}
    assert {
        "config.json",
        "model.safetensors",
        "processor_config.json",
        "tokenizer.json",
        "pipeline_umgf.py",
        "modeling_umgf.py",
        "processing_umgf.py",
        "handler.py",
        "README.md",
        "all_results.json",
    } <= names
    custom = json.loads((hub_folder / "config.json").read_text())["custom_pipelines"]
    assert custom == {
        "multimodal-ner": {
            "impl": "pipeline_umgf.MultimodalNERPipeline",
            "pt": ["AutoModelForTokenClassification"],
            "type": "multimodal",
        }
    }
    card = ModelCard.load(hub_folder / "README.md")
    data = card.data
    assert (data.library_name, data.pipeline_tag, data.language, data.datasets) == (
        "transformers",
        "token-classification",
        "en",
        ["someone/twitter-mner"],
    )
    assert {"ner", "multimodal", "umgf"} <= set(data.tags)
    results = {(r.dataset_name, r.dataset_config, r.metric_name): r.metric_value for r in data.eval_results}
    assert results[("Twitter-2017", "twitter2017", "entity f1 (seqeval, micro)")] == 85.56
    assert results[("Twitter-2017", "twitter2017", "entity recall (seqeval, micro)")] == 86.02
    assert results[("Twitter-2017", "twitter2017", "entity f1 (seqeval, micro, images removed)")] == 84.5
    assert len(results) == 6
    assert card.text.count("# umgf-twitter2017: UMGF") == 1
    assert "| test | 85.1 | 86.02 | 85.56 | 86.11 | 68.12 | 78.45 | 91.23 |" in card.text
    assert "| images removed | 84.0 | 85.0 | 84.5 |  |  |  |  |" in card.text
    assert "best epoch 3 of dev F1\n  81.23" in card.text


def test_widget_outputs_are_the_pipeline_outputs(hub_folder) -> None:
    widget = ModelCard.load(hub_folder / "README.md").data.widget
    pipe = tiny_ner_pipeline()
    assert [example["text"] for example in widget] == list(hub.WIDGET_TEXTS)
    for example in widget:
        expected = [
            {
                "entity_group": e["entity_group"],
                "score": round(e["score"], 4),
                "word": e["word"],
                "start": e["start"],
                "end": e["end"],
            }
            for e in pipe(example["text"])
        ]
        assert example["output"] == expected and expected


def test_model_card_snippets_and_remote_pipeline_run_in_a_clean_process(hub_folder, tmp_path) -> None:
    """The card's snippets, then the saved pipeline's outputs, in a process that cannot import the umgf package."""
    text = ModelCard.load(hub_folder / "README.md").text.replace(REPO, str(hub_folder))
    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(snippets) == 3
    quadrant_image().save(tmp_path / "tweet.jpg")
    check = textwrap.dedent(f"""
        import json
        ner = pipeline(model={str(hub_folder)!r}, trust_remote_code=True, device=-1)
        assert type(ner).__module__.startswith("transformers_modules."), type(ner).__module__
        print("REMOTE", json.dumps([ner({TWEET!r}), ner({TWEET!r}, image="tweet.jpg")]))
    """)
    done = run_without_package("\n".join(snippets) + check, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    local = tiny_ner_pipeline()
    entity = local("Kawhi Leonard wins the fan vote for Block of the Year ! #NBAAwards", image=quadrant_image())[0]
    assert f"{entity['entity_group']} {entity['word']!r} {entity['start']} {entity['end']}" in done.stdout
    assert "grounded grid cell" in done.stdout
    remote = json.loads(done.stdout.split("REMOTE ", 1)[1])
    expected = [local(TWEET), local(TWEET, image=str(tmp_path / "tweet.jpg"))]  # JPEG: not the lossless picture
    assert [[(e["entity_group"], e["start"], e["end"]) for e in r] for r in remote] == [
        [(e["entity_group"], e["start"], e["end"]) for e in r] for r in expected
    ]
    assert [e["score"] for r in remote for e in r] == pytest.approx([e["score"] for r in expected for e in r], abs=1e-5)
    assert [b["alpha"] for e in remote[1] for b in e["boxes"]] == pytest.approx(
        [b["alpha"] for e in expected[1] for b in e["boxes"]], abs=1e-5
    )


def test_push_to_hub_uploads_the_saved_folder_in_one_commit(monkeypatch) -> None:
    calls = {}
    monkeypatch.setattr(hub, "create_repo", lambda repo_id, **kwargs: calls.setdefault("create", (repo_id, kwargs)))

    def upload_folder(repo_id, folder_path, **kwargs):
        calls["upload"] = (repo_id, sorted(p.name for p in __import__("pathlib").Path(folder_path).iterdir()), kwargs)
        return "https://huggingface.co/someone/x/commit/abc"

    monkeypatch.setattr(hub, "upload_folder", upload_folder)
    pipe = tiny_ner_pipeline()
    url = hub.push_to_hub(
        pipe.model, pipe.processor, REPO, RESULTS, token="t", private=True, dataset_config="twitter2017"
    )
    assert url.endswith("/commit/abc")
    assert calls["create"] == (REPO, {"token": "t", "private": True, "exist_ok": True, "repo_type": "model"})
    repo_id, files, kwargs = calls["upload"]
    assert repo_id == REPO and kwargs["token"] == "t"
    assert {"README.md", "handler.py", "pipeline_umgf.py", "model.safetensors", "processor_config.json"} <= set(files)
