"""Ground a dataset split once and store the result in its grounding columns (CONTRACT.md).

python -m datasets_scripts.ground_dataset --dataset FOLDER_OR_REPO [--config twitter2017] --split train
    --output_dir OUT [--grounder detector] [--grounder_kwargs '{"box_threshold": 0.3}'] [--chunk_size 256]
Several processes / GPUs: ``accelerate launch -m datasets_scripts.ground_dataset ...`` (same arguments), or
``torchrun --nproc_per_node N -m datasets_scripts.ground_dataset ...``. Without a GPU (no torch accelerator) the
processes form a CPU process group (gloo; ``Accelerator(cpu=True)``, since accelerate forms one on CPU only then):
``torchrun --nproc_per_node N`` or ``accelerate launch --multi_gpu --num_processes N`` start them, while
``accelerate launch --cpu --num_processes N`` starts a single process (accelerate starts several CPU processes only
through mpirun, ``--mpirun_hostfile``). Each process logs which chunks it grounds.

``OUT`` is checked first: a file in its place or a folder that cannot be written is an error before the dataset is
loaded. The split is cut into chunks of ``chunk_size`` rows; chunk ``k`` is grounded by process ``k % processes``
(batched inside the grounder) and written atomically to ``OUT/.chunks/<split>/<grounder>-<hash>/`` (one folder per
grounder and ``--grounder_kwargs``, `chunk_key`), so an interrupted run resumes where it stopped and a run with
another grounder or other settings never reuses its chunks. Once every chunk exists, the main process joins them to
the split and writes ``OUT/<split>.parquet`` (load it with ``datasets.load_dataset("parquet", data_files=...)``).
Tweets without a readable image keep grounder "" (not grounded); a grounded tweet with nothing found has its
grounder's name and empty lists. Chunking, resuming and joining are the only hand-written parts; grounding is
`modeling_umgf.grounding`, data parallelism is accelerate's.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
from tqdm.auto import tqdm

from modeling_umgf.grounder_registry import build_grounder
from modeling_umgf.grounding import Grounder, Grounding, ground_batch
from modeling_umgf.image_utils import load_images

from .output_folder import OutputFolderError, writable_folder
from .twitter_mner import FEATURES

logger = logging.getLogger(__name__)
GROUNDING_FEATURES = datasets.Features(
    {"id": FEATURES["id"], **{column: FEATURES[column] for column in Grounding.COLUMNS}}
)


def ground_rows(rows: dict[str, list[Any]], grounder: Grounder, reground: bool = False) -> dict[str, list[Any]]:
    """Ground a batch of rows (``id``, ``tokens``, ``image``, optionally the grounding columns) with one batched
    grounder call (`modeling_umgf.grounding.ground_batch`): ``id`` plus the grounding columns.

    Rows keep the grounding they have unless ``reground`` is set and another grounder made it; rows without a
    readable image and without a grounding stay ungrounded (grounder "")."""
    given = None
    if all(column in rows for column in Grounding.COLUMNS):
        given = [
            Grounding.of({column: rows[column][i] for column in Grounding.COLUMNS}, sample)
            for i, sample in enumerate(rows["id"])
        ]
    images = load_images(rows["image"], rows["id"])
    found = ground_batch(grounder, images, rows["tokens"], rows["id"], given, reground)
    columns = [(grounding or Grounding()).to_columns() for grounding in found]
    return {"id": list(rows["id"]), **{column: [c[column] for c in columns] for column in Grounding.COLUMNS}}


def ground_dataset(dataset: datasets.Dataset, grounder: Grounder, num_proc: int | None = None) -> datasets.Dataset:
    """``dataset`` with its grounding columns filled by ``grounder`` where another grounder (or none) made them, and
    every box clipped to its image (so cached features and later crops see the same objects). Rows without an
    image keep their columns. This is the grounding stage of ``train_umgf.py``."""
    if "image" not in dataset.column_names:
        return dataset

    def ground(rows: dict[str, list[Any]]) -> dict[str, list[Any]]:
        grounded = ground_rows(rows, grounder, reground=True)
        return {column: grounded[column] for column in Grounding.COLUMNS}

    return dataset.map(ground, batched=True, batch_size=32, num_proc=num_proc, desc=f"grounding ({grounder.name})")


def ground_split(
    split: datasets.Dataset,
    grounder: Grounder,
    work_dir: Path,
    chunk_size: int = 256,
    process_index: int = 0,
    num_processes: int = 1,
    show_progress: bool = True,
) -> list[Path]:
    """Ground this process's share of the chunks of ``split`` that ``work_dir`` does not hold yet.

    Returns the paths of all chunk files of the split (in row order), done or not.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    starts = range(0, len(split), chunk_size)
    paths = [work_dir / f"rows-{start:09d}-{min(start + chunk_size, len(split)):09d}.parquet" for start in starts]
    mine = range(process_index, len(paths), num_processes)
    todo = [k for k in mine if not paths[k].exists()]
    done = len(mine) - len(todo)
    logger.info(
        "process %d of %d grounds chunks %s of %d (%d already done)",
        process_index,
        num_processes,
        list(mine),
        len(paths),
        done,
    )
    for k in tqdm(todo, desc=f"grounding ({done} chunks already done)", disable=not show_progress):
        start, path = starts[k], paths[k]
        rows = split.select_columns(["id", "tokens", "image"])[start : start + chunk_size]
        partial = path.with_suffix(".partial")
        datasets.Dataset.from_dict(ground_rows(rows, grounder), features=GROUNDING_FEATURES).to_parquet(str(partial))
        os.replace(partial, path)  # atomic: a chunk file exists only once complete
    return paths


