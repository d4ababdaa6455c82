"""Strict reader for the UMT release text format of Twitter-2015 / Twitter-2017.

The format (Yu et al. 2020, github.com/jefferyYu/UMT, ``data/<dataset>/{train,valid,test}.txt``)::

    IMGID:<image id>
    <word>\\t<TAG>
    <word>\\t<TAG>
    <blank line>

Tags are BIO over PER/LOC/ORG and OTHER (Twitter-2015) or MISC (Twitter-2017); OTHER is normalised to
MISC. Tags are kept as released: an entity that starts with an ``I-`` tag is not repaired (see the
dataset card for how such entities are counted).

Why hand-written: no maintained library reads this format. ``datasets``' CoNLL readers were loading
scripts (gone in ``datasets`` >= 4) and know neither the ``IMGID:`` line nor per-line error reporting.

Rules (anything else raises :class:`TwitterFormatError` naming the file and the 1-based line, or only the file
when it holds no tweet):

* every tweet starts with an ``IMGID:<id>`` line whose id is a plain file name (not empty, not ``.`` or ``..``,
  no path separator or NUL): the image is read from ``<image_dir>/<id>.jpg``, never from outside ``image_dir``;
* a token line is exactly ``word<TAB>TAG`` with a non-empty word (the word is kept verbatim, even when
  it is only whitespace such as a no-break space) and a known tag;
* a tweet ends at a blank line, at the next ``IMGID:`` line or at the end of the file, and has at least
  one token; several blank lines in a row are allowed;
* the file holds at least one tweet;
* the file is UTF-8; lines end with ``\\n``, ``\\r\\n`` (Windows) or ``\\r`` (old Mac OS), in any mix: the
  universal newlines of ``bytes.splitlines``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from modeling_umgf.schema import normalise_tag

IMGID_PREFIX = "IMGID:"


class TwitterFormatError(ValueError):
    """A line of a UMT-format file breaks the format.

    Attributes:
        path: the file.
        line: 1-based line number; None when the error concerns the whole file.
        reason: what is wrong.
    """

    def __init__(self, path: str | Path, line: int | None, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        super().__init__(f"{self.path}: {reason}" if line is None else f"{self.path}, line {line}: {reason}")


@dataclass
class RawTweet:
    """One tweet as read from the file: its position, image id, words and normalised tag names."""

    index: int
    image_id: str
    line: int
    tokens: list[str] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


def read_umt_file(path: str | Path) -> Iterator[RawTweet]:
    """Yield the tweets of one UMT-format file in order.

    Args:
        path: a ``train.txt`` / ``valid.txt`` / ``test.txt`` file of the UMT release.

    Raises:
        TwitterFormatError: on the first line that breaks the format (see the module docstring).
    """
    tweet: RawTweet | None = None
    index = 0
    with open(path, "rb") as handle:
        lines = handle.read().splitlines()
    for line_number, raw in enumerate(lines, start=1):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise TwitterFormatError(
                path, line_number, f"invalid UTF-8 byte 0x{raw[error.start]:02x} at column {error.start + 1}"
            ) from None
        if line.startswith(IMGID_PREFIX):
            if tweet is not None:
                yield _finished(tweet, path)
                index += 1
            image_id = line[len(IMGID_PREFIX) :].strip()
            if not image_id:
                raise TwitterFormatError(path, line_number, "empty image id after 'IMGID:'")
            if not is_plain_file_name(image_id):
                raise TwitterFormatError(
                    path,
                    line_number,
                    f"image id {image_id!r} is not a plain file name (it is '.' or '..', or holds a path separator "
                    "or NUL): the image is read from <image_dir>/<IMGID>.jpg",
                )
            tweet = RawTweet(index=index, image_id=image_id, line=line_number)
        elif not line.strip():
            if tweet is not None:
                yield _finished(tweet, path)
                index += 1
                tweet = None
        else:
            if tweet is None:
                raise TwitterFormatError(
                    path, line_number, f"token line {line!r} is not preceded by an 'IMGID:<id>' line"
                )
            word, tag = _split_token_line(line, path, line_number)
            tweet.tokens.append(word)
            tweet.tags.append(tag)
    if tweet is not None:
        yield _finished(tweet, path)
    elif index == 0:
        content = f"its {len(lines)} lines are blank" if lines else "it is empty"
        raise TwitterFormatError(path, None, f"the file holds no tweet ({content})")


def is_plain_file_name(name: str) -> bool:
    """True when ``name`` names an entry directly inside a folder: not empty, not ``.`` or ``..``, and without a path
    separator (of this system) or NUL, so ``folder / name`` never leaves ``folder``."""
    return bool(name) and name not in (".", "..") and "\0" not in name and Path(name).name == name


def _split_token_line(line: str, path: str | Path, line_number: int) -> tuple[str, str]:
    fields = line.split("\t")
    if len(fields) != 2 or not fields[0]:
        raise TwitterFormatError(path, line_number, f"expected 'word<TAB>TAG', got {line!r}")
    tag = normalise_tag(fields[1])
    if tag is None:
        raise TwitterFormatError(
            path, line_number, f"unknown tag {fields[1]!r} (known: O, B-/I- + PER, LOC, ORG, MISC, OTHER)"
        )
    return fields[0], tag


def _finished(tweet: RawTweet, path: str | Path) -> RawTweet:
    if not tweet.tokens:
        raise TwitterFormatError(path, tweet.line, f"tweet with image id {tweet.image_id!r} has no tokens")
    return tweet
