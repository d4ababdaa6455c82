"""Reader for the UMGF authors' own text files (``my_data/`` of github.com/TransformersWsz/UMGF), and their word
handling.

The authors train and score on their ``my_data/<dataset>/{train,valid,test}/`` folders, not on the UMT files: one
tweet is three one-line files, ``<n>_s.txt`` (its words), ``<n>_l.txt`` (their tags) and ``<n>_p.txt`` (its image id),
words and tags separated by tabs. Their dataset reads the tweets in the order of the *sorted file paths*: Python's
``sorted`` on the strings, so lexicographic, not numeric (``0_s.txt``, ``1000_s.txt``, ..., ``100_s.txt``, ...); the
same order is kept here, and a tweet's ``id`` is its file number ``<n>``.

Their text differs from the UMT text of the same tweets (labels of Twitter-2015 tweets, U+FE0F removed from
Twitter-2017 words: the dataset card and README give the counts), which is why the ``*_authors`` configs exist.

Rules (anything else raises :class:`~datasets_scripts.umt_format.TwitterFormatError` naming the file and line):

* every ``<n>_s.txt`` has its ``<n>_l.txt`` and ``<n>_p.txt`` beside it (and the other way round), ``<n>`` digits;
* the first line of ``_s`` and ``_l`` split at tabs give as many words as tags, no word empty, every tag known
  (OTHER becomes MISC, as in the UMT configs); their code reads the first line only, so a further non-blank line is
  an error rather than silently ignored;
* the first line of ``_p`` is a plain file name (the image ``<id>.jpg``, the crops ``<id>/crop_*_<id>.jpg``).

:func:`drop_empty_words` is their evaluation's word handling: a word their tokenizer turns into no sub-token
contributes neither a token nor a label, so it is removed with its tag.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from modeling_umgf.schema import normalise_tag
from modeling_umgf.tools.metrics import authors_entity_scores

from .umt_format import RawTweet, TwitterFormatError, is_plain_file_name

#: ``my_data/<dataset>/<folder>`` of each split.
AUTHORS_SPLIT_FOLDERS: dict[str, str] = {"train": "train", "validation": "valid", "test": "test"}
KINDS = ("s", "l", "p")
_NAME = re.compile(r"^(\d+)_([slp])\.txt$")


def _read_line(path: Path) -> str:
    """The first line of ``path`` (without its line end); a further non-blank line is an error."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as error:
        raise TwitterFormatError(path, 1, f"invalid UTF-8 at byte {error.start}") from None
    lines = text.splitlines() or [""]
    for number, extra in enumerate(lines[1:], start=2):
        if extra.strip():
            raise TwitterFormatError(path, number, "a second line: the authors' files hold one line")
    return lines[0]


def tweet_numbers(folder: str | Path) -> list[str]:
    """The tweet numbers of one split folder in the authors' reading order (sorted file names, lexicographic).

    Raises:
        TwitterFormatError: a tweet lacks one of its three files, or the folder holds no tweet.
        FileNotFoundError: ``folder`` does not exist.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"{folder} not found: expected a split folder of the authors' my_data/ layout")
    found: dict[str, set[str]] = {}
    for entry in folder.iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.setdefault(match.group(1), set()).add(match.group(2))
    for number, kinds in sorted(found.items()):
        missing = [f"{number}_{kind}.txt" for kind in KINDS if kind not in kinds]
        if missing:
            raise TwitterFormatError(
                folder / missing[0], None, f"missing: {number}_*.txt has no {missing[0]} beside it"
            )
    if not found:
        raise TwitterFormatError(folder, None, "no <n>_s.txt / <n>_l.txt / <n>_p.txt files")
    # their code sorts the full paths of each kind: within one folder that is the order of "<n>_s.txt" strings
    return sorted(found, key=lambda number: f"{number}_s.txt")


def read_authors_tweet(folder: Path, number: str, index: int) -> RawTweet:
    """One tweet of the authors' layout (``index``: its position in the split)."""
    words_path, tags_path, image_path = (folder / f"{number}_{kind}.txt" for kind in KINDS)
    words = _read_line(words_path).split("\t")
    tags = _read_line(tags_path).split("\t")
    image_id = _read_line(image_path).strip()
    if len(words) != len(tags):
        raise TwitterFormatError(tags_path, 1, f"{len(tags)} tags for the {len(words)} words of {words_path.name}")
    for position, word in enumerate(words, start=1):
        if not word:
            raise TwitterFormatError(words_path, 1, f"word {position} is empty (two tabs in a row, or a tab at an end)")
    names = []
    for position, tag in enumerate(tags, start=1):
        name = normalise_tag(tag)
        if name is None:
            raise TwitterFormatError(
                tags_path, 1, f"tag {position} {tag!r} unknown (known: O, B-/I- + PER, LOC, ORG, MISC, OTHER)"
            )
        names.append(name)
    if not is_plain_file_name(image_id):
        raise TwitterFormatError(image_path, 1, f"image id {image_id!r} is not a plain file name")
    return RawTweet(index=index, image_id=image_id, line=1, tokens=words, tags=names)


