"""Tests of datasets_scripts.hub_layout: Parquet shards, their checks and the upload to the Hub."""

from __future__ import annotations

from pathlib import Path

import datasets
import pytest
from twitter_fixtures import FIXTURES, undecoded_rows

from datasets_scripts import cli, hub_layout
from datasets_scripts.output_folder import OutputFolderError


def test_push_to_hub_uploads_the_export_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict]] = []

    class Commit:
        commit_url = "https://huggingface.co/datasets/me/twitter-mner/commit/abc"

    def create_repo(self, repo_id: str, **kwargs) -> None:
        calls.append(("create_repo", {"repo_id": repo_id, **kwargs}))

    def upload_folder(self, **kwargs) -> Commit:
        calls.append(("upload_folder", kwargs))
        return Commit()

    monkeypatch.setattr(hub_layout.HfApi, "create_repo", create_repo)
    monkeypatch.setattr(hub_layout.HfApi, "upload_folder", upload_folder)
    out = tmp_path / "export"
    cli.main(
        [
            "build",
            "--data_dir",
            str(FIXTURES),
            "--output_dir",
            str(out),
            "--configs",
            "twitter2015",
            "--push_to_hub",
            "me/twitter-mner",
            "--private",
        ]
    )
    assert calls[0] == (
        "create_repo",
        {"repo_id": "me/twitter-mner", "repo_type": "dataset", "private": True, "exist_ok": True},
    )
    name, upload = calls[1]
    assert (name, upload["repo_id"], upload["repo_type"], Path(upload["folder_path"])) == (
        "upload_folder",
        "me/twitter-mner",
        "dataset",
        out,
    )
    assert upload["delete_patterns"] == ["*.parquet"]
    assert len(calls) == 2


def test_write_config_shards_are_complete_and_numbered(built: dict, tmp_path: Path) -> None:
    dataset_dict = built["twitter2017"][0]
    hub_layout.write_config(dataset_dict, tmp_path, "twitter2017", 2000)
    for split, dataset in dataset_dict.items():
        shards = sorted((tmp_path / "twitter2017").glob(f"{split}-*.parquet"))
        count = len(shards)
        assert [p.name for p in shards] == [f"{split}-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
        rows = [
            row
            for p in shards
            for row in undecoded_rows(datasets.Dataset.from_parquet(str(p), cache_dir=str(tmp_path / "cache")))
        ]
        assert rows == undecoded_rows(dataset)


def test_a_shard_size_under_one_row_is_refused(built: dict, tmp_path: Path) -> None:
    with pytest.raises(OutputFolderError, match=r"--max_shard_size 10 is smaller than one row of twitter2017 train"):
        hub_layout.write_config(built["twitter2017"][0], tmp_path, "twitter2017", 10)


@pytest.mark.parametrize("damage", ["delete", "truncate"])
def test_a_lost_or_truncated_shard_is_named(built: dict, tmp_path: Path, capsys, damage: str) -> None:
    hub_layout.write_config(built["twitter2017"][0], tmp_path, "twitter2017", "1KB")
    shards = sorted((tmp_path / "twitter2017").glob("train-*.parquet"))
    assert len(shards) > 1
    hub_layout.check_parquet_shards(tmp_path)  # complete: passes
    if damage == "delete":
        shards[1].unlink()
        message = f"lacks the shards ['{shards[1].name}'] of split train"
    else:
        shards[1].write_bytes(shards[1].read_bytes()[:100])
        message = f"{shards[1]}: not a readable Parquet file"
    with pytest.raises(SystemExit) as stopped:
        cli.main(["stats", str(tmp_path)])
    assert stopped.value.code == 1 and message in capsys.readouterr().err
