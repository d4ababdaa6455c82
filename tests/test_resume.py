"""Tests of modeling_umgf.tools.resume: the run signature, the trainer state a checkpoint keeps, which checkpoint is
the latest, refusing another run's checkpoint, and the best model's folder."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from modeling_umgf.tools.resume import (
    BEST_DIR,
    STATE_FILE,
    ResumeError,
    TrainerState,
    best_model_folder,
    latest_checkpoint,
    remove_best_copy,
    resume_state,
    run_signature,
)


def test_the_signature_keeps_what_shapes_training_only() -> None:
    arguments = {"learning_rate": 0.1, "output_dir": Path("a"), "hub_token": "secret", "image_dir": Path("/x/i")}
    assert run_signature(arguments, 2, "synthetic") == {
        "image_dir": "/x/i",
        "learning_rate": 0.1,
        "num_processes": 2,
        "data": "synthetic",
    }


def checkpoint(folder: Path, step: int, run: dict) -> Path:
    folder.mkdir(parents=True)
    TrainerState(run, global_step=step, epoch=1, best_f1=0.5, history=[{"epoch": 0}]).save(folder)
    return folder


def test_the_state_saved_is_the_state_loaded(tmp_path) -> None:
    saved = TrainerState({"a": 1}, global_step=7, epoch=2, batches_in_epoch=3, best_f1=0.25, best_epoch=1)
    saved.save(tmp_path)
    assert json.loads((tmp_path / STATE_FILE).read_text())["global_step"] == 7
    assert TrainerState.load(tmp_path, {"a": 1}) == saved


def test_the_latest_checkpoint_has_the_most_steps_and_is_complete(tmp_path) -> None:
    root = tmp_path / "checkpoints"
    checkpoint(root / "checkpoint_1", 9, {})
    checkpoint(root / "checkpoint_2", 4, {})  # numbered after, but fewer steps (another run's numbering)
    (root / "checkpoint_3").mkdir()  # incomplete: no trainer state
    assert latest_checkpoint(tmp_path) == root / "checkpoint_1"
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        latest_checkpoint(tmp_path / "empty")


def test_another_runs_checkpoint_is_refused_unless_forced(tmp_path, caplog) -> None:
    folder = checkpoint(tmp_path / "c", 5, {"learning_rate": 0.1, "seed": 1})
    with pytest.raises(ResumeError, match=r"learning_rate 0\.1 there, 0\.2 now.*--force_resume"):
        resume_state(folder, {"learning_rate": 0.2, "seed": 1}, force=False)
    with caplog.at_level(logging.WARNING):
        state = resume_state(folder, {"learning_rate": 0.2, "seed": 1}, force=True)
    assert "changed settings" in caplog.text
    assert (state.global_step, state.run) == (5, {"learning_rate": 0.2, "seed": 1})
    with pytest.raises(FileNotFoundError, match="not a checkpoint"):
        resume_state(tmp_path, {}, force=False)


def test_the_best_model_is_its_copy_until_the_folder_holds_it(tmp_path) -> None:
    with pytest.raises(FileNotFoundError):
        best_model_folder(tmp_path)
    (tmp_path / BEST_DIR).mkdir()
    (tmp_path / BEST_DIR / "config.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")
    assert best_model_folder(tmp_path) == tmp_path / BEST_DIR
    remove_best_copy(tmp_path)
    assert best_model_folder(tmp_path) == tmp_path


def test_a_linked_best_copy_is_not_followed(tmp_path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / BEST_DIR).symlink_to(outside)
    remove_best_copy(tmp_path / "run")
    assert (outside / "keep").is_file()