def read_authors_split(folder: str | Path) -> Iterator[tuple[str, RawTweet]]:
    """``(n, tweet)`` for every tweet of one split folder, in the authors' order (:func:`tweet_numbers`)."""
    folder = Path(folder)
    for index, number in enumerate(tweet_numbers(folder)):
        yield number, read_authors_tweet(folder, number, index)


@dataclass
class EmptyWordsReport:
    """Words removed by :func:`drop_empty_words`: ``(sample id, word position, word)``, and the tweets left without
    words, removed too."""

    removed: list[tuple[str, int, str]]
    empty_tweets: list[str] = field(default_factory=list)

    def summary(self) -> str:
        shown = ", ".join(f"{sample!r} word {position} {word!r}" for sample, position, word in self.removed[:5])
        more = f" (e.g. {shown})" if self.removed else ""
        tweets = f"; {len(self.empty_tweets)} tweets left without words removed" if self.empty_tweets else ""
        return f"{len(self.removed)} words that tokenise to no sub-token removed with their tags{more}{tweets}"


def drop_empty_words(dataset: Any, tokenizer: Any) -> tuple[Any, EmptyWordsReport]:
    """``dataset`` (columns ``id``, ``tokens``, ``ner_tags``) without the words ``tokenizer`` maps to no sub-token,
    each removed with its tag, as the authors' dataset builds its inputs. A tweet left without words, which their
    scoring file would not show, is removed. Returns the new dataset and which words and tweets went."""
    report = EmptyWordsReport(removed=[])

    def keep(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        encoding = tokenizer(rows["tokens"], is_split_into_words=True, add_special_tokens=False)
        tokens, tags = [], []
        for i, (sample, words, labels) in enumerate(zip(rows["id"], rows["tokens"], rows["ner_tags"])):
            present = {w for w in encoding.word_ids(i) if w is not None}
            report.removed.extend((sample, w, word) for w, word in enumerate(words) if w not in present)
            tokens.append([word for w, word in enumerate(words) if w in present])
            tags.append([tag for w, tag in enumerate(labels) if w in present])
        return {"tokens": tokens, "ner_tags": tags}

    kept = dataset.map(keep, batched=True, desc="dropping words without sub-tokens", load_from_cache_file=False)
    report.empty_tweets = [sample for sample, words in zip(kept["id"], kept["tokens"]) if not words]
    if report.empty_tweets:
        kept = kept.filter(lambda row: len(row["tokens"]) > 0, load_from_cache_file=False)
    return kept, report


def scored_word_counts(tokenizer: Any, sentences: Sequence[Sequence[str]], max_length: int) -> list[int]:
    """Per sentence, how many of its first words the authors score: those whose first sub-token fits in
    ``max_length`` sub-tokens with [CLS] and [SEP] (their ``ntokens[:max_len - 1] + [SEP]``); the words after are
    cut and left out of their scoring file."""
    sentences = [list(sentence) for sentence in sentences]
    encoding = tokenizer(sentences, is_split_into_words=True, truncation=True, max_length=max_length)
    return [max((w + 1 for w in encoding.word_ids(i) if w is not None), default=0) for i in range(len(sentences))]


def authors_split_scores(
    sentences: Sequence[Sequence[str]],
    gold: Sequence[Sequence[str]],
    pred: Sequence[Sequence[str]],
    tokenizer: Any,
    max_length: int,
) -> dict[str, Any]:
    """The authors' scores of one split (:func:`~modeling_umgf.tools.metrics.authors_entity_scores`) over the words they
    score: words cut by ``max_length`` left out (:func:`scored_word_counts`). Words without sub-tokens must have
    been removed before (:func:`drop_empty_words`), as the model's inputs were built without them."""
    kept = scored_word_counts(tokenizer, sentences, max_length)
    return authors_entity_scores([g[:k] for g, k in zip(gold, kept)], [p[:k] for p, k in zip(pred, kept)])


__all__ = [
    "AUTHORS_SPLIT_FOLDERS",
    "EmptyWordsReport",
    "authors_split_scores",
    "drop_empty_words",
    "read_authors_split",
    "read_authors_tweet",
    "scored_word_counts",
    "tweet_numbers",
]
