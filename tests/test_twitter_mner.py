"""Tests of datasets_scripts.twitter_mner: the builder configs, their rows and features, the images and the
download path (offline: a patched DownloadManager)."""

from __future__ import annotations

import re
from pathlib import Path

import datasets
import pytest
from PIL import Image
from twitter_fixtures import (
    CONTRACT_FEATURES,
    FIXTURES,
    IMAGE_PLAN,
    SPLIT_FILES,
    expected_rows,
    expected_split,
    undecoded_rows,
)

from datasets_scripts.twitter_mner import FEATURES, build_dataset


@pytest.mark.parametrize("config", ["twitter2015", "twitter2017", "twitter2017c"])
def test_builder_rows_and_features(built: dict, image_dir: Path, config: str) -> None:
    dataset_dict, _ = built[config]
    assert FEATURES == CONTRACT_FEATURES
    assert list(dataset_dict) == ["train", "validation", "test"]
    for split, dataset in dataset_dict.items():
        assert dataset.features == CONTRACT_FEATURES
        images = None if config == "twitter2015" else image_dir
        assert undecoded_rows(dataset) == expected_rows(config, split, images)


def test_image_reports_count_each_case_per_split(built: dict) -> None:
    plan_ids = {split: [row["image_id"] for row in expected_split("twitter2017", split)] for split in SPLIT_FILES}
    for config in ("twitter2017", "twitter2017c"):
        reports = built[config][1]
        assert list(reports) == list(SPLIT_FILES)
        for split, ids in plan_ids.items():
            report = reports[split]
            assert report.tweets == len(ids)
            assert report.found == sum(IMAGE_PLAN.get(i) == "good" for i in ids)
            assert report.missing_ids == [i for i in ids if i not in IMAGE_PLAN]
            assert report.unreadable_ids == [i for i in ids if IMAGE_PLAN.get(i) in ("garbage", "truncated")]
            assert report.blank_ids == [i for i in ids if IMAGE_PLAN.get(i) == "blank"]
            dropped = sum(IMAGE_PLAN.get(i) != "good" for i in ids) if config == "twitter2017c" else 0
            assert report.dropped == dropped
    train = built["twitter2017"][1]["train"]
    assert train.summary() == "4 tweets: 1 images found, 1 missing, 1 unreadable, 1 blank placeholders"
    assert built["twitter2017c"][1]["train"].summary() == f"{train.summary()}; 3 tweets dropped"
    no_folder = built["twitter2015"][1]["test"]
    assert (no_folder.tweets, no_folder.found, no_folder.missing_ids) == (2, 0, [])
    assert no_folder.summary() == "2 tweets, no image folder given: image is null for all"


def test_decoded_image_matches_the_file(built: dict, image_dir: Path) -> None:
    row = built["twitter2017"][0]["test"][0]
    with Image.open(image_dir / "O_7.jpg") as original:
        assert row["image"].size == original.size
        assert list(row["image"].get_flattened_data()) == list(original.get_flattened_data())


def test_2017c_requires_an_image_folder(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="twitter2017c cannot be built without an image folder"):
        build_dataset("twitter2017c", FIXTURES, None, tmp_path)


def test_missing_image_folder_is_an_error_with_instructions(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"(?s)does not exist.*download the archive"):
        build_dataset("twitter2017", FIXTURES, tmp_path / "nowhere", tmp_path / "cache")


def test_missing_release_file_is_an_error_naming_it(tmp_path: Path) -> None:
    expected = tmp_path / "twitter2015" / "train.txt"
    with pytest.raises(
        FileNotFoundError, match=re.escape(f"{expected} not found: data_dir must be the UMT data/ folder")
    ):
        build_dataset("twitter2015", tmp_path, None, tmp_path / "cache")


def test_download_path_requests_umt_github_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requested: list[str] = []

    def fake_download(self: datasets.DownloadManager, url_or_urls: dict[str, str]) -> dict[str, str]:
        requested.extend(url_or_urls.values())
        return {split: str(FIXTURES / url.split("/data/")[1]) for split, url in url_or_urls.items()}

    monkeypatch.setattr(datasets.DownloadManager, "download", fake_download)
    dataset_dict, _ = build_dataset("twitter2015", None, None, tmp_path)
    base = "https://raw.githubusercontent.com/jefferyYu/UMT/master/data/twitter2015/"
    assert requested == [base + "train.txt", base + "valid.txt", base + "test.txt"]
    assert undecoded_rows(dataset_dict["validation"]) == expected_rows("twitter2015", "validation", None)