def join_grounding(split: datasets.Dataset, chunk_paths: Sequence[Path]) -> datasets.Dataset:
    """``split`` with its grounding columns replaced by those of the chunk files (checked row by row)."""
    grounding = datasets.concatenate_datasets([datasets.Dataset.from_parquet(str(path)) for path in chunk_paths])
    if grounding["id"] != split["id"]:
        raise ValueError("the grounding chunks do not match the split's ids: delete the chunk folder and re-run")
    kept = split.remove_columns([column for column in Grounding.COLUMNS if column in split.column_names])
    return datasets.concatenate_datasets([kept, grounding.remove_columns("id")], axis=1)


def chunk_key(grounder: str, grounder_kwargs: dict[str, Any]) -> str:
    """The chunk folder name of a grounder and its settings: ``<grounder>-<first 12 hex digits of the SHA-256 of
    the settings as sorted JSON>``."""
    settings = json.dumps(grounder_kwargs, sort_keys=True, default=str)
    return f"{grounder}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dataset", required=True, help="folder saved with save_to_disk, a Parquet/Hub-layout folder, or a Hub repo"
    )
    parser.add_argument("--config", help="dataset config (e.g. twitter2017)")
    parser.add_argument("--split", required=True)
    parser.add_argument("--output_dir", type=Path, required=True)
    parser.add_argument("--grounder", default="detector", help="detector, release, grid or precomputed")
    parser.add_argument("--grounder_kwargs", type=json.loads, default={}, help="JSON keyword arguments of the grounder")
    parser.add_argument("--chunk_size", type=_positive_int, default=256, help="rows per resumable chunk")
    return parser


def _positive_int(value: str) -> int:
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _load(dataset: str, config: str | None, split: str) -> datasets.Dataset:
    if (Path(dataset) / "dataset_info.json").exists() or (Path(dataset) / "dataset_dict.json").exists():
        loaded = datasets.load_from_disk(dataset)
        return loaded[split] if isinstance(loaded, datasets.DatasetDict) else loaded
    return datasets.load_dataset(dataset, config, split=split)


def has_accelerator() -> bool:
    """Whether torch sees a GPU (or another accelerator); ``torch.accelerator`` exists from torch 2.6."""
    accelerator = getattr(torch, "accelerator", None)
    return bool(accelerator.is_available()) if accelerator is not None else torch.cuda.is_available()


def main(argv: Sequence[str] | None = None) -> Path:
    """Run the command; returns the written Parquet file."""
    from accelerate import Accelerator

    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    try:
        writable_folder(args.output_dir)
    except OutputFolderError as error:
        parser.error(f"--output_dir {args.output_dir}: {error}")
    accelerator = Accelerator(cpu=not has_accelerator())
    with accelerator.main_process_first():
        split = _load(args.dataset, args.config, args.split)
    if not isinstance(args.grounder_kwargs, dict):
        parser.error(f"--grounder_kwargs must be a JSON object, got {json.dumps(args.grounder_kwargs)[:80]}")
    kwargs = dict(args.grounder_kwargs)
    if args.grounder in ("detector", "release"):
        kwargs.setdefault("device", str(accelerator.device))
    try:
        grounder = build_grounder(args.grounder, **kwargs)
    except ValueError as error:
        parser.error(f"--grounder {args.grounder} --grounder_kwargs {json.dumps(args.grounder_kwargs)}: {error}")
    chunks = ground_split(
        split,
        grounder,
        args.output_dir / ".chunks" / args.split / chunk_key(args.grounder, args.grounder_kwargs),
        args.chunk_size,
        accelerator.process_index,
        accelerator.num_processes,
        accelerator.is_local_main_process,
    )
    accelerator.wait_for_everyone()
    output = args.output_dir / f"{args.split}.parquet"
    if accelerator.is_main_process:
        partial = output.with_name(f".{output.name}.partial")
        join_grounding(split, chunks).to_parquet(str(partial))
        os.replace(partial, output)  # written beside, then renamed: never through a link, never half-written
        logger.info("wrote %s", output)
    accelerator.wait_for_everyone()
    return output


if __name__ == "__main__":
    main()
