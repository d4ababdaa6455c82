"""Loading a saved UMGF model with its processor (a folder or Hub repo written by ``save_pretrained``), for the CLI
and training, with errors that name the folder and what is wrong in it."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .hub import is_local_path


def load_saved(name_or_path: str | os.PathLike) -> tuple[Any, Any]:
    """The model and processor of a saved UMGF folder or Hub repo (this package's classes, no remote code).

    Raises:
        ValueError: naming the folder and what is wrong: no model there, a file that is not valid JSON (named, with
            its line), a truncated or corrupt weights file, weights that do not match the config (naming the
            tensors), labels of the processor and the model that disagree.
    """
    from safetensors import SafetensorError

    from ..input_checks import check_label_maps
    from ..modeling_umgf import UMGFForTokenClassification
    from ..processing_umgf import UMGFProcessor

    name = os.fspath(name_or_path)
    if is_local_path(name) and not (Path(name).expanduser() / "config.json").is_file():
        raise ValueError(f"model folder not found (no config.json): {name}")
    name = str(Path(name).expanduser()) if is_local_path(name) else name
    if is_local_path(name):
        check_json_files(Path(name))
    try:
        processor = UMGFProcessor.from_pretrained(name)
        model = UMGFForTokenClassification.from_pretrained(name)
    except SafetensorError as error:
        raise ValueError(
            f"cannot load model {name}: its weights file is damaged (truncated or corrupt): {error}"
        ) from error
    except OSError as error:
        raise ValueError(f"cannot load model {name}: {str(error).splitlines()[0]}") from error
    check_label_maps(model.config, name, processor.label_names)
    return model, processor


def check_json_files(folder: Path) -> None:
    """Raise a ValueError naming the file, line and column of the first JSON file of ``folder`` that does not
    parse (transformers' own error names neither the file nor, for trailing garbage, what is wrong)."""
    for path in sorted(folder.glob("*.json")):
        try:
            json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path}:{error.lineno}:{error.colno}: not valid JSON ({error.msg})") from None
        except UnicodeDecodeError as error:
            raise ValueError(f"{path}: not UTF-8 text ({error.reason} at byte {error.start})") from None
