"""Tests of datasets_scripts: UMT reader, builder configs, images, Parquet/Hub export, Table 1, CLI.

Expected values come from the fixtures through a separate minimal parser and entity counter written
here, and from the image plan below, never from the code under test. Offline: the download path is
exercised with a patched DownloadManager.
"""

from __future__ import annotations

import io
import os
import re
from collections import Counter
from pathlib import Path

import datasets
import pytest
import yaml
from huggingface_hub import DatasetCard, DatasetCardData
from PIL import Image

from datasets_scripts import cli, hub_layout
from datasets_scripts.output_folder import OutputFolderError
from datasets_scripts.statistics import dataset_statistics, tag_statistics
from datasets_scripts.twitter_mner import FEATURES, build_dataset
from datasets_scripts.umt_format import TwitterFormatError, normalise_tag, read_umt_file

FIXTURES = Path(__file__).parent / "fixtures" / "twitter"
SPLIT_FILES = {"train": "train.txt", "validation": "valid.txt", "test": "test.txt"}
CONTRACT_LABELS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"]
CONTRACT_FEATURES = datasets.Features(
    {
        "id": datasets.Value("string"),
        "image_id": datasets.Value("string"),
        "tokens": datasets.List(datasets.Value("string")),
        "ner_tags": datasets.List(datasets.ClassLabel(names=CONTRACT_LABELS)),
        "image": datasets.Image(),
        "object_boxes": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
        "object_scores": datasets.List(datasets.Value("float32")),
        "object_phrases": datasets.List(datasets.Value("string")),
        "object_word_start": datasets.List(datasets.Value("int32")),
        "object_word_end": datasets.List(datasets.Value("int32")),
        "grounder": datasets.Value("string"),
    }
)
NO_GROUNDING = {
    "object_boxes": [],
    "object_scores": [],
    "object_phrases": [],
    "object_word_start": [],
    "object_word_end": [],
    "grounder": "",
}
# Twitter-2017 fixture images: what the test writes for each IMGID (absent = no file).
IMAGE_PLAN = {
    "17_01_1": "good",
    "17_01_2": "garbage",
    "17_01_4": "blank",
    "17_02_5": "good",
    "17_02_6": "truncated",
    "O_7": "good",
    "O_8": "good",
}


def parse_fixture(path: Path) -> list[dict]:
    """Independent reading of a well-formed fixture: blocks split on blank lines."""
    blocks = [block for block in path.read_text(encoding="utf-8").split("\n\n") if block.strip()]
    rows = []
    for index, block in enumerate(blocks):
        imgid_line, *token_lines = block.strip("\n").split("\n")
        words, tags = zip(*(line.split("\t") for line in token_lines), strict=True)
        rows.append(
            {
                "id": str(index),
                "image_id": imgid_line.removeprefix("IMGID:"),
                "tokens": list(words),
                "tags": [tag.replace("OTHER", "MISC") for tag in tags],
            }
        )
    return rows


def expected_split(config: str, split: str) -> list[dict]:
    return parse_fixture(FIXTURES / config.removesuffix("c") / SPLIT_FILES[split])


def count_entities(tag_sequences: list[list[str]]) -> tuple[Counter, int]:
    """Count conlleval chunk starts: B-, or I- after O / another type. Returns (per type, started with I-)."""
    per_type: Counter = Counter()
    starting_with_i = 0
    for tags in tag_sequences:
        previous = "O"
        for tag in tags:
            new_type = tag != "O" and (previous == "O" or previous[2:] != tag[2:])
            if tag.startswith("B-") or new_type:
                per_type[tag[2:]] += 1
                starting_with_i += tag.startswith("I-") and new_type
            previous = tag
    return per_type, starting_with_i


