"""The grounders by name: what a processor's ``grounder`` setting (and ``--grounder`` everywhere) can say."""

from __future__ import annotations

import inspect
from typing import Any

from .detector_grounding import ReleaseGrounder, ZeroShotDetectorGrounder
from .grounding import Grounder
from .model_free_grounding import GridGrounder, PrecomputedGrounder
from .symbol_grounding import SymbolGrounder

GROUNDERS: dict[str, type[Grounder]] = {
    grounder.name: grounder
    for grounder in (ZeroShotDetectorGrounder, ReleaseGrounder, GridGrounder, PrecomputedGrounder, SymbolGrounder)
}


def build_grounder(name: str, **kwargs: Any) -> Grounder:
    """Instantiate the grounder registered under ``name`` (a key of `GROUNDERS`) with ``kwargs``."""
    if name not in GROUNDERS:
        raise ValueError(f"unknown grounder {name!r}; choose one of {sorted(GROUNDERS)}")
    try:
        inspect.signature(GROUNDERS[name]).bind(**kwargs)
    except TypeError as error:
        accepted = [p for p in inspect.signature(GROUNDERS[name]).parameters if p not in ("self", "args", "kwargs")]
        raise ValueError(f"grounder {name!r}: {error}; its settings are {accepted}") from None
    return GROUNDERS[name](**kwargs)


__all__ = ["GROUNDERS", "build_grounder"]
