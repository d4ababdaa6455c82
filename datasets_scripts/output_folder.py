"""Output folders of the dataset commands: checked before any work, and changed only once the new content is complete.

* :func:`writable_folder`: the folder (created if needed) accepts new entries, else :class:`OutputFolderError` saying
  why (a file in its place or in its path, a read-only file system, ``/proc``...); the commands call it before
  anything is built or grounded.
* :func:`staging_folder` and :func:`move_into`: a build writes into a hidden temporary folder beside the output folder
  (same parent, so on the same file system) and, once it has succeeded, moves its entries into the output folder,
  each replacing the entry of the same name (``os.replace``: one rename per entry). The other entries of the output
  folder stay as they are; if the build fails, the output folder is untouched. Only a process killed while it builds
  leaves its staging folder (``.<name>.<random>.partial`` beside the output folder) behind.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterable
from pathlib import Path


class OutputFolderError(ValueError):
    """An output folder that cannot be written, or whose previous content cannot be kept as asked."""


def writable_folder(folder: Path) -> Path:
    """Create ``folder`` (and its parents) if needed and check that it accepts new entries.

    Returns:
        ``folder`` as an absolute path.

    Raises:
        OutputFolderError: ``folder`` (or a parent) is a file, or a folder cannot be created or written in.
    """
    folder = Path(os.path.abspath(folder))
    for path in (folder, *folder.parents):
        if path.exists():
            if not path.is_dir():
                raise OutputFolderError(f"{path} is a file, not a folder")
            break
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder, prefix=".write-check-"):
            pass
    except OSError as error:
        raise OutputFolderError(f"cannot write in {folder}: {error.strerror or error}") from None
    return folder


def staging_folder(folder: Path) -> Path:
    """A new, empty, hidden folder beside ``folder`` to build its new content in (see the module docstring), after
    checking that ``folder`` (when it exists) and its parent accept new entries; the caller deletes it."""
    folder = Path(os.path.abspath(folder))
    try:
        if folder.exists():
            writable_folder(folder)
        parent = writable_folder(folder.parent)
    except OutputFolderError as error:
        raise OutputFolderError(f"output folder {folder}: {error}") from None
    return Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".partial", dir=parent))


def move_into(staging: Path, folder: Path, names: Iterable[str]) -> None:
    """Move ``staging/<name>`` to ``folder/<name>`` for each name, creating ``folder``; an entry of that name already
    in ``folder`` is moved into ``staging`` first (and goes when the caller deletes ``staging``)."""
    folder.mkdir(exist_ok=True)
    for name in names:
        target = folder / name
        if target.exists():
            os.replace(target, staging / f".replaced-{name}")
        os.replace(staging / name, target)