def write_image(path: Path, kind: str) -> None:
    if kind == "garbage":
        path.write_bytes(b"this is not an image")
        return
    image = Image.new("RGB", (24, 16), (40, 120, 200))
    if kind != "blank":
        image.putdata([(x * 10, y * 15, (x + y) * 5) for y in range(16) for x in range(24)])
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    data = buffer.getvalue()
    path.write_bytes(data[: len(data) // 2] if kind == "truncated" else data)


def expected_image(image_dir: Path | None, image_id: str) -> dict | None:
    if image_dir is None or IMAGE_PLAN.get(image_id) != "good":
        return None
    return {"bytes": (image_dir / f"{image_id}.jpg").read_bytes(), "path": None}


def expected_rows(config: str, split: str, image_dir: Path | None) -> list[dict]:
    rows = []
    for row in expected_split(config, split):
        image = expected_image(image_dir, row["image_id"])
        if config == "twitter2017c" and image is None:
            continue
        rows.append(
            {
                "id": row["id"],
                "image_id": row["image_id"],
                "tokens": row["tokens"],
                "ner_tags": [CONTRACT_LABELS.index(tag) for tag in row["tags"]],
                "image": image,
                **NO_GROUNDING,
            }
        )
    return rows


def undecoded_rows(dataset: datasets.Dataset) -> list[dict]:
    return dataset.cast_column("image", datasets.Image(decode=False)).to_list()


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("twitter2017_images")
    for image_id, kind in IMAGE_PLAN.items():
        write_image(folder / f"{image_id}.jpg", kind)
    return folder


@pytest.fixture(scope="module")
def built(image_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    cache = tmp_path_factory.mktemp("cache")
    return {
        "twitter2015": build_dataset("twitter2015", FIXTURES, None, cache),
        "twitter2017": build_dataset("twitter2017", FIXTURES, image_dir, cache),
        "twitter2017c": build_dataset("twitter2017c", FIXTURES, image_dir, cache),
    }


# --- reader -----------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*/*.txt")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reader_matches_independent_parse(path: Path) -> None:
    got = [
        {"id": str(t.index), "image_id": t.image_id, "tokens": t.tokens, "tags": t.tags} for t in read_umt_file(path)
    ]
    assert got == parse_fixture(path)


def test_reader_keeps_no_break_space_token_and_marks_other_as_misc() -> None:
    tweets = list(read_umt_file(FIXTURES / "twitter2015" / "valid.txt"))
    assert tweets[1].tokens == ["Morning", "in", "Old", "Harbour", "\u00a0", "#sunrise"]
    train = list(read_umt_file(FIXTURES / "twitter2015" / "train.txt"))
    assert train[1].tags == ["B-ORG", "I-ORG", "O", "B-MISC", "I-MISC"]


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("O", "O"),
        ("B-OTHER", "B-MISC"),
        ("I-OTHER", "I-MISC"),
        ("B-MISC", "B-MISC"),
        ("I-LOC", "I-LOC"),
        ("B-FOO", None),
        ("X", None),
        ("E-PER", None),
        ("o", None),
        ("B-", None),
    ],
)
def test_normalise_tag(tag: str, expected: str | None) -> None:
    assert normalise_tag(tag) == expected


def test_reader_accepts_crlf_repeated_blanks_and_imgid_without_blank(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes(b"IMGID:1\r\na\tB-PER\r\n\r\n\r\n\r\nIMGID:2\nb\tO\nIMGID:3\nc\tI-ORG\n")
    got = [(t.index, t.image_id, t.tokens, t.tags, t.line) for t in read_umt_file(path)]
    assert got == [(0, "1", ["a"], ["B-PER"], 1), (1, "2", ["b"], ["O"], 6), (2, "3", ["c"], ["I-ORG"], 8)]


@pytest.mark.parametrize("path", sorted(FIXTURES.glob("*/*.txt")), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_reader_reads_old_mac_line_endings(tmp_path: Path, path: Path) -> None:
    mac = tmp_path / path.name
    mac.write_bytes(path.read_bytes().replace(b"\n", b"\r"))
    assert b"\n" not in mac.read_bytes()
    got = [{"id": str(t.index), "image_id": t.image_id, "tokens": t.tokens, "tags": t.tags} for t in read_umt_file(mac)]
    assert got == parse_fixture(path)


@pytest.mark.parametrize(("content", "what"), [(b"", "it is empty"), (b"\n\r\n \n", "its 3 lines are blank")])
def test_a_file_without_tweets_is_an_error_naming_it(tmp_path: Path, content: bytes, what: str) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes(content)
    with pytest.raises(TwitterFormatError) as caught:
        list(read_umt_file(path))
    assert (caught.value.path, caught.value.line) == (str(path), None)
    assert str(caught.value) == f"{path}: the file holds no tweet ({what})"


@pytest.mark.parametrize(
    ("content", "line", "reason"),
    [
        (b"IMGID:1\nword O\n", 2, "expected 'word<TAB>TAG', got 'word O'"),
        (b"IMGID:1\nx\tO\ty\n", 2, "expected 'word<TAB>TAG'"),
        (b"IMGID:1\n\tO\n", 2, "expected 'word<TAB>TAG'"),
        (b"IMGID:1\nword\tB-FOO\n", 2, "unknown tag 'B-FOO'"),
        (b"IMGID:1\n\nIMGID:2\nx\tO\n", 1, "image id '1' has no tokens"),
        (b"IMGID:1\nx\tO\nIMGID:2\n", 3, "image id '2' has no tokens"),
        (b"x\tO\n", 1, "not preceded by an 'IMGID:<id>' line"),
        (b"IMGID:1\nx\tO\n\ny\tO\n", 4, "not preceded by an 'IMGID:<id>' line"),
        (b"IMGID:1\nx\tO\ncaf\xe9\tO\n", 3, "invalid UTF-8 byte 0xe9 at column 4"),
        (b"IMGID:  \nx\tO\n", 1, "empty image id"),
        (b"IMGID:1\nx\tO\n\nIMGID:../x\ny\tO\n", 4, "image id '../x' is not a plain file name"),
        (b"IMGID:..\nx\tO\n", 1, "image id '..' is not a plain file name"),
        (b"IMGID:/etc/x\nx\tO\n", 1, "image id '/etc/x' is not a plain file name"),
        (b"IMGID:a\x00b\nx\tO\n", 1, "image id 'a\\x00b' is not a plain file name"),
    ],
    ids=[
        "no-tab",
        "three-fields",
        "empty-word",
        "unknown-tag",
        "no-tokens",
        "no-tokens-at-eof",
        "missing-imgid-at-start",
        "missing-imgid-after-blank",
        "non-utf8",
        "empty-imgid",
        "imgid-parent-path",
        "imgid-dot-dot",
        "imgid-absolute",
        "imgid-nul",
    ],
)
def test_bad_input_names_file_and_line(tmp_path: Path, content: bytes, line: int, reason: str) -> None:
    path = tmp_path / "bad.txt"
    path.write_bytes(content)
    with pytest.raises(TwitterFormatError) as caught:
        list(read_umt_file(path))
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.path, error.line) == (str(path), line)
    assert reason in error.reason
    assert str(error).startswith(f"{path}, line {line}: ")


def test_builder_reraises_format_error_with_file_and_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    (data_dir / "twitter2015").mkdir(parents=True)
    for name in SPLIT_FILES.values():
        (data_dir / "twitter2015" / name).write_bytes((FIXTURES / "twitter2015" / name).read_bytes())
    (data_dir / "twitter2015" / "test.txt").write_bytes(b"IMGID:9\nok\tO\nbad\tB-XYZ\n")
    with pytest.raises(TwitterFormatError, match=r"test\.txt, line 3: unknown tag 'B-XYZ'"):
        build_dataset("twitter2015", data_dir, None, tmp_path / "cache")


# --- builder ----------------------------------------------------------------------------------


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


# --- statistics -------------------------------------------------------------------------------


@pytest.mark.parametrize("config", ["twitter2015", "twitter2017", "twitter2017c"])
def test_statistics_match_independent_count(built: dict, image_dir: Path, config: str) -> None:
    for split, dataset in built[config][0].items():
        tags = [[CONTRACT_LABELS[i] for i in row["ner_tags"]] for row in expected_rows(config, split, image_dir)]
        per_type, starting_with_i = count_entities(tags)
        stats = dataset_statistics(dataset)
        assert stats.entities == {t: per_type[t] for t in ("PER", "LOC", "ORG", "MISC")}
        assert stats.total == sum(per_type.values())
        assert (stats.tweets, stats.starting_with_i) == (len(tags), starting_with_i)


def test_statistics_count_i_starts_as_entities() -> None:
    stats = tag_statistics([["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG"], ["O"]])
    assert stats.entities == {"PER": 1, "LOC": 2, "ORG": 1, "MISC": 0}
    assert (stats.tweets, stats.starting_with_i) == (2, 3)


# --- export, load_dataset round trip, CLI -------------------------------------------------------


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


def export_fixture_text(
    out: Path, config: str, *extra: str, monkeypatch: pytest.MonkeyPatch | None = None
) -> list[tuple[Path, str]]:
    """`python -m datasets_scripts build` of one config of the fixture text (no images) into ``out``; with
    ``--push_to_hub`` in ``extra``, the upload is replaced (by ``monkeypatch``) by a record of (folder, repo id)."""
    pushed: list[tuple[Path, str]] = []
    if monkeypatch is not None:
        monkeypatch.setattr(
            cli, "push_folder_to_hub", lambda folder, repo_id, private: pushed.append((folder, repo_id)) or "url"
        )
    cli.main(["build", "--data_dir", str(FIXTURES), "--output_dir", str(out), "--configs", config, *extra])
    return pushed


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
