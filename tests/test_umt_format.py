"""Tests of datasets_scripts.umt_format: the UMT release reader, its tag names and the errors naming file and line.

Expected values come from the fixtures through the independent parser of twitter_fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
from twitter_fixtures import FIXTURES, SPLIT_FILES, parse_fixture

from datasets_scripts.twitter_mner import build_dataset
from datasets_scripts.umt_format import TwitterFormatError, normalise_tag, read_umt_file


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
