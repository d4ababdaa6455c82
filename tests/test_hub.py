"""Hub publishing: the folder save_for_hub writes, the rendered model card (metadata, widget, tested snippets), push."""

from __future__ import annotations

import ast
import importlib.util
import json
import logging
import re
import textwrap
from importlib import metadata
from pathlib import Path

import pytest
from helpers import run_without_package, save_tiny_text_encoder
from huggingface_hub import ModelCard, ModelCardData
from huggingface_hub.repocard_data import model_index_to_eval_results
from huggingface_hub.utils import filter_repo_objects
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from pathspec import GitIgnoreSpec
from test_pipeline import TWEET, quadrant_image
from twitter_fixtures import export_fixture_text

import train_umgf
from modeling_umgf.noun_phrases import SPACY_MODELS
from modeling_umgf.tools import hub
from modeling_umgf.tools.tiny_models import tiny_ner_pipeline

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
        calls["upload"] = (repo_id, sorted(p.name for p in Path(folder_path).iterdir()), kwargs)
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
    assert kwargs["ignore_patterns"] == ["checkpoints/*", "best_model/*", "feature_cache/*", ".umgf-*"]
    assert {
        "README.md",
        "handler.py",
        "pipeline_umgf.py",
        "model.safetensors",
        "processor_config.json",
        "requirements.txt",
        ".gitignore",
    } <= set(files)


# --------------------------------------------------------------------- a run on local folders: Hub ids or nothing
# best_model/ is removed once the folder holds the model
TRAINING_LEFTOVERS = {"checkpoints", "feature_cache", ".umgf-checkpoints.json", ".umgf-run.lock"}


def published_files(folder: Path) -> dict[str, str]:
    """Every text file of ``folder``: relative path -> content."""
    return {
        p.relative_to(folder).as_posix(): p.read_text(encoding="utf-8")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in {".md", ".json", ".txt", ".py", ".jsonl", ""}
    }


def card_metadata(folder: Path) -> dict:
    """README.md's YAML metadata, validated by huggingface_hub's classes (ModelCard, ModelCardData and the
    model-index parser), as plain data."""
    card = ModelCard.load(folder / "README.md")
    card_yaml = card.data.to_dict()
    ModelCardData(**card_yaml)  # raises on a malformed model-index
    if "model-index" in card_yaml:
        name, results = model_index_to_eval_results(card_yaml["model-index"])
        assert name == card.data.model_name and results == card.data.eval_results
    return card_yaml


@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, Path]:
    """train_umgf.py on a dataset folder exported by `python -m datasets_scripts build` (no --push_to_hub) with a
    text encoder from a local folder, keeping checkpoints; returns (run folder, base folder of every local path)."""
    base = tmp_path_factory.mktemp("local")
    encoder = save_tiny_text_encoder(base / "tiny-bert")
    dataset = base / "twitter_mner"
    export_fixture_text(dataset, "twitter2017")
    out = base / "run"
    data = ["--dataset_name", str(dataset), "--dataset_config_name", "twitter2017"]
    model = ["--text_model_name_or_path", str(encoder), "--preset", "bert-crf"]
    train_umgf.main(
        ["--output_dir", str(out), *data, *model, "--num_train_epochs", "1", "--checkpointing_steps", "epoch"]
    )
    (out / "feature_cache").mkdir(exist_ok=True)
    (out / "feature_cache" / "features.arrow").write_bytes(b"cached features")
    return out, base


def test_cards_of_a_run_on_local_folders_hold_no_local_path_and_parse(local_run) -> None:
    out, base = local_run
    files = published_files(out)
    assert {"README.md", "config.json", "requirements.txt", ".gitignore"} <= set(files)
    uploaded = set(filter_repo_objects(files, ignore_patterns=list(hub.IGNORE_PATTERNS)))
    assert "best_model/config.json" not in files  # no second copy is left behind
    assert [name for name in uploaded if str(base) in files[name] or str(base.resolve()) in files[name]] == []
    card_yaml = card_metadata(out)
    assert "base_model" not in card_yaml and "datasets" not in card_yaml and "model-index" not in card_yaml
    text = ModelCard.load(out / "README.md").text
    assert "Trained on Twitter-2017, 1 epoch." in text and "huggingface.co/datasets" not in text
    assert "Text encoder: `tiny-bert (32-d)`" in text  # the encoder folder's name, never its path
    assert "_name_or_path" not in json.loads(files["config.json"])["text_config"]
    test = {k: round(100 * v, 2) for k, v in json.loads(files["all_results.json"])["test"].items() if k != "per_type"}
    assert f"| test | {test['precision']} | {test['recall']} | {test['f1']} |" in text  # the scores stay in the table


