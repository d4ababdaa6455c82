"""Export built configs in the Hugging Face Hub layout: Parquet shards plus a dataset card.

Layout (the one ``DatasetDict.push_to_hub(config_name=...)`` produces)::

    <folder>/README.md                                   card; YAML ``configs:`` + ``dataset_info:``
    <folder>/<config>/<split>-00000-of-00001.parquet     image bytes embedded

so ``datasets.load_dataset(folder_or_repo, config)`` needs no code. The folder is uploaded as it is by
:func:`push_folder_to_hub`, so the local build and the Hub repository are the same files.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from modeling_umgf.hub import DATASET_REPO_KEY
from modeling_umgf.schema_umgf import LABELS

from .statistics import PAPER_TABLE1, SplitStatistics, format_table1
from .twitter_mner import CITATION, LICENSE_LINK, LICENSE_NAME, LICENSE_NOTE, UMT_HOMEPAGE, ImageReport

CARD_TEMPLATE = Path(__file__).with_name("dataset_card_template.md")


def write_config(
    dataset_dict: datasets.DatasetDict, folder: Path, config_name: str, max_shard_size: int | str = "500MB"
) -> dict[str, list[dict[str, str]]]:
    """Write one config's splits as Parquet shards under ``folder/config_name``.

    Returns:
        The config's entry for the card's ``configs:`` metadata (split -> shard glob).
    """
    max_bytes = convert_file_size_to_int(max_shard_size)
    for split, dataset in dataset_dict.items():
        num_shards = max(1, math.ceil(dataset.data.nbytes / max_bytes))
        for index in range(num_shards):
            path = folder / config_name / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            dataset.shard(num_shards, index, contiguous=True).to_parquet(path)
    return {"data_files": [{"split": split, "path": f"{config_name}/{split}-*.parquet"} for split in dataset_dict]}


def write_dataset_card(
    folder: Path,
    built: Mapping[str, datasets.DatasetDict],
    data_files: Mapping[str, dict[str, list[dict[str, str]]]],
    statistics: Mapping[str, SplitStatistics],
    image_reports: Mapping[str, Mapping[str, ImageReport]],
    source: str,
    repo_id: str | None = None,
) -> Path:
    """Write ``folder/README.md``: YAML metadata for ``load_dataset`` and the human-readable card.

    Args:
        folder: export folder.
        built: config name -> built ``DatasetDict`` (for the features and split sizes).
        data_files: config name -> result of :func:`write_config`.
        statistics: Table 1 columns of the built configs.
        image_reports: config name -> split -> image report.
        source: where the text came from, for the card: a URL or a description, never a local path.
        repo_id: the Hub repo the folder is pushed to; recorded in the metadata (``DATASET_REPO_KEY``) so that a
            model trained on the local folder can name it in its card.
    """
    card_data = DatasetCardData(
        language=["en"],
        license="other",
        license_name=LICENSE_NAME,
        license_link=LICENSE_LINK,
        pretty_name="Twitter-2015 / Twitter-2017 / Twitter-2017c (multimodal NER)",
        task_categories=["token-classification"],
        task_ids=["named-entity-recognition"],
        tags=["multimodal", "image-text", "twitter", "mner"],
        **({DATASET_REPO_KEY: repo_id} if repo_id else {}),
    )
    MetadataConfigs(data_files).to_dataset_card_data(card_data)
    DatasetInfosDict(
        {name: next(iter(dataset_dict.values())).info for name, dataset_dict in built.items()}
    ).to_dataset_card_data(card_data)
    card = DatasetCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        configs=list(built),
        repo_id=repo_id,
        source=source,
        homepage=UMT_HOMEPAGE,
        labels=list(LABELS),
        table=format_table1(statistics),
        paper_table=format_table1(PAPER_TABLE1),
        image_reports={
            name: {split: report.summary() for split, report in reports.items()}
            for name, reports in image_reports.items()
        },
        license_note=LICENSE_NOTE,
        citation=CITATION,
    )
    path = folder / "README.md"
    card.save(path)
    return path


def push_folder_to_hub(folder: Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the export folder as Hub dataset ``repo_id``, creating the repo if needed.

    Parquet files of an earlier build that this one no longer has are deleted from the repo.

    Returns:
        The commit URL.
    """
    api = HfApi(token=token)
    api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    commit = api.upload_folder(
        repo_id=repo_id,
        repo_type="dataset",
        folder_path=folder,
        delete_patterns=["*.parquet"],
        commit_message="Build Twitter MNER datasets with umgf datasets_scripts",
    )
    return str(commit.commit_url)
