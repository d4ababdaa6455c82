"""Resume bookkeeping of a training run: the trainer state saved with each checkpoint, the run signature a resumed
run must share, the latest checkpoint, and the best dev epoch's model folder.

Checkpoints are ``<output_dir>/checkpoints/checkpoint_<n>`` (accelerate's state, then ``trainer_state.json``,
written last: a checkpoint without it is incomplete).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from accelerate import Accelerator

from .run_folder import OwnedCheckpoints, checkpoint_number, public_arguments

logger = logging.getLogger(__name__)

STATE_FILE = "trainer_state.json"
BEST_DIR = "best_model"

#: Arguments that do not change what a run trains (outputs, logging, evaluation, workers): left out of the run
#: signature, so they may differ when resuming.
RUN_LOCAL_ARGUMENTS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "resume_from_checkpoint",
        "force_resume",
        "report_to",
        "logging_steps",
        "push_to_hub",
        "hub_model_id",
        "hub_private_repo",
        "hub_dataset_id",
        "test_dataset_config_name",
        "test_image_dir",
        "max_eval_samples",
        "per_device_eval_batch_size",
        "preprocessing_num_workers",
        "dataloader_num_workers",
        "feature_cache_dir",
        "gradient_checkpointing",
        "inference_precision",
    }
)


class ResumeError(ValueError):
    """A checkpoint made by another run (other settings), resumed without forcing it."""


@dataclasses.dataclass
class TrainerState:
    """Where a run is: optimizer steps, epochs done, batches into the current epoch, the best dev F1 so far (its
    epoch and flat dev scores), the dev F1 of every epoch, and the run signature (`run_signature`)."""

    run: dict[str, Any]
    global_step: int = 0
    epoch: int = 0
    batches_in_epoch: int = 0
    best_f1: float = -1.0
    best_epoch: int | None = None
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    best_dev: dict[str, float] = dataclasses.field(default_factory=dict)

    @classmethod
    def load(cls, checkpoint: Path, run: dict[str, Any]) -> TrainerState:
        """The state saved in ``checkpoint``, with the run signature ``run`` of the run resuming it."""
        saved = json.loads((checkpoint / STATE_FILE).read_text())
        known = {field.name for field in dataclasses.fields(cls)}
        return cls(**{**{key: value for key, value in saved.items() if key in known}, "run": run})

    def save(self, checkpoint: Path) -> None:
        (checkpoint / STATE_FILE).write_text(json.dumps(dataclasses.asdict(self), indent=2))


def run_signature(arguments: Mapping[str, Any], num_processes: int, data: str) -> dict[str, Any]:
    """What a checkpoint records of its run: a run resuming from it must share all of it (unless forced): every
    argument that shapes training (hyper-parameters, data, model; not `RUN_LOCAL_ARGUMENTS` nor secrets), the
    number of processes and a description of the ``data``."""
    settings = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in sorted(public_arguments(arguments).items())
        if key not in RUN_LOCAL_ARGUMENTS
    }
    return {**settings, "num_processes": num_processes, "data": data}


def is_complete(checkpoint: Path) -> bool:
    """Whether the checkpoint was saved to the end (its trainer state is written last)."""
    return (checkpoint / STATE_FILE).is_file()


def latest_checkpoint(output_dir: Path) -> Path:
    """The complete checkpoint of ``output_dir`` with the most optimizer steps."""
    checkpoints = [p for p in output_dir.glob("checkpoints/*") if checkpoint_number(p) is not None and is_complete(p)]
    if not checkpoints:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
    return max(checkpoints, key=lambda p: json.loads((p / STATE_FILE).read_text())["global_step"])


def resume_state(checkpoint: Path, run: dict[str, Any], force: bool) -> TrainerState:
    """The trainer state of ``checkpoint`` for a run of signature ``run``; a checkpoint of another run (another
    signature) is refused, naming what changed, unless ``force`` (then the change is logged)."""
    if not is_complete(checkpoint):
        raise FileNotFoundError(f"{checkpoint} is not a checkpoint of this script (no {STATE_FILE})")
    before = json.loads((checkpoint / STATE_FILE).read_text()).get("run", {})
    changed = {key: (before.get(key), now) for key, now in run.items() if before.get(key) != now}
    if changed and not force:
        raise ResumeError(
            f"{checkpoint} was made by another run: "
            + "; ".join(f"{key} {old!r} there, {new!r} now" for key, (old, new) in changed.items())
            + ". Resume with the same settings, or pass --force_resume to continue anyway."
        )
    if changed:
        logger.warning(
            f"resuming {checkpoint} with changed settings (--force_resume): {changed}; the checkpoint's "
            "optimizer and scheduler states (learning rates included) are restored as they were saved"
        )
    return TrainerState.load(checkpoint, run)


def save_checkpoint(
    accelerator: Accelerator, owned: OwnedCheckpoints, state: TrainerState, total_limit: int | None
) -> Path:
    """Save the accelerate state and ``state`` in the next checkpoint folder of ``owned`` (claimed first, so a
    killed save is this run's to remove), then keep only the newest ``total_limit`` of the run's checkpoints."""
    folder = owned.next_folder()
    if accelerator.is_main_process:
        owned.claim(folder)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(folder))
    if accelerator.is_main_process:
        state.save(folder)
        for path in owned.rotate(total_limit, is_complete):
            logger.info(f"removed {path} (--checkpoints_total_limit {total_limit})")
    return folder


def best_model_folder(output_dir: Path) -> Path:
    """Where the best epoch's model is: ``best_model/``; once a finished run has removed it (`remove_best_copy`), a
    run resumed in the same folder finds that model in the folder itself (the only fallback; else an error)."""
    if (output_dir / BEST_DIR / "config.json").is_file():
        return output_dir / BEST_DIR
    if (output_dir / "config.json").is_file():
        logger.info(f"the best epoch's model is the one {output_dir} holds (no {BEST_DIR}/: the run had finished)")
        return output_dir
    raise FileNotFoundError(f"no model of the best dev epoch in {output_dir / BEST_DIR} or {output_dir}")


def remove_best_copy(output_dir: Path) -> None:
    """Remove ``best_model/``, the best epoch's copy kept during training, once the output folder holds that model
    itself (never a link: nothing outside the output folder is touched)."""
    best = output_dir / BEST_DIR
    if best.is_dir() and not best.is_symlink():
        shutil.rmtree(best)
