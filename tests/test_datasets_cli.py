"""Tests of ``python -m datasets_scripts`` (datasets_scripts.cli): build, the dataset card, the output folder
checks, the load_dataset round trip and stats."""

from __future__ import annotations

import os
import re
from pathlib import Path

import datasets
import pytest
import yaml
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image
from twitter_fixtures import (
    CONTRACT_FEATURES,
    CONTRACT_LABELS,
    FIXTURES,
    SPLIT_FILES,
    count_entities,
    expected_rows,
    export_fixture_text,
    parse_fixture,
    undecoded_rows,
    write_image,
)

from datasets_scripts import cli


def read_card_yaml(folder: Path) -> dict:
    return yaml.safe_load((folder / "README.md").read_text(encoding="utf-8").split("---\n")[1])


def test_cli_build_round_trip_and_stats(
    built: dict, image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    cli.main(
        [
            "build",
            "--data_dir",
            str(FIXTURES),
            "--image_dir_2017",
            str(image_dir),
            "--output_dir",
            str(out),
            "--max_shard_size",
            "1KB",
        ]
    )
    configs = ["twitter2015", "twitter2017", "twitter2017c"]
    card = read_card_yaml(out)
    assert [c["config_name"] for c in card["configs"]] == configs
    assert card["configs"][2]["data_files"][1] == {"split": "validation", "path": "twitter2017c/validation-*.parquet"}
    assert len(list((out / "twitter2017").glob("train-*.parquet"))) > 1  # 1KB shards: sharding exercised
    for config in configs:
        loaded = datasets.load_dataset(str(out), config, cache_dir=str(tmp_path / "hf_cache"))
        assert list(loaded) == ["train", "validation", "test"]
        for split, dataset in loaded.items():
            assert dataset.features == CONTRACT_FEATURES
            assert undecoded_rows(dataset) == undecoded_rows(built[config][0][split])
            assert undecoded_rows(dataset) == expected_rows(
                config, split, None if config == "twitter2015" else image_dir
            )
    build_output = capsys.readouterr().out
    assert "twitter2017 train: 4 tweets: 1 images found, 1 missing, 1 unreadable, 1 blank placeholders" in build_output
    card_text = (out / "README.md").read_text(encoding="utf-8")
    assert (
        "  - validation: 2 tweets: 1 images found, 0 missing, 1 unreadable, 0 blank placeholders; 1 tweets dropped"
        in (card_text)
    )

    cli.main(["stats", str(out)])
    table = capsys.readouterr().out.splitlines()
    columns = [(c, s) for c in configs for s in SPLIT_FILES]
    assert table[0] == "| Entity type | " + " | ".join(f"{c} {s}" for c, s in columns) + " |"
    counts = []
    for config, split in columns:
        tags = [[CONTRACT_LABELS[i] for i in r["ner_tags"]] for r in expected_rows(config, split, image_dir)]
        counts.append((count_entities(tags), len(tags)))
    for row, key in (("Person", "PER"), ("Location", "LOC"), ("Organization", "ORG"), ("Misc.", "MISC")):
        assert f"| {row} | " + " | ".join(str(c[0][0][key]) for c in counts) + " |" in table
    assert "| Total | " + " | ".join(str(sum(c[0][0].values())) for c in counts) + " |" in table
    assert "| of which start with I- | " + " | ".join(str(c[0][1]) for c in counts) + " |" in table
    tweets_row = "| Tweets | " + " | ".join(str(c[1]) for c in counts) + " |"
    assert tweets_row in table
    assert tweets_row in card_text


def test_dataset_card_names_no_local_path_records_its_repo_and_has_a_valid_licence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    pushed = export_fixture_text(out, "twitter2015", "--push_to_hub", "someone/twitter-mner", monkeypatch=monkeypatch)
    assert pushed == [(out, "someone/twitter-mner")]
    text = (out / "README.md").read_text(encoding="utf-8")
    assert not any(local in text for local in (str(FIXTURES), str(FIXTURES.resolve()), str(tmp_path)))
    assert "- `twitter2015`: a local copy of its `data/` folder" in text
    card = DatasetCard.load(out / "README.md")
    DatasetCardData(**card.data.to_dict())
    assert (card.data.license, card.data.license_name, card.data.license_link) == (
        "other",
        "twitter-mner-research-only",
        "https://x.com/en/tos",
    )
    assert re.fullmatch(r"[a-z0-9][a-z0-9.-]*", card.data.license_name)  # a licence id, as the Hub asks for
    assert card.data.hub_repo_id == "someone/twitter-mner"
    assert 'load_dataset("someone/twitter-mner", "twitter2015")' in text
    assert "@inproceedings{zhang2021multimodal," in text  # Twitter-2017c and this project come from UMGF

    export_fixture_text(out, "twitter2015", "--overwrite")  # no --push_to_hub: no repo recorded
    assert "hub_repo_id" not in DatasetCard.load(out / "README.md").data.to_dict()


def test_cli_without_images_skips_2017c_loudly(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    cli.main(["build", "--data_dir", str(FIXTURES), "--output_dir", str(out)])
    assert "SKIPPED twitter2017c cannot be built without --image_dir_2017" in capsys.readouterr().err
    assert [c["config_name"] for c in read_card_yaml(out)["configs"]] == ["twitter2015", "twitter2017"]
    assert not (out / "twitter2017c").exists()

    with pytest.raises(SystemExit) as caught:
        cli.main(
            ["build", "--data_dir", str(FIXTURES), "--output_dir", str(tmp_path / "c"), "--configs", "twitter2017c"]
        )
    assert caught.value.code == 2
    assert "twitter2017c cannot be built without --image_dir_2017" in capsys.readouterr().err


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def copy_fixtures(data_dir: Path) -> Path:
    for path in FIXTURES.glob("*/*.txt"):
        (data_dir / path.parent.name).mkdir(parents=True, exist_ok=True)
        (data_dir / path.parent.name / path.name).write_bytes(path.read_bytes())
    return data_dir


def build_all(out: Path, image_dir: Path) -> None:
    cli.main(["build", "--data_dir", str(FIXTURES), "--image_dir_2017", str(image_dir), "--output_dir", str(out)])


def test_cli_refuses_a_non_empty_folder_and_files_no_build_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    (out / ".git").mkdir(parents=True)
    args = ["build", "--data_dir", str(FIXTURES), "--output_dir", str(out), "--configs", "twitter2015"]
    cli.main(args)
    with pytest.raises(SystemExit):
        cli.main(args)
    assert "is not empty (use --overwrite" in capsys.readouterr().err
    cli.main([*args, "--overwrite"])
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == [
        ".git",
        "README.md",
        "twitter2015",
        "twitter2015/test-00000-of-00001.parquet",
        "twitter2015/train-00000-of-00001.parquet",
        "twitter2015/validation-00000-of-00001.parquet",
    ]
    (out / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit):
        cli.main([*args, "--overwrite"])
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (out / "notes.txt").read_text() == "mine"
    assert [p.name for p in tmp_path.iterdir()] == ["export"]  # no staging folder left beside it


def test_overwrite_replaces_only_the_configs_it_builds(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    build_all(out, image_dir)
    before, card_before = files_of(out), read_card_yaml(out)
    data_dir = copy_fixtures(tmp_path / "data")  # the new Twitter-2015 test split has one tweet only
    new_test = data_dir / "twitter2015" / "test.txt"
    new_test.write_text(new_test.read_text(encoding="utf-8").split("\n\n")[0] + "\n", encoding="utf-8")
    capsys.readouterr()
    cli.main(
        ["build", "--data_dir", str(data_dir), "--output_dir", str(out), "--configs", "twitter2015", "--overwrite"]
    )
    assert "kept from the previous export: twitter2017, twitter2017c" in capsys.readouterr().out

    after = files_of(out)
    kept = {name: data for name, data in before.items() if name.startswith("twitter2017")}
    assert {name: data for name, data in after.items() if name.startswith("twitter2017")} == kept
    assert after["twitter2015/test-00000-of-00001.parquet"] != before["twitter2015/test-00000-of-00001.parquet"]
    card = read_card_yaml(out)
    assert card["configs"] == card_before["configs"]
    infos = {info["config_name"]: info for info in card["dataset_info"]}
    infos_before = {info["config_name"]: info for info in card_before["dataset_info"]}
    assert {name: infos[name] for name in ("twitter2017", "twitter2017c")} == {
        name: infos_before[name] for name in ("twitter2017", "twitter2017c")
    }
    new_counts = {split: len(parse_fixture(data_dir / "twitter2015" / name)) for split, name in SPLIT_FILES.items()}
    assert new_counts["test"] == 1
    assert {s["name"]: s["num_examples"] for s in infos["twitter2015"]["splits"]} == new_counts
    assert card["build_reports"]["twitter2015"]["text"] == "a local copy of its `data/` folder"  # never the path
    assert card["build_reports"]["twitter2017c"] == card_before["build_reports"]["twitter2017c"]

    cache = str(tmp_path / "hf_cache")
    for config in ("twitter2017", "twitter2017c"):
        for split, dataset in datasets.load_dataset(str(out), config, cache_dir=cache).items():
            assert undecoded_rows(dataset) == expected_rows(config, split, image_dir)
    rebuilt = datasets.load_dataset(str(out), "twitter2015", cache_dir=cache)["test"]
    assert [row["image_id"] for row in rebuilt] == [parse_fixture(new_test)[0]["image_id"]]
    card_text = (out / "README.md").read_text(encoding="utf-8")
    tags = [
        [[CONTRACT_LABELS[i] for i in r["ner_tags"]] for r in expected_rows(config, split, image_dir)]
        for config in ("twitter2017", "twitter2017c")
        for split in SPLIT_FILES
    ]
    tweets = [*(str(count) for count in new_counts.values()), *(str(len(t)) for t in tags)]
    assert "| Tweets | " + " | ".join(tweets) + " |" in card_text
    assert (
        "  - validation: 2 tweets: 1 images found, 0 missing, 1 unreadable, 0 blank placeholders; 1 tweets dropped"
        in (card_text)
    )
    assert (
        "  - `twitter2015`: a local copy of its `data/` folder\n  - `twitter2017`: a local copy of its `data/` folder\n"
        in card_text
    )


def test_kept_configs_of_a_card_without_build_reports_say_not_recorded(image_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "export"
    build_all(out, image_dir)
    text = (out / "README.md").read_text(encoding="utf-8")
    start = text.index("build_reports:")
    end = text.index("\n", text.index("configs:", start) - 1)
    (out / "README.md").write_text(text[:start] + text[end + 1 :], encoding="utf-8")
    assert "build_reports" not in read_card_yaml(out)
    cli.main(
        ["build", "--data_dir", str(FIXTURES), "--output_dir", str(out), "--configs", "twitter2015", "--overwrite"]
    )
    reports = read_card_yaml(out)["build_reports"]
    not_recorded = "not recorded (the card of the previous export predates build reports)"
    assert reports["twitter2017"] == {"text": not_recorded, "images": dict.fromkeys(SPLIT_FILES, not_recorded)}
    assert reports["twitter2015"]["text"] == "a local copy of its `data/` folder"


def test_a_config_the_card_does_not_describe_is_not_kept_silently(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    (out / "twitter2017").mkdir(parents=True)
    (out / "twitter2017" / "train-00000-of-00001.parquet").write_bytes(b"stale")
    args = ["build", "--data_dir", str(FIXTURES), "--output_dir", str(out), "--configs", "twitter2015", "--overwrite"]
    with pytest.raises(SystemExit) as caught:
        cli.main(args)
    assert caught.value.code == 1
    assert f"{out} holds ['twitter2017'] but no README.md to describe them" in capsys.readouterr().err
    assert files_of(out) == {"twitter2017/train-00000-of-00001.parquet": b"stale"}


def test_a_build_that_fails_midway_leaves_the_previous_export_intact(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "export"
    build_all(out, image_dir)
    before = files_of(out)
    data_dir = copy_fixtures(tmp_path / "data")
    (data_dir / "twitter2017" / "test.txt").write_bytes(b"IMGID:9\nok\tO\nbad\tB-XYZ\n")
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        cli.main(
            [
                "build",
                "--data_dir",
                str(data_dir),
                "--image_dir_2017",
                str(image_dir),
                "--output_dir",
                str(out),
                "--overwrite",
            ]
        )
    assert caught.value.code == 1
    captured = capsys.readouterr()
    assert "twitter2015 test: 2 tweets" in captured.out  # twitter2015 was built and written before the failure
    assert f"{data_dir / 'twitter2017' / 'test.txt'}, line 3: unknown tag 'B-XYZ'" in captured.err
    assert files_of(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "export"]  # the staging folder is gone


def test_build_run_from_inside_the_image_folder_embeds_the_image_bytes(
    image_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "export"
    monkeypatch.chdir(image_dir)
    cli.main(["build", "--data_dir", str(FIXTURES), "--image_dir_2017", ".", "--output_dir", str(out)])
    monkeypatch.chdir(tmp_path)
    for config in ("twitter2017", "twitter2017c"):
        loaded = datasets.load_dataset(str(out), config, cache_dir=str(tmp_path / "hf_cache"))
        for split, dataset in loaded.items():
            rows = undecoded_rows(dataset)
            assert rows == expected_rows(config, split, image_dir)
            assert all(row["image"]["bytes"] for row in rows if row["image"] is not None)
    row = datasets.load_dataset(str(out), "twitter2017c", split="test", cache_dir=str(tmp_path / "hf_cache"))[0]
    with Image.open(image_dir / f"{row['image_id']}.jpg") as original:
        assert list(row["image"].get_flattened_data()) == list(original.get_flattened_data())


def test_cli_reports_format_error_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "data" / "twitter2015"
    bad.mkdir(parents=True)
    for name in SPLIT_FILES.values():
        (bad / name).write_bytes(b"IMGID:1\nonly-a-word\n")
    with pytest.raises(SystemExit) as caught:
        cli.main(
            [
                "build",
                "--data_dir",
                str(tmp_path / "data"),
                "--output_dir",
                str(tmp_path / "o"),
                "--configs",
                "twitter2015",
            ]
        )
    assert caught.value.code == 1
    assert f"{bad / 'train.txt'}, line 2: expected 'word<TAB>TAG'" in capsys.readouterr().err


def run_build(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int | str | None, str, str]:
    """Run ``python -m datasets_scripts build ARGS`` expecting it to stop: its exit code, stdout and the last line of
    stderr (after the progress bars)."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as caught:
        cli.main(["build", *args])
    captured = capsys.readouterr()
    return caught.value.code, captured.out, captured.err.rstrip("\n").rsplit("\n", 1)[-1]


def test_cli_names_an_empty_split_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data_dir = copy_fixtures(tmp_path / "data")
    empty = data_dir / "twitter2015" / "valid.txt"
    empty.write_bytes(b"")
    out = tmp_path / "o"
    code, _, err = run_build(capsys, "--data_dir", str(data_dir), "--output_dir", str(out), "--configs", "twitter2015")
    assert (code, err) == (1, f"error: {empty}: the file holds no tweet (it is empty)")
    assert not out.exists()


def test_cli_names_the_line_of_an_image_id_that_leaves_the_image_folder(
    image_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = copy_fixtures(tmp_path / "data")
    images = tmp_path / "images"
    images.mkdir()
    write_image(tmp_path / "secret.jpg", "good")  # what ../secret would read
    test_file = data_dir / "twitter2017" / "test.txt"
    test_file.write_bytes(test_file.read_bytes() + b"\nIMGID:../secret\nx\tO\n")
    line = test_file.read_bytes().count(b"\n") - 1
    args = ["--data_dir", str(data_dir), "--image_dir_2017", str(images), "--output_dir", str(tmp_path / "o")]
    code, _, err = run_build(capsys, *args, "--configs", "twitter2017")
    assert code == 1
    assert err.startswith(f"error: {test_file}, line {line}: image id '../secret' is not a plain file name")


def test_cli_says_when_twitter2017c_keeps_no_tweet_of_a_split(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images = tmp_path / "not_the_images"
    images.mkdir()
    args = ["--data_dir", str(FIXTURES), "--image_dir_2017", str(images), "--output_dir", str(tmp_path / "o")]
    code, _, err = run_build(capsys, *args, "--configs", "twitter2017c")
    train = FIXTURES / "twitter2017" / "train.txt"
    tweets = len(parse_fixture(train))
    assert code == 1
    assert err.startswith(
        f"error: twitter2017c train: none of the {tweets} tweets of {train} has a usable image in {images} "
        f"({tweets} tweets: 0 images found, {tweets} missing"
    )


BAD_OUTPUT_FOLDERS = {
    "a-file": lambda tmp: tmp / "file.txt",
    "under-a-file": lambda tmp: tmp / "file.txt" / "export",
    "proc": lambda tmp: Path("/proc/umgf-test-export"),
    "sys": lambda tmp: Path("/sys/umgf-test-export"),
}


@pytest.mark.parametrize("case", list(BAD_OUTPUT_FOLDERS))
def test_cli_refuses_an_output_folder_it_cannot_write_before_building(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str
) -> None:
    if case == "sys" and not Path("/sys").is_dir():
        pytest.skip("no /sys here")
    (tmp_path / "file.txt").write_text("not a folder")
    out = BAD_OUTPUT_FOLDERS[case](tmp_path)
    code, stdout, err = run_build(capsys, "--data_dir", str(FIXTURES), "--output_dir", str(out))
    assert code == 1
    assert err.startswith(f"error: output folder {out}")
    if case.endswith("file"):
        assert f"{tmp_path / 'file.txt'} is a file, not a folder" in err
    else:
        assert f"cannot write in {out.parent}: " in err
    assert "tweets" not in stdout  # nothing was built
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_cli_refuses_a_read_only_output_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "export"
    out.mkdir()
    out.chmod(0o555)
    try:
        code, _, err = run_build(capsys, "--data_dir", str(FIXTURES), "--output_dir", str(out))
    finally:
        out.chmod(0o755)
    assert (code, err) == (1, f"error: output folder {out}: cannot write in {out}: Permission denied")
