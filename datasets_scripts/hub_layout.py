"""Export built configs in the Hugging Face Hub layout: Parquet shards plus a dataset card.

Layout (the one ``DatasetDict.push_to_hub(config_name=...)`` produces)::

    <folder>/README.md                                   card; YAML ``configs:`` + ``dataset_info:``
    <folder>/<config>/<split>-00000-of-00001.parquet     image bytes embedded

so ``datasets.load_dataset(folder_or_repo, config)`` needs no code. The folder is uploaded as it is by
:func:`push_folder_to_hub`, so the local build and the Hub repository are the same files.

The card describes every config in the folder: the ones just built and the ones a build kept from the previous
export (:func:`read_exported_configs` reads those back: their ``configs:`` and ``dataset_info:`` entries from the old
card, their Table 1 from their Parquet shards, where their text came from and their image report from the card's
``build_reports`` field). Fallback: a card written before ``build_reports`` existed has no image report nor text
source for a config; the new card says "not recorded" there.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
from datasets.info import DatasetInfosDict
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData, HfApi

from modeling_umgf.schema import LABELS
from modeling_umgf.tools.hub import DATASET_REPO_KEY

from .output_folder import OutputFolderError
from .statistics import PAPER_TABLE1, SplitStatistics, config_statistics, format_table1
from .twitter_mner import CITATION, LICENSE_LINK, LICENSE_NAME, LICENSE_NOTE, UMT_HOMEPAGE, ImageReport

CARD_TEMPLATE = Path(__file__).with_name("dataset_card_template.md")
BUILD_REPORTS = "build_reports"
"""Card metadata field: config -> ``{"text": where the text came from, "images": {split: image report}}``."""
NOT_RECORDED = "not recorded (the card of the previous export predates build reports)"


@dataclass
class ExportedConfig:
    """What the dataset card says about one config of an export.

    Attributes:
        info: the config's ``DatasetInfo`` (features, split sizes: the card's ``dataset_info:`` entry).
        data_files: the config's ``configs:`` entry (split -> shard glob, as :func:`write_config` returns it).
        statistics: its Table 1 columns (:func:`~datasets_scripts.statistics.config_statistics`).
        text_source: where its text was read from.
        image_summaries: split -> :meth:`ImageReport.summary`.
    """

    info: datasets.DatasetInfo
    data_files: dict[str, list[dict[str, str]]]
    statistics: dict[str, SplitStatistics]
    text_source: str
    image_summaries: dict[str, str]

    @classmethod
    def built(
        cls,
        name: str,
        dataset_dict: datasets.DatasetDict,
        data_files: dict[str, list[dict[str, str]]],
        image_reports: Mapping[str, ImageReport],
        text_source: str,
    ) -> ExportedConfig:
        """The card entry of a config just built and written with :func:`write_config`."""
        return cls(
            info=next(iter(dataset_dict.values())).info,
            data_files=data_files,
            statistics=config_statistics(name, dataset_dict),
            text_source=text_source,
            image_summaries={split: report.summary() for split, report in image_reports.items()},
        )


def table1_columns(configs: Mapping[str, ExportedConfig]) -> dict[str, SplitStatistics]:
    """The Table 1 columns of all ``configs``, in their order."""
    return {column: statistics for config in configs.values() for column, statistics in config.statistics.items()}


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
        if num_shards > len(dataset):  # a shard cannot hold less than one row
            raise OutputFolderError(
                f"--max_shard_size {max_shard_size} is smaller than one row of {config_name} {split} "
                f"({dataset.data.nbytes // max(1, len(dataset))} bytes per row on average): give a larger size"
            )
        for index in range(num_shards):
            path = folder / config_name / f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
            path.parent.mkdir(parents=True, exist_ok=True)
            dataset.shard(num_shards, index, contiguous=True).to_parquet(path)
    return {"data_files": [{"split": split, "path": f"{config_name}/{split}-*.parquet"} for split in dataset_dict]}


SHARD_NAME = re.compile(r"(?P<split>.+)-(?P<index>\d{5})-of-(?P<count>\d{5})\.parquet")
"""The names `write_config` gives Parquet shards: ``<split>-<index>-of-<count>.parquet``."""


def check_parquet_shards(folder: str | Path) -> None:
    """Raise `OutputFolderError` naming the file when a Parquet file under ``folder`` cannot be read (truncated or
    corrupt: its footer is read) or a shard of a ``<split>-<i>-of-<n>.parquet`` set is missing (a glob would
    silently load fewer rows). A folder without Parquet files passes."""
    import pyarrow.parquet as pq

    shards: dict[tuple[Path, str, int], set[int]] = {}
    for path in sorted(Path(folder).rglob("*.parquet")):
        try:
            pq.read_metadata(path)
        except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
            raise OutputFolderError(f"{path}: not a readable Parquet file (truncated or corrupt): {error}") from None
        match = SHARD_NAME.fullmatch(path.name)
        if match:
            key = (path.parent, match["split"], int(match["count"]))
            shards.setdefault(key, set()).add(int(match["index"]))
    for (parent, split, count), found in shards.items():
        missing = sorted(set(range(count)) - found)
        if missing:
            names = [f"{split}-{index:05d}-of-{count:05d}.parquet" for index in missing]
            raise OutputFolderError(f"{parent} lacks the shards {names} of split {split}: the data set is incomplete")


def read_exported_configs(
    folder: Path, names: Sequence[str], cache_dir: str | None = None
) -> dict[str, ExportedConfig]:
    """The card entries of configs ``names`` of the export in ``folder``, read back from its card and Parquet shards.

    Raises:
        OutputFolderError: the folder has no card, its card does not describe one of ``names``, or a config cannot
            be loaded with ``datasets.load_dataset(folder, name)``.
    """
    card_path = folder / "README.md"
    if not card_path.is_file():
        raise OutputFolderError(
            f"{folder} holds {list(names)} but no README.md to describe them: rebuild them too (--configs) or "
            "remove them"
        )
    card_data = DatasetCard.load(card_path).data
    data_files = MetadataConfigs.from_dataset_card_data(card_data)
    infos = DatasetInfosDict.from_dataset_card_data(card_data)
    reports = card_data.get(BUILD_REPORTS) or {}
    undescribed = [name for name in names if name not in data_files or name not in infos]
    if undescribed:
        raise OutputFolderError(
            f"{card_path} does not describe {undescribed}, which {folder} holds: rebuild them too (--configs) or "
            "remove them"
        )
    exported = {}
    for name in names:
        try:
            tags = datasets.load_dataset(str(folder), name, columns=["ner_tags"], cache_dir=cache_dir)
        except Exception as error:  # any failure to load it: the kept config would be broken
            raise OutputFolderError(f"config {name} of {folder} cannot be loaded back to keep it: {error}") from error
        report = reports.get(name, {})
        exported[name] = ExportedConfig(
            info=infos[name],
            data_files=data_files[name],
            statistics=config_statistics(name, tags),
            text_source=report.get("text", NOT_RECORDED),
            image_summaries=report.get("images", dict.fromkeys(tags, NOT_RECORDED)),
        )
    return exported


def write_dataset_card(folder: Path, configs: Mapping[str, ExportedConfig], repo_id: str | None = None) -> Path:
    """Write ``folder/README.md``: YAML metadata for ``load_dataset`` and the human-readable card of ``configs``
    (config name -> :class:`ExportedConfig`, in the order the card lists them). ``repo_id``: the Hub repo the folder
    is pushed to, recorded in the metadata (``DATASET_REPO_KEY``) so that a model trained on the local folder can
    name it in its card."""
    extra: dict[str, Any] = {
        **({DATASET_REPO_KEY: repo_id} if repo_id else {}),
        BUILD_REPORTS: {
            name: {"text": config.text_source, "images": config.image_summaries} for name, config in configs.items()
        },
    }
    card_data = DatasetCardData(
        language=["en"],
        license="other",
        license_name=LICENSE_NAME,
        license_link=LICENSE_LINK,
        pretty_name="Twitter-2015 / Twitter-2017 / Twitter-2017c (multimodal NER)",
        task_categories=["token-classification"],
        task_ids=["named-entity-recognition"],
        tags=["multimodal", "image-text", "twitter", "mner"],
        **extra,
    )
    MetadataConfigs({name: config.data_files for name, config in configs.items()}).to_dataset_card_data(card_data)
    DatasetInfosDict({name: config.info for name, config in configs.items()}).to_dataset_card_data(card_data)
    card = DatasetCard.from_template(
        card_data,
        template_path=str(CARD_TEMPLATE),
        configs=list(configs),
        repo_id=repo_id,
        sources={name: config.text_source for name, config in configs.items()},
        homepage=UMT_HOMEPAGE,
        labels=list(LABELS),
        table=format_table1(table1_columns(configs)),
        paper_table=format_table1(PAPER_TABLE1),
        image_reports={name: config.image_summaries for name, config in configs.items()},
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
