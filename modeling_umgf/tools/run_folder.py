"""A training run's output folder: one run at a time, nothing written through a link, only its own files deleted,
the final model replaced in one step, and no secret in what it records.

* `lock_run_folder`: a lock file (``.umgf-run.lock``, filelock's) held for the whole run; a second run into the
  same folder stops at once with `RunFolderError` naming the lock.
* `check_run_folder`: refuses a folder that holds another run's model or checkpoints (unless the caller overwrites
  or resumes, the ``--overwrite_output_dir`` convention of transformers' ``run_ner``) and any symbolic link among
  its entries (a run writes only inside its folder).
* `OwnedCheckpoints`: the checkpoint folders this script created, recorded in ``.umgf-checkpoints.json`` *before*
  each is written; only recorded ones are ever deleted (a checkpoint left incomplete by a killed run, or one past
  the rotation limit), never through a link and never outside the folder.
* `replace_entries`: the final save is written into a hidden staging folder inside the output folder, then each
  entry is renamed onto its name (``os.replace``) with Ctrl-C deferred; an interrupted save leaves the previous
  model whole.
* `public_arguments`: the run's arguments without secrets (`SECRET_ARGUMENTS`), for trackers and logs.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from .safe_files import write_replacing

LOCK_NAME = ".umgf-run.lock"
OWNED_NAME = ".umgf-checkpoints.json"
CHECKPOINTS_DIR = "checkpoints"
SECRET_ARGUMENTS = frozenset({"hub_token", "token", "use_auth_token"})
"""Argument names whose values never leave memory: not given to trackers, logged, saved or recorded."""
MODEL_FILES = ("config.json", "model.safetensors", "pytorch_model.bin")
_CHECKPOINT = re.compile(r"checkpoint_(\d+)")


class RunFolderError(ValueError):
    """An output folder that a run may not use as it is (in use, another run's model, a link out of it)."""


def public_arguments(arguments: Mapping[str, Any]) -> dict[str, Any]:
    """``arguments`` without the secret ones (`SECRET_ARGUMENTS`)."""
    return {key: value for key, value in arguments.items() if key not in SECRET_ARGUMENTS}


@contextlib.contextmanager
def lock_run_folder(folder: Path) -> Iterator[None]:
    """Hold ``folder``'s run lock for the ``with`` block (the folder must exist); `RunFolderError` if another run
    holds it. The lock is the operating system's (released when the process dies, even by SIGKILL)."""
    lock = FileLock(folder / LOCK_NAME, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunFolderError(
            f"another run is writing into {folder} (it holds {folder / LOCK_NAME}); wait for it to finish or "
            "choose another --output_dir"
        ) from None
    try:
        yield
    finally:
        lock.release()


def checkpoint_number(path: Path) -> int | None:
    """The number of a ``checkpoint_<n>`` folder name, else None (other names are not this script's)."""
    match = _CHECKPOINT.fullmatch(path.name)
    return int(match.group(1)) if match else None


def check_run_folder(folder: Path, *, overwrite: bool, resuming: bool) -> None:
    """Refuse ``folder`` when anything in it (at any depth) is a symbolic link, or when it holds a model or
    checkpoints and the run neither overwrites nor resumes."""
    links = [  # os.walk never descends into a linked folder
        os.path.relpath(os.path.join(parent, name), folder)
        for parent, folders, files in os.walk(folder)
        for name in folders + files
        if os.path.islink(os.path.join(parent, name))
    ]
    if links:
        raise RunFolderError(
            f"{folder} holds symbolic links {sorted(links)[:8]}; a run writes only inside its output folder and never "
            "follows a link out of it: remove them or choose another --output_dir"
        )
    held = [name for name in MODEL_FILES if (folder / name).exists()]
    checkpoints = folder / CHECKPOINTS_DIR
    if checkpoints.is_dir():
        held += [f"{CHECKPOINTS_DIR}/{p.name}" for p in sorted(checkpoints.iterdir()) if p.is_dir()]
    if held and not (overwrite or resuming):
        raise RunFolderError(
            f"{folder} already holds a model or checkpoints ({', '.join(held[:4])}{', ...' if len(held) > 4 else ''}); "
            "pass --overwrite_output_dir to replace the model (checkpoints of other runs are kept), "
            "--resume_from_checkpoint to continue, or choose another --output_dir"
        )


class OwnedCheckpoints:
    """The checkpoint folders of ``folder/checkpoints`` that this script created there (see the module docstring).

    Only the main process records and deletes."""

    def __init__(self, folder: Path) -> None:
        self.root = folder / CHECKPOINTS_DIR
        self.record = folder / OWNED_NAME

    def owned(self) -> list[str]:
        if not self.record.is_file():
            return []
        try:
            names = json.loads(self.record.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise RunFolderError(
                f"{self.record}: not valid JSON ({error}); delete it to forget which are ours"
            ) from None
        return [name for name in names if isinstance(name, str)]

    def next_folder(self) -> Path:
        """A new ``checkpoint_<n>`` folder name, after every numbered folder there (ours or not)."""
        numbers = [checkpoint_number(p) for p in self.root.glob("checkpoint_*")]
        return self.root / f"checkpoint_{max((n for n in numbers if n is not None), default=-1) + 1}"

    def claim(self, path: Path) -> None:
        """Record ``path`` as ours before it is created (written beside, then renamed: the record is never torn)."""
        self.root.mkdir(parents=True, exist_ok=True)
        self._write([*self.owned(), path.name])

    def remove(self, path: Path) -> bool:
        """Delete ``path`` if it is one of ours, a real folder directly in ``checkpoints/``; True if deleted."""
        if path.name not in self.owned() or path.parent != self.root or path.is_symlink() or not path.is_dir():
            return False
        shutil.rmtree(path)
        self._write([name for name in self.owned() if name != path.name])
        return True

    def _write(self, names: list[str]) -> None:
        """The record, written beside and renamed onto its name (`safe_files.write_replacing`): never torn."""
        write_replacing(self.record, lambda stream: stream.write(json.dumps(names).encode("utf-8")))

    def remove_incomplete(self, complete: Callable[[Path], bool]) -> tuple[list[Path], list[Path]]:
        """Delete our checkpoints that ``complete`` says are not; returns (deleted, incomplete ones not ours)."""
        deleted: list[Path] = []
        foreign: list[Path] = []
        for path in sorted(self.root.glob("checkpoint_*")):
            if checkpoint_number(path) is None or complete(path):
                continue
            (deleted if self.remove(path) else foreign).append(path)
        return deleted, foreign

    def rotate(self, keep: int | None, complete: Callable[[Path], bool]) -> list[Path]:
        """Delete our oldest complete checkpoints beyond the newest ``keep`` of ours; returns those deleted."""
        if keep is None:
            return []
        ours = [self.root / name for name in self.owned()]
        ours = sorted((p for p in ours if complete(p)), key=lambda p: checkpoint_number(p) or 0)
        return [path for path in ours[: max(0, len(ours) - keep)] if self.remove(path)]


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Ctrl-C (SIGINT) received inside the block is raised as KeyboardInterrupt when it ends (main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda number, frame: received.append(number))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if received:
        raise KeyboardInterrupt


def replace_entries(folder: Path, write: Callable[[Path], Any]) -> None:
    """Call ``write(staging)`` on a new hidden folder inside ``folder``, then rename each of its entries onto
    ``folder/<name>`` (a previous entry of that name, file, folder or link, is moved aside first and deleted with the
    staging folder; a link is replaced, never followed). If ``write`` fails or is interrupted, ``folder`` is as it
    was; the renames run with Ctrl-C deferred."""
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=folder))
    try:
        write(staging)
        with interrupts_deferred():
            for entry in sorted(staging.iterdir()):
                target = folder / entry.name
                if target.is_symlink() or target.exists():
                    os.replace(target, staging / f".replaced-{entry.name}")
                os.replace(entry, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


__all__ = [
    "LOCK_NAME",
    "OWNED_NAME",
    "SECRET_ARGUMENTS",
    "OwnedCheckpoints",
    "RunFolderError",
    "check_run_folder",
    "checkpoint_number",
    "interrupts_deferred",
    "lock_run_folder",
    "public_arguments",
    "replace_entries",
]
