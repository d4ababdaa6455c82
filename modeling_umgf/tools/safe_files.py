"""Writing files into a folder the user gave without ever writing through a symbolic link, and naming files after
untrusted ids without two posts sharing a file.

`write_replacing` writes into a new temporary file beside the target and renames it over the target
(``os.replace``): a symbolic link at the target is replaced by the new file, never followed, so the file it points
to is left as it was; an interrupted write leaves the previous file whole.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any


def write_replacing(path: str | os.PathLike, write: Callable[..., Any], **write_kwargs: Any) -> Path:
    """Write ``path`` by calling ``write(stream, **write_kwargs)`` on a new temporary file in the same folder (e.g.
    a PIL image's ``save`` with ``format="PNG"``), then renaming it onto ``path`` (see the module docstring).
    Returns ``path``."""
    path = Path(path)
    handle, partial = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as stream:
            write(stream, **write_kwargs)
        os.chmod(partial, 0o666 & ~_umask())
        os.replace(partial, path)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def unique_file_names(ids: Iterable[str], suffix: str, fallback: str = "post") -> list[str]:
    """A distinct, safe file name per id: ``<id><suffix>`` with every run of characters other than letters, digits,
    ``.``, ``_`` and ``-`` replaced by ``_`` and leading/trailing dots and underscores removed (so ``..`` or ``a/b``
    never leave the folder); an id that leaves nothing becomes ``fallback``; a name taken by an earlier id gets
    ``-2``, ``-3``, ... (the first keeps the plain name)."""
    names: list[str] = []
    taken: set[str] = set()
    for sample_id in ids:
        stem = re.sub(r"[^A-Za-z0-9._-]+", "_", str(sample_id)).strip("._") or fallback
        name, count = f"{stem}{suffix}", 1
        while name.lower() in taken:  # case-insensitive file systems would merge "A" and "a"
            count += 1
            name = f"{stem}-{count}{suffix}"
        taken.add(name.lower())
        names.append(name)
    return names


__all__ = ["unique_file_names", "write_replacing"]
