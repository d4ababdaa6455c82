"""The grounders by name: what a processor's ``grounder`` setting (and ``--grounder`` everywhere) can say."""

from __future__ import annotations

from typing import Any

from .detector_grounding import ReleaseGrounder, ZeroShotDetectorGrounder
from .grounding import GridGrounder, Grounder, PrecomputedGrounder
from .symbol_grounding import SymbolGrounder

GROUNDERS: dict[str, type[Grounder]] = {
    grounder.name: grounder
    for grounder in (ZeroShotDetectorGrounder, ReleaseGrounder, GridGrounder, PrecomputedGrounder, SymbolGrounder)
}


def build_grounder(name: str, **kwargs: Any) -> Grounder:
    """Instantiate the grounder registered under ``name`` (a key of `GROUNDERS`) with ``kwargs``."""
    if name not in GROUNDERS:
        raise ValueError(f"unknown grounder {name!r}; choose one of {sorted(GROUNDERS)}")
    return GROUNDERS[name](**kwargs)


__all__ = ["GROUNDERS", "build_grounder"]
