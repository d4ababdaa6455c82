"""The data of a training run: train / validation / test splits with the dataset columns of CONTRACT.md, from the
UMT release text (+ an image folder), a dataset exported by ``python -m datasets_scripts build`` (folder or Hub
repo), or the built-in synthetic task."""

from __future__ import annotations

import logging
from pathlib import Path

import datasets

from datasets_scripts.hub_layout import check_parquet_shards
from datasets_scripts.synthetic import SyntheticMNERConfig, build_synthetic_dataset

from ..schema import GROUNDING_COLUMNS

logger = logging.getLogger(__name__)


def load_splits(
    config_name: str | None,
    *,
    umt_data_dir: Path | None = None,
    dataset_name: str | None = None,
    image_dir: Path | None = None,
    synthetic_sizes: tuple[int, int, int] | None = None,
    columns: dict[str, str | None] | None = None,
) -> datasets.DatasetDict:
    """The train / validation / test splits of ``config_name``: from ``umt_data_dir`` (images from ``image_dir``),
    ``dataset_name`` (``columns`` renames the dataset's own columns to tokens / ner_tags), or else the synthetic
    task of ``synthetic_sizes`` sentences per split."""
    if umt_data_dir is not None:
        from datasets_scripts.twitter_mner import build_dataset

        if config_name is None:
            raise ValueError("the UMT data needs a config name (twitter2015, twitter2017 or twitter2017c)")
        dataset, reports = build_dataset(config_name, data_dir=umt_data_dir, image_dir=image_dir)
        for split, report in reports.items():
            logger.info(f"{config_name} {split}: {report.summary()}")
    elif dataset_name is not None:
        if Path(dataset_name).is_dir():
            check_parquet_shards(dataset_name)  # a lost shard would silently train on fewer rows
        dataset = datasets.load_dataset(dataset_name, config_name)
        for split in dataset:
            for column, name in (columns or {}).items():
                if column and column != name:
                    if column not in dataset[split].column_names:
                        raise ValueError(f"--dataset_name {dataset_name}: split {split} has no column {column!r}")
                    dataset[split] = dataset[split].rename_column(column, name)
    else:
        sizes = dict(zip(("train_size", "validation_size", "test_size"), synthetic_sizes or ()))
        return build_synthetic_dataset(SyntheticMNERConfig(**sizes))
    missing = {"train", "validation", "test"} - set(dataset)
    if missing:
        raise ValueError(f"dataset {config_name!r} lacks the splits {sorted(missing)}")
    return dataset


def dataset_config(dataset_name: str | None, config_name: str | None) -> str | None:
    """The config to load: ``config_name``, or the only config of ``dataset_name``."""
    if config_name or dataset_name is None:
        return config_name
    names = datasets.get_dataset_config_names(dataset_name)
    if len(names) > 1:
        raise ValueError(f"--dataset_name {dataset_name} has the configs {names}: pick one with --dataset_config_name")
    return names[0] if names else None


def label_names_of(dataset: datasets.Dataset) -> list[str]:
    """The tag names of the dataset's ``ner_tags`` column."""
    inner = getattr(dataset.features["ner_tags"], "feature", None)
    if not isinstance(inner, datasets.ClassLabel):
        raise ValueError("the dataset's ner_tags must be a list of datasets.ClassLabel (CONTRACT.md)")
    return list(inner.names)


def limit(dataset: datasets.Dataset, count: int | None) -> datasets.Dataset:
    """The first ``count`` sentences, with a check that the ``id`` column names every sentence once
    (predictions are matched to gold sentences by id)."""
    dataset = dataset.select(range(min(count, len(dataset)))) if count else dataset
    ids = dataset["id"] if "id" in dataset.column_names else []
    if len(set(ids)) != len(dataset):
        raise ValueError(
            f"the dataset's 'id' column must hold a unique id per sentence ({len(set(ids))} ids for "
            f"{len(dataset)} sentences)"
        )
    return dataset


def without_images(dataset: datasets.Dataset) -> datasets.Dataset:
    """The same sentences with no image and no grounding: every example has zero objects."""
    return dataset.remove_columns([c for c in ("image", *GROUNDING_COLUMNS) if c in dataset.column_names])


def has_images(dataset: datasets.Dataset) -> bool:
    """Whether any sentence of ``dataset`` has an image (the Arrow column's null count: no image is decoded)."""
    if "image" not in dataset.column_names or len(dataset) == 0:
        return False
    column = dataset.with_format("arrow")["image"]
    return column.null_count < len(column)
