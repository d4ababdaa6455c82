"""Tests of modeling_umgf.tools.loading: a saved folder loads as saved, and a folder that lies (edited weights,
labels or JSON) is refused with an error naming what is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modeling_umgf.tools.loading import load_saved
from modeling_umgf.tools.tiny_models import tiny_ner_pipeline


def edited_copy(source: Path, target: Path, file: str, edit) -> Path:
    """A copy of the saved folder ``source`` with the JSON ``file`` changed by ``edit`` (in place on the dict)."""
    import shutil

    shutil.copytree(source, target)
    data = json.loads((target / file).read_text())
    edit(data)
    (target / file).write_text(json.dumps(data))
    return target


def permute_labels(config: dict) -> None:
    """id2label and label2id permuted alike (consistent with each other, not with the processor)."""
    config["id2label"].update({"1": "I-PER", "2": "B-PER"})
    config["label2id"].update({"I-PER": 1, "B-PER": 2})


@pytest.mark.parametrize(
    "file, edit, message",
    [
        ("config.json", lambda c: c.update(num_fusion_layers=3), r"weights lack: umgf\.layers\.2\..*\(30 in all\)"),
        ("config.json", lambda c: c.update(num_fusion_layers=1), r"no place for: umgf\.layers\.1\."),
        (
            "config.json",
            lambda c: c.update(intermediate_size=48),
            r"another size.*\(32, 16\) saved, \(48, 16\) expected",
        ),
        ("config.json", lambda c: c["label2id"].update({"B-PER": 2, "I-PER": 1}), "label2id disagrees with id2label"),
        ("config.json", lambda c: c["id2label"].update({"1": "I-PER", "2": "B-PER"}), "label2id disagrees"),
        ("config.json", permute_labels, r"the processor's label_names \['O', 'B-PER', 'I-PER'"),
        ("config.json", lambda c: c["id2label"].pop("8"), r"another size.*classifier\.bias \(9,\) saved, \(8,\)"),
        ("processor_config.json", lambda c: c.update(label_names=c["label_names"][:3]), "processor's label_names"),
    ],
)
def test_a_folder_whose_weights_or_labels_do_not_match_its_config_is_refused(tmp_path, file, edit, message) -> None:
    folder = tmp_path / "model"
    tiny_ner_pipeline().save_pretrained(folder)
    edited_copy(folder, tmp_path / "edited", file, edit)
    load_saved(folder)  # the folder as saved loads
    with pytest.raises(ValueError, match=message):
        load_saved(tmp_path / "edited")


def test_a_json_file_with_trailing_garbage_is_named(tmp_path) -> None:
    folder = tmp_path / "model"
    tiny_ner_pipeline().save_pretrained(folder)
    with (folder / "config.json").open("a") as handle:
        handle.write("\ngarbage")
    text = (folder / "config.json").read_text()
    line = text[: text.index("garbage")].count("\n") + 1
    with pytest.raises(ValueError, match=rf"{folder / 'config.json'}:{line}:1: not valid JSON \(Extra data\)"):
        load_saved(folder)