def test_left_out_local_paths_are_logged_and_the_model_keeps_its_name(tmp_path, caplog) -> None:
    pipe = tiny_ner_pipeline()
    pipe.model.config.text_config._name_or_path = str(tmp_path / "encoder")
    with caplog.at_level(logging.WARNING, logger="modeling_umgf.tools.hub"):
        hub.save_for_hub(pipe.model, pipe.processor, tmp_path / "out", RESULTS, dataset_id=str(tmp_path))
    left_out = [r.getMessage() for r in caplog.records if "left out of the published files" in r.getMessage()]
    assert len(left_out) == 2
    assert str(tmp_path / "encoder") in left_out[0] and str(tmp_path) in left_out[1]
    assert pipe.model.config.text_config._name_or_path == str(tmp_path / "encoder")
    assert str(tmp_path) not in (tmp_path / "out" / "README.md").read_text()


def test_a_dataset_folder_pushed_by_the_build_names_its_repo_and_hub_encoders_are_the_base_model(
    tmp_path, monkeypatch
) -> None:
    dataset = tmp_path / "twitter_mner"
    export_fixture_text(dataset, "twitter2017", "--push_to_hub", "someone/twitter-mner", monkeypatch=monkeypatch)
    pipe = tiny_ner_pipeline()
    pipe.model.config.text_config._name_or_path = "google-bert/bert-base-cased"
    out = tmp_path / "out"
    hub.save_for_hub(pipe.model, pipe.processor, out, RESULTS, dataset_id=str(dataset), dataset_config="twitter2017")
    assert not [name for name, text in published_files(out).items() if str(tmp_path) in text]
    card_yaml = card_metadata(out)
    assert card_yaml["base_model"] == "google-bert/bert-base-cased"
    assert card_yaml["datasets"] == ["someone/twitter-mner"]
    entries = ModelCard.load(out / "README.md").data.eval_results
    assert {e.dataset_type for e in entries} == {"someone/twitter-mner"} and len(entries) == 6
    text = ModelCard.load(out / "README.md").text
    assert (
        "Trained on Twitter-2017 ([someone/twitter-mner](https://huggingface.co/datasets/someone/twitter-mner))" in text
    )
    assert "Text encoder: `google-bert/bert-base-cased`" in text
    config = json.loads((out / "config.json").read_text())
    assert config["text_config"]["_name_or_path"] == "google-bert/bert-base-cased"


# ----------------------------------------------------------------------------------- deployment files, uploads
def test_upload_of_a_run_folder_skips_checkpoints_duplicates_and_caches(local_run) -> None:
    out, _ = local_run
    files = [p.relative_to(out).as_posix() for p in sorted(out.rglob("*")) if p.is_file()]
    leftovers = [f for f in files if f.split("/")[0] in TRAINING_LEFTOVERS]
    assert {f.split("/")[0] for f in leftovers} == TRAINING_LEFTOVERS  # the run did write them
    expected = [f for f in files if f not in leftovers]
    assert {"model.safetensors", "README.md", "predictions_test.jsonl", "requirements.txt", ".gitignore"} <= set(
        expected
    )
    # push_to_hub's ignore_patterns, as huggingface_hub's upload_folder applies them
    assert list(filter_repo_objects(files, ignore_patterns=list(hub.IGNORE_PATTERNS))) == expected
    # the folder's .gitignore, as the Hub applies it to `hf upload DIR` (git's rules)
    gitignore = GitIgnoreSpec.from_lines((out / ".gitignore").read_text().splitlines())
    assert [f for f in files if not gitignore.match_file(f)] == expected


def test_requirements_are_the_remote_code_imports_with_setup_py_ranges(hub_folder) -> None:
    """requirements.txt: the distributions the copied modules import, beyond transformers' own dependencies,
    each with the version range of setup.py (read from the installed umgf metadata)."""
    lines = (hub_folder / "requirements.txt").read_text().splitlines()

    def specifiers(requirements: list[str]) -> dict[str, SpecifierSet]:
        parsed = [Requirement(r) for r in requirements if ";" not in r]  # not the extras
        return {canonicalize_name(r.name): r.specifier for r in parsed}

    required, setup_py = specifiers(lines), specifiers(metadata.requires("umgf"))
    assert required == {name: setup_py[name] for name in required}
    transformers_own = {"transformers", *specifiers(metadata.requires("transformers"))}
    modules = set()
    for path in hub_folder.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                modules.add(node.module.split(".")[0])
    modules |= {name for name in SPACY_MODELS if importlib.util.find_spec(name)}  # spaCy pipelines load by name
    distributions = metadata.packages_distributions()
    imported = {canonicalize_name(distributions[m][0]) for m in modules if m in distributions} - transformers_own
    # datasets: only schema.dataset_features imports it, to build datasets; it never runs from a model repo
    assert imported - {"datasets"} == set(required) - {"transformers"}
    assert {"transformers", "torch", "timm", "seqeval", "httpx"} <= set(required)


# -------------------------------------------------------------------------------- cards from what happened
def card_text(folder: Path) -> str:
    """The card's text with every run of whitespace (line breaks of the template) as one space."""
    return " ".join(ModelCard.load(folder / "README.md").text.split())


def test_the_card_counts_the_sentences_and_epochs_a_run_used(tmp_path) -> None:
    pipe = tiny_ner_pipeline()
    results = {**RESULTS, "mode": "train", "train_samples": 1000, "train_samples_available": 3373}
    hub.save_for_hub(
        pipe.model, pipe.processor, tmp_path, {**results, "num_train_epochs": 3}, dataset_config="twitter2017"
    )
    assert "Trained on 1,000 of the 3,373 training tweets of Twitter-2017, 3 epochs." in card_text(tmp_path)
    capped = {**results, "test_samples": 300, "test_samples_available": 723, "images": False}
    hub.save_for_hub(pipe.model, pipe.processor, tmp_path / "capped", capped, dataset_config="twitter2017")
    assert "Scored on the first 300 of the 723 test tweets only." in card_text(tmp_path / "capped")
    assert "The data had no images: its visual branch was never trained on one" in card_text(tmp_path / "capped")
    evaluated = {**RESULTS, "mode": "evaluate", "test_samples": 723, "test_samples_available": 723}
    hub.save_for_hub(pipe.model, pipe.processor, tmp_path / "eval", evaluated, dataset_config="twitter2017")
    text = card_text(tmp_path / "eval")
    assert "**evaluated** as it is on the test split of Twitter-2017 (723 tweets)" in text
    assert "Trained on" not in text and "best epoch" not in text and "optimizer steps" not in text


def test_a_text_only_models_card_describes_no_image_fusion_and_names_its_encoder(tmp_path) -> None:
    from modeling_umgf import UMGFForTokenClassification
    from modeling_umgf.tools.tiny_models import tiny_config, tiny_processor

    model = UMGFForTokenClassification(tiny_config(use_visual=False)).eval()
    model.config.text_config._name_or_path = str(tmp_path / "all-MiniLM-L6-v2" / "model")
    hub.save_for_hub(model, tiny_processor("detector"), tmp_path / "out", {**RESULTS, "preset": "text-only"})
    text = card_text(tmp_path / "out")
    assert "from their text only" in text and "Text encoder: `all-MiniLM-L6-v2/model (32-d)`" in text
    for visual in (
        "fusion\nlayers run self-attention within each modality",
        "vision backbone",
        "Grounding:",
        "detector",
    ):
        assert visual not in text, visual
    assert str(tmp_path) not in text
    assert hub.encoder_display_name("google-bert/bert-base-cased", "bert", 768) == "google-bert/bert-base-cased"
    assert hub.encoder_display_name("", "bert", 64) == "bert (64-d), trained from scratch"
