#!/usr/bin/env python
"""Train and evaluate UMGF (Zhang et al., AAAI 2021) for multimodal NER with 🤗 Accelerate.

With no arguments it runs the main job offline: a small UMGF is trained on a synthetic multimodal task
generated on the fly (`datasets_scripts.synthetic`: made-up sentences and drawn images where, for ambiguous
names, only the image tells the entity type), then evaluated on its test split with and without the images::

    python train_umgf.py                    # or: accelerate launch train_umgf.py

Real data (Twitter-2015 / 2017 / 2017c, the dataset columns of CONTRACT.md) comes from the UMT release text (+ an
image folder), or from a dataset exported by ``python -m datasets_scripts build`` (local folder or Hub repo)::

    accelerate launch train_umgf.py --umt_data_dir ../shared/data --dataset_config_name twitter2017 \\
        --image_dir twitter2017_images --text_model_name_or_path bert-base-cased --vision_weights timm \\
        --output_dir outputs/umgf-t17

The stages of `main`, top to bottom: arguments; accelerator, logging and seed; data; model and processor; visual
preprocessing done once (grounding, then the feature cache of a frozen backbone); dataloaders, optimizer and
scheduler; resuming; the training loop, which selects the epoch with the best dev F1; test evaluation (with and
without images, and a second test config for cross-domain runs); outputs (``all_results.json``, per-sentence
predictions, the model folder with its card) and the Hub.

Scores are seqeval's default (conlleval-compatible) mode, micro-averaged; see `modeling_umgf.tools.metrics` (``--metric
authors`` adds the UMGF authors' scoring and their word handling, and selects on it). Every gold
entity of every test sentence is scored: the words a sentence loses to ``--max_length`` are predicted O, never
dropped. Several seeds: ``python run_seeds.py``; a paired bootstrap between two runs: ``python compare_predictions.py``.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import json
import logging
import math
import os
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from accelerate.utils import imports as accelerate_imports
from huggingface_hub import create_repo
from huggingface_hub.utils import validate_repo_id
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, BertConfig, get_scheduler

from datasets_scripts.authors_format import authors_split_scores, drop_empty_words
from datasets_scripts.ground_dataset import ground_dataset, has_accelerator
from datasets_scripts.hub_layout import check_parquet_shards
from datasets_scripts.output_folder import OutputFolderError, writable_folder
from datasets_scripts.release_crops import attach_release_crops
from datasets_scripts.synthetic import SyntheticMNERConfig, build_synthetic_dataset, build_tokenizer, function_words
from modeling_umgf import PRESETS, UMGFConfig, UMGFForTokenClassification
from modeling_umgf.configuration_umgf import DEFAULT_GROUNDER, PRESET_GROUNDERS
from modeling_umgf.grounder_registry import GROUNDERS
from modeling_umgf.image_processing_umgf import UMGFImageProcessor
from modeling_umgf.precision import PRECISIONS, inference_copy, resolve_precision
from modeling_umgf.processing_umgf import UMGFProcessor
from modeling_umgf.schema import GROUNDING_COLUMNS, VISUAL_INPUTS
from modeling_umgf.tools import hub
from modeling_umgf.tools.feature_cache import cache_object_features
from modeling_umgf.tools.metrics import entity_scores, format_table2, sentence_counts
from modeling_umgf.tools.run_folder import (
    OwnedCheckpoints,
    RunFolderError,
    check_run_folder,
    checkpoint_number,
    lock_run_folder,
    public_arguments,
    replace_entries,
)

logger = get_logger(__name__)

STATE_FILE = "trainer_state.json"
EXAMPLES = 3  # test posts saved as the demo's examples (synthetic job)
BEST_DIR = "best_model"

#: The small model of the synthetic main job: the paper's architecture at toy size, from scratch. A word is read as
#: the mean of its sub-token nodes: an encoder trained from scratch does not yet carry what "##son" says onto the
#: first sub-token of "kal##son" (reading the first sub-token, the model learns no text cue; BENCHMARKS.md).
SYNTHETIC_MODEL: dict[str, Any] = dict(
    vision_backbone="test_resnet",
    vision_feature_dim=96,
    hidden_size=64,
    num_attention_heads=4,
    intermediate_size=128,
    dropout=0.1,
    word_readout="mean",
)
SYNTHETIC_TEXT_MODEL: dict[str, Any] = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=64
)
#: Side of the synthetic task's object crops.
SYNTHETIC_CROP_SIZE = 32
#: Training defaults: the paper's lr 1e-4 and batch 16; the rest is this project's choice, not the paper's (which
#: names neither optimizer nor schedule): AdamW, linear decay after a 10 % warmup, clipping at 1.0, 3 epochs, shuffled.
PAPER_TRAINING: dict[str, Any] = dict(
    learning_rate=1e-4,
    num_train_epochs=3,
    per_device_train_batch_size=16,
    freeze_vision_backbone=False,
    optimizer="adamw",
    lr_scheduler_type="linear",
    warmup_ratio=0.1,
    max_grad_norm=1.0,
    weight_decay=0.0,
    shuffle_train=True,
)
#: The authors' recipe (train() of their ddp_mmner.py), the defaults of the "release" preset on real data: Adam,
#: lr 1e-4 for every parameter, StepLR (x0.8 every 2 epochs), 30 epochs, batch 16, no warmup, no clipping, and
#: their data order: no shuffling (the *_authors configs are in their file order).
RELEASE_TRAINING: dict[str, Any] = {
    **PAPER_TRAINING,
    "num_train_epochs": 30,
    "optimizer": "adam",
    "lr_scheduler_type": "step",
    "warmup_ratio": 0.0,
    "max_grad_norm": 0.0,
    "shuffle_train": False,
}
#: The synthetic job (encoders trained from scratch): a higher lr, more epochs, a frozen (cached) backbone.
SYNTHETIC_TRAINING: dict[str, Any] = {
    **PAPER_TRAINING,
    "learning_rate": 2e-3,
    "num_train_epochs": 10,
    "freeze_vision_backbone": True,
}
#: accelerate's experiment trackers (`--report_to`).
TRACKERS: tuple[str, ...] = (
    "tensorboard",
    "wandb",
    "trackio",
    "mlflow",
    "comet_ml",
    "aim",
    "clearml",
    "dvclive",
    "swanlab",
)
#: StepLR of the "step" scheduler: the lr is multiplied by STEP_GAMMA every STEP_EPOCHS epochs (the authors').
STEP_EPOCHS, STEP_GAMMA = 2, 0.8


# ---------------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data (default: the built-in synthetic task)")
    data.add_argument("--umt_data_dir", type=Path, help="UMT release data/ folder (<dir>/twitter2015/train.txt ...)")
    data.add_argument(
        "--dataset_name", help="dataset folder or Hub repo exported by `python -m datasets_scripts build`"
    )
    data.add_argument(
        "--dataset_config_name", help="twitter2015, twitter2017 or twitter2017c (optional for a one-config dataset)"
    )
    data.add_argument("--text_column_name", help="the dataset's column of words (default: tokens)")
    data.add_argument("--label_column_name", help="the dataset's column of word tags (default: ner_tags)")
    data.add_argument("--image_dir", type=Path, help="folder of <IMGID>.jpg images (with --umt_data_dir)")
    data.add_argument("--test_dataset_config_name", help="cross-domain: also test on this config's test split")
    data.add_argument("--test_image_dir", type=Path, help="image folder of --test_dataset_config_name")
    data.add_argument("--grounder", choices=sorted(GROUNDERS), help="the grounder instead of the preset's")
    data.add_argument(
        "--release_crops_dir",
        type=Path,
        help="the authors' released crops (<dir>/<IMGID>/crop_<type>_<IMGID>.jpg): used as every tweet's objects",
    )
    data.add_argument(
        "--release_crops_missing",
        choices=["error", "text-only"],
        default="error",
        help="a tweet without its released crops: stop with an error naming it (default), or use it text-only",
    )
    data.add_argument(
        "--if_no_images",
        choices=["warn", "text-only"],
        default="warn",
        help="when the data has no image at all: say so and train the preset as it is (default), or train the "
        "'text-only' preset instead (a visual preset would only build a vision backbone that never sees an image)",
    )
    data.add_argument("--max_length", type=int, default=128, help="max sub-tokens per sentence (paper: 128)")
    data.add_argument("--max_train_samples", type=int)
    data.add_argument("--max_eval_samples", type=int, help="cap on dev and test sentences (quick runs)")
    data.add_argument(
        "--synthetic_sizes",
        type=int,
        nargs=3,
        metavar=("TRAIN", "DEV", "TEST"),
        help="sentences per split of the synthetic task (default 1200 200 300)",
    )
    data.add_argument("--preprocessing_num_workers", type=int, help="processes for dataset.map (grounding)")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="UMGFConfig preset (default: paper)")
    model.add_argument("--model_name_or_path", help="a trained UMGF checkpoint (folder or Hub id) to fine-tune")
    model.add_argument("--text_model_name_or_path", help="pretrained BERT-like encoder (Hub id or folder)")
    model.add_argument("--vision_backbone", help="timm model name of the object encoder (default: the preset's)")
    model.add_argument(
        "--vision_weights",
        default="none",
        help="'timm' (timm's pretrained weights, downloaded), a local .safetensors/.pth file, or 'none'",
    )
    model.add_argument(
        "--config_overrides", default="", help="UMGFConfig fields, e.g. 'hidden_size=256,num_fusion_layers=1'"
    )
    model.add_argument(
        "--freeze_vision_backbone",
        action=argparse.BooleanOptionalAction,
        help="do not train the vision backbone: its object features are computed once and cached on disk "
        "(default: off; on for the synthetic job)",
    )
    model.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="recompute activations in the backward pass (BERT, fusion layers and the vision backbone): same "
        "gradients, much less memory, more time (BENCHMARKS.md)",
    )
    model.add_argument(
        "--inference_precision",
        choices=PRECISIONS,
        default="fp32",
        help="precision of the test evaluation (modeling_umgf/precision.py; dev selection stays fp32): 'auto' "
        "is bf16 where the hardware has bfloat16 units; agreement with fp32 in BENCHMARKS.md",
    )
    model.add_argument(
        "--feature_cache_dir", type=Path, help="visual feature cache (default: <output_dir>/feature_cache)"
    )

    optim = parser.add_argument_group(
        "optimisation (defaults: the paper's; the synthetic job uses lr 2e-3, 6 epochs, frozen vision)"
    )
    optim.add_argument("--learning_rate", type=float, help="lr of the new layers (fusion, MLPs, decoder)")
    optim.add_argument(
        "--text_encoder_learning_rate", type=float, help="lr of the text encoder (default: --learning_rate)"
    )
    optim.add_argument("--vision_learning_rate", type=float, help="lr of the vision backbone (default: text encoder's)")
    optim.add_argument("--weight_decay", type=float, help="AdamW weight decay (default 0)")
    optim.add_argument("--optimizer", choices=["adamw", "adam"], help="default: adamw; adam for the release preset")
    optim.add_argument(
        "--num_train_epochs", type=int, help="0 with --model_name_or_path: evaluate that model only (no training)"
    )
    optim.add_argument("--max_train_steps", type=int, help="stop after this many optimizer steps")
    optim.add_argument("--per_device_train_batch_size", type=int)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=32)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument(
        "--lr_scheduler_type",
        choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup", "step"],
        help=f"default: linear; 'step' multiplies the lr by {STEP_GAMMA} every {STEP_EPOCHS} epochs (release preset)",
    )
    optim.add_argument("--warmup_ratio", type=float, help="share of the steps with a linear warmup (default 0.1)")
    optim.add_argument("--num_warmup_steps", type=int, help="warmup steps (instead of --warmup_ratio)")
    optim.add_argument("--max_grad_norm", type=float, help="gradient clipping (default 1.0; 0: none)")
    optim.add_argument(
        "--shuffle_train",
        action=argparse.BooleanOptionalAction,
        help="shuffle the training data every epoch (default: yes; no for the release preset, as the authors)",
    )
    optim.add_argument("--seed", type=int, default=42)
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="default: accelerate's config")

    run = parser.add_argument_group("outputs, checkpoints, tracking, Hub")
    run.add_argument(
        "--metric",
        choices=["seqeval", "authors"],
        default="seqeval",
        help="'authors': also score as the UMGF authors (their metric.py; words that tokenise to nothing removed with "
        "their tags from every split, words cut by --max_length left out) and select the dev epoch on it",
    )
    run.add_argument("--output_dir", type=Path, default=Path("outputs/umgf"))
    run.add_argument(
        "--overwrite_output_dir",
        action="store_true",
        help="replace the model an --output_dir already holds (else such a folder is refused)",
    )
    run.add_argument("--checkpointing_steps", help="'epoch', or save every N optimizer steps")
    run.add_argument(
        "--checkpoints_total_limit", type=int, help="keep only the newest N checkpoints (accelerate's total_limit)"
    )
    run.add_argument("--resume_from_checkpoint", help="a checkpoint folder, or 'latest' (newest in --output_dir)")
    run.add_argument(
        "--force_resume",
        action="store_true",
        help="resume even if the checkpoint was made with other settings (batch size, learning rate, dataset, ...); "
        "the checkpoint's optimizer and scheduler states are restored",
    )
    run.add_argument("--with_tracking", action="store_true", help="log to --report_to (default: every installed one)")
    run.add_argument(
        "--report_to",
        choices=["none", "all", *TRACKERS],
        help="experiment tracker(s) of accelerate (default: none; 'all' with --with_tracking)",
    )
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--push_to_hub", action="store_true", help="push the best model, processor and card to the Hub")
    run.add_argument("--hub_model_id", help="Hub repo of --push_to_hub (default: the output folder's name)")
    run.add_argument("--hub_token", help="Hub token (never written to disk, logged or sent to a tracker)")
    run.add_argument("--hub_private_repo", action="store_true")
    run.add_argument("--hub_dataset_id", help="Hub id of the training dataset, for the model card")
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return args


def parse_config_overrides(text: str) -> dict[str, Any]:
    """'a=1,b=0.5,c=crf' -> {"a": 1, "b": 0.5, "c": "crf"} (Python literals where they parse, else strings)."""
    overrides: dict[str, Any] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--config_overrides: expected key=value, got {item!r}")
        try:
            overrides[key.strip()] = ast.literal_eval(value.strip())
        except (ValueError, SyntaxError):
            overrides[key.strip()] = value.strip()
    unknown = sorted(set(overrides) - set(UMGFConfig().to_dict()))
    if unknown:
        raise ValueError(f"--config_overrides: unknown UMGFConfig fields {unknown}")
    return overrides


def is_synthetic(args: argparse.Namespace) -> bool:
    """No dataset given: the built-in synthetic task."""
    return args.umt_data_dir is None and args.dataset_name is None


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no data or weights, so bad arguments fail in a second with a clear message.
    Reads ``args`` only."""
    if args.umt_data_dir is not None and args.dataset_name is not None:
        raise ValueError("give --umt_data_dir or --dataset_name, not both")
    if args.umt_data_dir is not None and not args.dataset_config_name:
        raise ValueError("--dataset_config_name is required with --umt_data_dir (twitter2015, twitter2017 or 2017c)")
    if args.umt_data_dir is not None:
        for config_name in filter(None, (args.dataset_config_name, args.test_dataset_config_name)):
            folder = args.umt_data_dir / config_name.removesuffix("c")
            missing = [name for name in ("train.txt", "valid.txt", "test.txt") if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(
                    f"--umt_data_dir: {folder} lacks {missing} (expected the UMT release data/ folder)"
                )
    for flag in ("image_dir", "test_image_dir"):
        folder = getattr(args, flag)
        if folder is not None and not folder.is_dir():
            raise FileNotFoundError(f"--{flag}: no such folder {folder}")
    if args.dataset_name and hub.is_local_path(args.dataset_name) and not Path(args.dataset_name).exists():
        raise FileNotFoundError(f"--dataset_name: no such folder {args.dataset_name}")
    for flag in ("model_name_or_path", "text_model_name_or_path"):
        name = getattr(args, flag)
        if name and hub.is_local_path(name) and not Path(name).is_dir():
            raise FileNotFoundError(f"--{flag}: no such folder {name}")
    if args.model_name_or_path and args.text_model_name_or_path:
        raise ValueError(
            "give --model_name_or_path (a UMGF checkpoint, or a text encoder to start from) or "
            "--text_model_name_or_path, not both"
        )
    if not is_synthetic(args) and not (args.model_name_or_path or args.text_model_name_or_path):
        raise ValueError("real data needs --text_model_name_or_path (e.g. bert-base-cased) or --model_name_or_path")
    if args.vision_weights not in ("none", "timm") and not Path(args.vision_weights).is_file():
        raise FileNotFoundError(f"--vision_weights: no such file {args.vision_weights} (or use 'timm' / 'none')")
    parse_config_overrides(args.config_overrides)
    if args.num_train_epochs == 0 and not args.model_name_or_path:
        raise ValueError("--num_train_epochs 0 only evaluates a trained model: give it with --model_name_or_path")
    if args.num_train_epochs is not None and args.num_train_epochs < 0:
        raise ValueError(f"--num_train_epochs must be >= 0, got {args.num_train_epochs}")
    if args.release_crops_dir is not None and not args.release_crops_dir.is_dir():
        raise FileNotFoundError(f"--release_crops_dir: no such folder {args.release_crops_dir}")
    if args.release_crops_dir is not None and args.umt_data_dir is None and args.dataset_name is None:
        raise ValueError("--release_crops_dir goes with Twitter data (--umt_data_dir or --dataset_name)")
    if args.checkpointing_steps not in (None, "epoch") and (
        not str(args.checkpointing_steps).isdigit() or int(args.checkpointing_steps) == 0
    ):
        raise ValueError(
            f"--checkpointing_steps must be 'epoch' or a positive number of steps, got {args.checkpointing_steps!r}"
        )
    if args.resume_from_checkpoint not in (None, "latest") and not Path(args.resume_from_checkpoint).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no such checkpoint folder {args.resume_from_checkpoint}")
    if args.report_to in TRACKERS and not getattr(accelerate_imports, f"is_{args.report_to}_available")():
        raise ValueError(f"--report_to {args.report_to} needs its package: pip install {args.report_to}")
    if args.gradient_accumulation_steps < 1:
        raise ValueError("--gradient_accumulation_steps must be >= 1")
    if args.checkpoints_total_limit is not None and args.checkpoints_total_limit < 1:
        raise ValueError(f"--checkpoints_total_limit must be >= 1, got {args.checkpoints_total_limit}")
    if args.num_warmup_steps is not None and args.num_warmup_steps < 0:
        raise ValueError(f"--num_warmup_steps must be >= 0, got {args.num_warmup_steps}")
    if args.push_to_hub and args.hub_model_id:
        validate_repo_id(args.hub_model_id)  # raises HFValidationError (a ValueError) naming what is wrong
    if args.hub_dataset_id and hub.hub_id(args.hub_dataset_id) is None:
        raise ValueError(f"--hub_dataset_id must be a Hub dataset id (user/name), got {args.hub_dataset_id!r}")
    try:
        writable_folder(args.output_dir)
    except OutputFolderError as error:
        raise ValueError(f"--output_dir: {error}") from None


def with_defaults(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` with the defaults that depend on the job filled in (synthetic job or the paper's)."""
    if is_synthetic(args):
        defaults = SYNTHETIC_TRAINING
    else:
        defaults = RELEASE_TRAINING if args.preset == "release" else PAPER_TRAINING
    settings = {**vars(args), **{key: value for key, value in defaults.items() if getattr(args, key) is None}}
    settings["text_encoder_learning_rate"] = args.text_encoder_learning_rate or settings["learning_rate"]
    settings["vision_learning_rate"] = args.vision_learning_rate or settings["text_encoder_learning_rate"]
    settings["hub_model_id"] = args.hub_model_id or (args.output_dir.resolve().name if args.push_to_hub else None)
    settings["report_to"] = args.report_to or ("all" if args.with_tracking else "none")
    settings["dataset_config_name"] = dataset_config(args)
    settings["encoder_as_model_name"] = False
    if args.model_name_or_path and AutoConfig.from_pretrained(args.model_name_or_path).model_type != "umgf":
        # run_ner_no_trainer's habit: --model_name_or_path names the pretrained encoder to fine-tune
        settings["text_model_name_or_path"], settings["model_name_or_path"] = args.model_name_or_path, None
        settings["encoder_as_model_name"] = True
    return argparse.Namespace(**settings)


# --------------------------------------------------------------------------------------------------------- data
def load_splits(args: argparse.Namespace, config_name: str | None, image_dir: Path | None) -> datasets.DatasetDict:
    """The train / validation / test splits with the dataset columns of CONTRACT.md."""
    if is_synthetic(args):
        sizes = dict(zip(("train_size", "validation_size", "test_size"), args.synthetic_sizes or (1200, 200, 300)))
        return build_synthetic_dataset(SyntheticMNERConfig(**sizes))
    if args.umt_data_dir is not None:
        from datasets_scripts.twitter_mner import build_dataset

        dataset, reports = build_dataset(config_name, data_dir=args.umt_data_dir, image_dir=image_dir)
        for split, report in reports.items():
            logger.info(f"{config_name} {split}: {report.summary()}")
    else:
        if Path(args.dataset_name).is_dir():
            check_parquet_shards(args.dataset_name)  # a lost shard would silently train on fewer rows
        dataset = datasets.load_dataset(args.dataset_name, config_name)
        renames = {args.text_column_name: "tokens", args.label_column_name: "ner_tags"}
        for split in dataset:
            for column, name in renames.items():
                if column and column != name:
                    if column not in dataset[split].column_names:
                        raise ValueError(f"--dataset_name {args.dataset_name}: split {split} has no column {column!r}")
                    dataset[split] = dataset[split].rename_column(column, name)
    missing = {"train", "validation", "test"} - set(dataset)
    if missing:
        raise ValueError(f"dataset {config_name!r} lacks the splits {sorted(missing)}")
    return dataset


def dataset_config(args: argparse.Namespace) -> str | None:
    """The config to load: --dataset_config_name, or the only config of --dataset_name."""
    if args.dataset_config_name or args.dataset_name is None:
        return args.dataset_config_name
    names = datasets.get_dataset_config_names(args.dataset_name)
    if len(names) > 1:
        raise ValueError(
            f"--dataset_name {args.dataset_name} has the configs {names}: pick one with --dataset_config_name"
        )
    return names[0] if names else None


def label_names_of(dataset: datasets.Dataset) -> list[str]:
    inner = getattr(dataset.features["ner_tags"], "feature", None)
    if not isinstance(inner, datasets.ClassLabel):
        raise ValueError("the dataset's ner_tags must be a list of datasets.ClassLabel (CONTRACT.md)")
    return list(inner.names)


def limit(dataset: datasets.Dataset, count: int | None) -> datasets.Dataset:
    """The first ``count`` sentences, with a check that the ``id`` column names every sentence once
    (predictions are matched to gold sentences by id)."""
    dataset = dataset.select(range(min(count, len(dataset)))) if count else dataset
    ids = dataset["id"] if "id" in dataset.column_names else []
    if len(set(ids)) != len(dataset):
        raise ValueError(
            f"the dataset's 'id' column must hold a unique id per sentence ({len(set(ids))} ids for "
            f"{len(dataset)} sentences)"
        )
    return dataset


def without_images(dataset: datasets.Dataset) -> datasets.Dataset:
    """The same sentences with no image and no grounding: every example has zero objects."""
    return dataset.remove_columns([c for c in ("image", *GROUNDING_COLUMNS) if c in dataset.column_names])


def has_images(dataset: datasets.Dataset) -> bool:
    """Whether any sentence of ``dataset`` has an image (the Arrow column's null count: no image is decoded)."""
    if "image" not in dataset.column_names or len(dataset) == 0:
        return False
    column = dataset.with_format("arrow")["image"]
    return column.null_count < len(column)


#: The preset of the fusion model without a visual branch, chosen by --if_no_images text-only.
TEXT_ONLY_PRESET = "text-only"


def check_images(args: argparse.Namespace, splits: dict[str, datasets.Dataset]) -> bool:
    """Whether the data has images. Without any (e.g. the UMT text alone, no --image_dir), a visual preset would
    build a vision backbone that never sees an image: say so, and with ``--if_no_images text-only`` train the
    "text-only" preset instead (``args.preset`` is changed). A checkpoint given by --model_name_or_path is used as
    it is."""
    found = any(has_images(split) for split in splits.values())
    if found or is_synthetic(args) or args.model_name_or_path:
        return found
    if PRESETS[args.preset].get("use_visual", True):
        if args.if_no_images == TEXT_ONLY_PRESET:
            logger.warning(
                f"the data has no images: training the {TEXT_ONLY_PRESET!r} preset instead of {args.preset!r} "
                "(--if_no_images text-only)"
            )
            args.preset = TEXT_ONLY_PRESET
        else:
            logger.warning(
                f"the data has no images (no --image_dir, or none of its images found): the {args.preset!r} "
                "preset's vision branch will never be used. Pass --image_dir to use the images, or train without "
                f"one: --preset {TEXT_ONLY_PRESET} (or --if_no_images {TEXT_ONLY_PRESET})"
            )
    return found


def preset_of(config: UMGFConfig, grounder: str | None = None) -> str:
    """The name of the preset a saved model was built with: the most specific preset whose every field matches
    ``config`` ("wo-tar" is "paper" with the grid grounder); "paper" when none does."""
    matches = [
        name
        for name, fields in PRESETS.items()
        if fields and all(getattr(config, key, None) == value for key, value in fields.items())
    ]
    best = max(matches, key=lambda name: len(PRESETS[name]), default="paper")
    return "wo-tar" if best == "paper" and grounder == PRESET_GROUNDERS["wo-tar"] else best


def encoder_name(model: UMGFForTokenClassification) -> str:
    """The text encoder's name for people: its Hub id, the last part of its local path, or (no name, as for the
    synthetic job's encoder trained from scratch) its type and size."""
    text_config = model.config.text_encoder_config
    return hub.encoder_display_name(
        getattr(text_config, "name_or_path", ""), text_config.model_type, text_config.hidden_size
    )


# -------------------------------------------------------------------------------------------------------- model
def build_model_and_processor(
    args: argparse.Namespace, label_names: list[str], images: bool = True
) -> tuple[UMGFForTokenClassification, UMGFProcessor]:
    """A UMGF checkpoint to fine-tune, a new model over pretrained encoders, or the synthetic job's small model."""
    id2label = dict(enumerate(label_names))
    grounder = args.grounder or PRESET_GROUNDERS.get(args.preset, DEFAULT_GROUNDER)
    if args.model_name_or_path:
        config = AutoConfig.from_pretrained(args.model_name_or_path)
        checkpoint_labels = [config.id2label[i] for i in range(len(config.id2label))]
        if checkpoint_labels != label_names:
            raise ValueError(
                f"label set mismatch: checkpoint {args.model_name_or_path} tags {checkpoint_labels}, "
                f"but the dataset has {label_names}"
            )
        if args.preset != "paper" or args.config_overrides:
            logger.warning("--preset / --config_overrides are ignored: the checkpoint's configuration is used")
        model, processor = hub.load_saved(args.model_name_or_path)
        processor.max_length = args.max_length
        if args.grounder:
            processor.set_grounder(args.grounder)
        return model, processor
    overrides = {
        **parse_config_overrides(args.config_overrides),
        "id2label": id2label,
        "label2id": {label: i for i, label in id2label.items()},
    }
    if args.vision_backbone:
        overrides["vision_backbone"] = args.vision_backbone
    if args.text_model_name_or_path:
        preset = {**PRESETS[args.preset], **overrides}
        vision = preset.pop("vision_backbone", UMGFConfig().vision_backbone)
        weights = {"none": False, "timm": True}.get(args.vision_weights, args.vision_weights)
        if weights is False and preset.get("use_visual", True) and images:
            logger.warning(
                f"the {vision} vision backbone starts from random weights: pass --vision_weights timm "
                "(or a local weights file) to use pretrained ones"
            )
        model = UMGFForTokenClassification.from_text_vision_pretrained(
            args.text_model_name_or_path, vision_backbone=vision, vision_weights=weights, **preset
        )
        tokenizer = AutoTokenizer.from_pretrained(args.text_model_name_or_path)
        image_processor = UMGFImageProcessor(model.config.vision_backbone)
        grounder_kwargs: dict[str, Any] = {}
    else:  # the synthetic job: encoders from scratch, its own tokenizer and crop transform
        text_config = BertConfig(vocab_size=len(build_tokenizer()), **SYNTHETIC_TEXT_MODEL)
        config = UMGFConfig.from_preset(args.preset, **{"text_config": text_config, **SYNTHETIC_MODEL, **overrides})
        model = UMGFForTokenClassification(config)
        tokenizer = build_tokenizer(model_max_length=SYNTHETIC_TEXT_MODEL["max_position_embeddings"])
        image_processor = UMGFImageProcessor(
            config.vision_backbone,
            data_config={
                "input_size": [3, SYNTHETIC_CROP_SIZE, SYNTHETIC_CROP_SIZE],
                "interpolation": "bilinear",
                "mean": [0.5] * 3,
                "std": [0.5] * 3,
                "crop_pct": 1.0,
                "crop_mode": "center",
            },
        )
        if grounder in ("detector", "release"):  # the task's images are grounded by their own symbol grounder
            grounder = "symbols"
        grounder_kwargs = {"function_words": function_words()} if grounder == "symbols" else {}
    # the tokenizer cuts sentences to the text encoder's positions (saved with it, for every pipeline)
    positions = getattr(model.config.text_encoder_config, "max_position_embeddings", None)
    if positions:
        tokenizer.model_max_length = min(tokenizer.model_max_length, positions)
    processor = UMGFProcessor(
        image_processor,
        tokenizer,
        grounder=grounder,
        grounder_kwargs=grounder_kwargs,
        max_length=args.max_length,
        label_names=label_names,
    )
    return model, processor


def parameter_groups(model: UMGFForTokenClassification, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Pretrained text encoder / vision backbone / new layers, each with its lr; no weight decay on biases
    and LayerNorm weights (frozen parameters are left out)."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = (
            "text"
            if name.startswith("umgf.text_encoder.")
            else "vision"
            if name.startswith("umgf.vision_backbone.")
            else "new"
        )
        no_decay = parameter.ndim < 2 or "LayerNorm" in name or "norm" in name.rsplit(".", 2)[-2]
        groups.setdefault((part, no_decay), []).append(parameter)
    lr = {"text": args.text_encoder_learning_rate, "vision": args.vision_learning_rate, "new": args.learning_rate}
    return [
        {
            "params": params,
            "lr": lr[part],
            "weight_decay": 0.0 if no_decay else args.weight_decay,
            "name": f"{part}{'_no_decay' * no_decay}",
        }
        for (part, no_decay), params in groups.items()
    ]


# --------------------------------------------------------------------------------------------------- evaluation
def model_inputs(batch: dict[str, Any], processor: UMGFProcessor, use_objects: bool) -> dict[str, Any]:
    """The model's keyword arguments from a collated batch: no metadata, no labels, and no visual inputs when
    the images are removed."""
    inputs, _ = processor.split_batch(batch)
    drop = {"labels"} | (set() if use_objects else set(VISUAL_INPUTS))
    return {key: value for key, value in inputs.items() if key not in drop}


@torch.no_grad()
def predict(
    model, dataloader, accelerator: Accelerator, processor: UMGFProcessor, use_objects: bool, desc: str
) -> dict[str, list[str]]:
    """Tag names for every word of every sentence, by sample id (words cut by truncation are tagged O)."""
    model.eval()
    predictions: dict[str, list[str]] = {}
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        outputs = model(**model_inputs(batch, processor, use_objects))
        tags = accelerator.gather_for_metrics(
            accelerator.pad_across_processes(outputs.predictions, dim=1, pad_index=-100)
        )
        ids = accelerator.gather_for_metrics(list(batch["sample_id"]), use_gather_object=True)
        num_words = accelerator.gather_for_metrics(list(batch["num_words"]), use_gather_object=True)
        for sample, words in zip(ids, processor.decode_word_predictions(tags.cpu(), num_words)):
            predictions[sample] = words
    return predictions


def score(
    dataset: datasets.Dataset, predictions: dict[str, list[str]], label_names: list[str]
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """seqeval scores of ``predictions`` against the gold tags of every sentence of ``dataset``, and the
    per-sentence records written to predictions_*.jsonl."""
    gold = [[label_names[t] for t in tags] for tags in dataset["ner_tags"]]
    missing = [sample for sample in dataset["id"] if sample not in predictions]
    if missing:
        raise RuntimeError(f"no prediction for {len(missing)} sentences, e.g. {missing[:3]}")
    pred = [predictions[sample] for sample in dataset["id"]]
    counts = sentence_counts(gold, pred)
    records = [
        {
            "id": sample,
            "tokens": tokens,
            "gold": g,
            "pred": p,
            "correct": int(c[0]),
            "predicted": int(c[1]),
            "gold_entities": int(c[2]),
        }
        for sample, tokens, g, p, c in zip(dataset["id"], dataset["tokens"], gold, pred, counts)
    ]
    return entity_scores(gold, pred), records


RUN_LOCAL_ARGUMENTS = frozenset(
    {
        "output_dir",
        "overwrite_output_dir",
        "checkpointing_steps",
        "checkpoints_total_limit",
        "resume_from_checkpoint",
        "force_resume",
        "with_tracking",
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
        "encoder_as_model_name",
        "inference_precision",
    }
)
"""Arguments that do not change what a run trains (outputs, logging, evaluation, workers): left out of the run
signature, so they may differ when resuming."""


def authors_scores(
    dataset: datasets.Dataset, predictions: dict[str, list[str]], label_names: list[str], processor: UMGFProcessor
) -> dict[str, Any]:
    """The UMGF authors' scores of ``predictions`` (`datasets_scripts.authors_format.authors_split_scores`)."""
    gold = [[label_names[t] for t in tags] for tags in dataset["ner_tags"]]
    pred = [predictions[sample] for sample in dataset["id"]]
    return authors_split_scores(dataset["tokens"], gold, pred, processor.tokenizer, processor.effective_max_length)


def run_signature(args: argparse.Namespace, num_processes: int) -> dict[str, Any]:
    """What a checkpoint records of its run: a run resuming from it must share all of it (unless --force_resume):
    every argument that shapes training (hyper-parameters, data, model; not `RUN_LOCAL_ARGUMENTS` nor secrets)."""
    if is_synthetic(args):
        data = f"synthetic {args.synthetic_sizes or 'default sizes'}"
    else:
        data = f"{args.umt_data_dir or args.dataset_name} {args.dataset_config_name}"
    settings = {
        key: (str(value) if isinstance(value, Path) else value)
        for key, value in sorted(public_arguments(vars(args)).items())
        if key not in RUN_LOCAL_ARGUMENTS
    }
    return {**settings, "num_processes": num_processes, "data": data}


def latest_checkpoint(output_dir: Path) -> Path:
    checkpoints = [
        p for p in output_dir.glob("checkpoints/*") if checkpoint_number(p) is not None and (p / STATE_FILE).is_file()
    ]
    if not checkpoints:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
    return max(checkpoints, key=lambda p: json.loads((p / STATE_FILE).read_text())["global_step"])


def print_tables(tables: dict[str, dict[str, Any]], args: argparse.Namespace, results: dict[str, Any]) -> None:
    data = "synthetic task" if is_synthetic(args) else args.dataset_config_name
    preset = results.get("preset", args.preset)
    names = {
        "test": "UMGF (with images)" if "test_without_images" in tables else f"UMGF ({preset})",
        "test_without_images": "UMGF (images removed)",
    }
    selected = (
        f"model evaluated as it is, dev F1 {100 * results['dev_f1']:.2f}"
        if results.get("mode") == "evaluate"
        else f"best epoch {results['best_epoch']} of dev F1 {100 * results['dev_f1']:.2f}"
    )
    print(f"\nTest results on {data} ({selected}; seqeval default, conlleval-compatible):")
    print(format_table2({names.get(key, key): scores for key, scores in tables.items()}))
    authors = {names.get(key, key): scores["authors"] for key, scores in tables.items() if "authors" in scores}
    if authors:
        print("\nThe same, scored as the UMGF authors (their metric.py; words cut by --max_length left out):")
        print(format_table2(authors))
    print()


def flat_scores(prefix: str, scores: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, float]:
    """run_ner_no_trainer's flat keys of one evaluation: ``<prefix>_precision``, ``_recall``, ``_f1`` (seqeval's
    micro averages, as in ``scores``) and ``_accuracy`` (the share of words tagged right, seqeval's
    `accuracy_score`), from the per-sentence ``records`` of `score`."""
    words = sum(len(record["gold"]) for record in records)
    right = sum(g == p for record in records for g, p in zip(record["gold"], record["pred"]))
    return {
        **{f"{prefix}_{key}": float(scores[key]) for key in ("precision", "recall", "f1")},
        f"{prefix}_accuracy": right / words if words else 0.0,
    }


def learning_warning(dev_f1: float, predicted: int, sentences: int, results: dict[str, Any]) -> str | None:
    """A loud message when the model has learned nothing visible: it predicts no entity at all on the test split
    (``predicted`` entities in ``sentences`` sentences) or its dev F1 is 0; None otherwise."""
    if predicted and dev_f1 > 0:
        return None
    what = (
        f"the model predicts no entity at all in the {sentences} test sentences (every word O)"
        if not predicted
        else "its dev F1 is 0.00"
    )
    if results.get("mode") == "evaluate":
        why = "Check that the model was trained on this kind of data and that its labels match."
    else:
        why = (
            f"It did not learn to tag: {results.get('global_step')} optimizer steps on "
            f"{results.get('train_samples')} sentences are likely too few for the CRF to leave the all-O "
            "solution. Train longer (--num_train_epochs), on more sentences (--max_train_samples), or with a "
            "higher --learning_rate for the new layers (README, Training: 'A first run on real data')."
        )
    return f"{what}. {why}"


def closing_summary(args: argparse.Namespace, results: dict[str, Any], written: list[Path], example: str) -> str:
    """What the run wrote and where, and a ready ``umgf-predict`` command for its model."""
    model = str(args.output_dir) if results.get("mode") != "evaluate" else str(args.model_name_or_path)
    lines = ["", "=" * 100, "Done." if results.get("mode") != "evaluate" else "Done (evaluation only, no training)."]
    if results.get("mode") != "evaluate":
        lines.append(f"  model, processor, pipeline code and model card: {args.output_dir}")
    lines += [f"  {path.name}: {path}" for path in written]
    lines.append(f"  tag a post: umgf-predict --model {shlex.quote(model)} --text {shlex.quote(example)}")
    for warning in results.get("warnings", []):
        lines.append(f"  WARNING: {warning}")
    lines.append("=" * 100)
    return "\n".join(lines)


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


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """One run: train, select the best dev epoch, test, save. Returns the results (also in all_results.json)."""
    args = with_defaults(parse_args(argv))
    threads = torch.get_num_threads()
    if is_synthetic(args) and "OMP_NUM_THREADS" not in os.environ:
        # The synthetic model is tiny (64-d): intra-op threads only add synchronisation, and on a busy machine
        # their spin-waits make a step several times slower. OMP_NUM_THREADS overrides this.
        torch.set_num_threads(1)
    try:
        args.output_dir.mkdir(parents=True, exist_ok=True)
        main_rank = int(os.environ.get("RANK", "0")) == 0  # one lock per job: its main process holds it
        with lock_run_folder(args.output_dir) if main_rank else contextlib.nullcontext():
            check_run_folder(
                args.output_dir, overwrite=args.overwrite_output_dir, resuming=bool(args.resume_from_checkpoint)
            )
            return train_and_evaluate(args)
    except RunFolderError as error:
        raise SystemExit(f"--output_dir: {error}") from None
    finally:
        torch.set_num_threads(threads)


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    # 1. Accelerator, logging, seed. Without a GPU the processes of `torchrun` / `accelerate launch` form a CPU
    #    (gloo) process group only with cpu=True. DDP: a batch without objects leaves the visual branch unused, and
    #    the "bert" presets never use the text MLP, so unused parameters must be expected. Checkpoints are
    #    checkpoints/checkpoint_<n>, rotated (--checkpoints_total_limit) among those this script created there.
    accelerator = Accelerator(
        cpu=not has_accelerator(),
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(
            project_dir=str(args.output_dir),
            automatic_checkpoint_naming=False,  # named and rotated here: only this run's checkpoints are deleted
        ),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    logging.basicConfig(
        format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )
    logger.info(accelerator.state, main_process_only=False)
    if args.encoder_as_model_name:
        logger.info(
            f"--model_name_or_path {args.text_model_name_or_path} is a text encoder, not a UMGF model: a new "
            "UMGF model is built over it (as with --text_model_name_or_path)"
        )
    verbosity = "warning" if accelerator.is_local_main_process else "error"
    datasets.utils.logging.set_verbosity(getattr(logging, verbosity.upper()))
    transformers.utils.logging.set_verbosity(getattr(logging, verbosity.upper()))
    set_seed(args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    if args.push_to_hub and accelerator.is_main_process:  # a bad repo id or token fails now, not after training
        try:
            create_repo(args.hub_model_id, token=args.hub_token, private=args.hub_private_repo, exist_ok=True)
        except Exception as error:  # network, authentication, permissions: huggingface_hub raises several kinds
            raise SystemExit(
                f"--push_to_hub: cannot create or reach the Hub repo {args.hub_model_id}: {error}"
            ) from None

    # 2. Data: train / dev / test (+ the test split of a second config for cross-domain runs).
    raw = load_splits(args, args.dataset_config_name, args.image_dir)
    label_names = label_names_of(raw["train"])
    # --num_train_epochs 0 --model_name_or_path DIR: that model is evaluated as it is; nothing is trained or saved
    evaluate_only = bool(args.model_name_or_path) and args.num_train_epochs == 0 and not args.max_train_steps
    splits = {
        "train": raw["train"].select([]) if evaluate_only else limit(raw["train"], args.max_train_samples),
        "validation": limit(raw["validation"], args.max_eval_samples),
        "test": limit(raw["test"], args.max_eval_samples),
    }
    if args.test_dataset_config_name:
        cross = load_splits(args, args.test_dataset_config_name, args.test_image_dir)
        if label_names_of(cross["test"]) != label_names:
            raise ValueError(
                f"label set mismatch between {args.dataset_config_name} and {args.test_dataset_config_name}"
            )
        splits["cross_test"] = limit(cross["test"], args.max_eval_samples)
    if args.release_crops_dir is not None:  # the authors' crops as each tweet's image and grounding
        for name in ("train", "validation", "test"):
            splits[name], report = attach_release_crops(
                splits[name], args.release_crops_dir, args.release_crops_missing
            )
            logger.info(f"{name}: {report.summary()}")

    images = check_images(args, splits)

    # 3. Model and processor.
    model, processor = build_model_and_processor(args, label_names, images)
    preset = preset_of(model.config, processor.grounder) if args.model_name_or_path else args.preset
    if args.gradient_checkpointing:  # transformers >= 5.x: activation_checkpointing_enable (the old name warns)
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    use_visual = bool(model.config.use_visual)
    if args.metric == "authors":  # their inputs: a word without sub-tokens is dropped with its tag
        for name in list(splits):
            splits[name], dropped = drop_empty_words(splits[name], processor.tokenizer)
            logger.info(f"{name}: {dropped.summary()}")
    logger.info(
        f"model: preset {preset!r}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
        f"visual branch {'on' if use_visual else 'off'}, grounder {processor.grounder!r}"
    )

    # 4. Visual preprocessing, once: ground the images, then (frozen backbone) cache the crops' features. The main
    #    process grounds first (datasets caches the result for the others). A grounder that runs on a GPU is not
    #    forked into dataset.map workers (CUDA cannot be used in a forked process): it batches on the GPU instead.
    if use_visual:
        grounder = processor.visual_grounder
        workers = args.preprocessing_num_workers
        if workers and str(getattr(grounder, "device", "cpu")).startswith("cuda"):
            logger.info(f"grounding in this process on {grounder.device}, not in {workers} dataset.map workers")
            workers = None
        with accelerator.main_process_first():
            splits = {name: ground_dataset(split, grounder, workers) for name, split in splits.items()}
    else:
        splits = {name: without_images(split) for name, split in splits.items()}
    if use_visual and args.freeze_vision_backbone:
        backbone = model.umgf.vision_backbone
        backbone.requires_grad_(False)
        cache_dir = args.feature_cache_dir or args.output_dir / "feature_cache"
        with accelerator.main_process_first():
            splits = {
                name: cache_object_features(
                    split, name, backbone, processor, cache_dir, accelerator.device, args.per_device_eval_batch_size
                )
                for name, split in splits.items()
            }
    has_objects = use_visual and any("grounder" in s.column_names and any(s["grounder"]) for s in splits.values())

    # 5. Dataloaders, optimizer, scheduler.
    def dataloader(split: datasets.Dataset, batch_size: int, shuffle: bool) -> DataLoader:
        return DataLoader(
            split.with_transform(processor.process_examples),
            batch_size=batch_size,
            shuffle=shuffle,
            collate_fn=processor.data_collator(return_metadata=True),
            num_workers=args.dataloader_num_workers,
            generator=torch.Generator().manual_seed(args.seed),  # the loader's seed draws leave the global RNG
        )

    train_dataloader = dataloader(
        splits["train"], args.per_device_train_batch_size, shuffle=args.shuffle_train and not evaluate_only
    )
    eval_dataloaders = {
        name: dataloader(split, args.per_device_eval_batch_size, shuffle=False)
        for name, split in splits.items()
        if name != "train"
    }
    optimizer = (torch.optim.Adam if args.optimizer == "adam" else torch.optim.AdamW)(parameter_groups(model, args))
    updates_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    max_train_steps = (
        args.max_train_steps if args.max_train_steps is not None else args.num_train_epochs * updates_per_epoch
    )
    num_epochs = math.ceil(max_train_steps / updates_per_epoch) if updates_per_epoch else 0
    if args.lr_scheduler_type == "step":
        step_updates = STEP_EPOCHS * updates_per_epoch
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda update: STEP_GAMMA ** (update // step_updates))
    else:
        scheduler = get_scheduler(
            args.lr_scheduler_type,
            optimizer=optimizer,
            num_warmup_steps=(
                args.num_warmup_steps if args.num_warmup_steps is not None else int(args.warmup_ratio * max_train_steps)
            ),
            num_training_steps=max_train_steps,
        )
    model, optimizer, train_dataloader, scheduler = accelerator.prepare(model, optimizer, train_dataloader, scheduler)
    eval_dataloaders = {name: accelerator.prepare(loader) for name, loader in eval_dataloaders.items()}
    if args.report_to != "none":
        tracked = {
            k: (str(v) if isinstance(v, (Path, list, dict)) or v is None else v)
            for k, v in public_arguments(vars(args)).items()  # never a token
        }
        accelerator.init_trackers("umgf", tracked)

    # 6. Resume: the accelerate state (model, optimizer, scheduler, RNGs) and where in which epoch it stopped.
    # New checkpoints are numbered after those already in the folder; the ones a killed run of this script left
    # incomplete (no trainer state: written last) are dropped, others' are left alone.
    owned = OwnedCheckpoints(args.output_dir)
    complete = lambda path: (path / STATE_FILE).is_file()  # noqa: E731
    if accelerator.is_main_process:
        deleted, foreign = owned.remove_incomplete(complete)
        for path in deleted:
            logger.warning(f"removed {path}, a checkpoint this script left incomplete")
        for path in foreign:
            logger.warning(f"{path} is incomplete but was not made by a run in this folder: left as it is")
    accelerator.wait_for_everyone()
    run = run_signature(args, accelerator.num_processes)
    state = {
        "global_step": 0,
        "epoch": 0,
        "batches_in_epoch": 0,
        "best_f1": -1.0,
        "best_epoch": None,
        "history": [],
        "run": run,
    }
    if args.resume_from_checkpoint:
        checkpoint = (
            latest_checkpoint(args.output_dir)
            if args.resume_from_checkpoint == "latest"
            else Path(args.resume_from_checkpoint)
        )
        if not (checkpoint / STATE_FILE).is_file():
            raise FileNotFoundError(f"{checkpoint} is not a checkpoint of this script (no {STATE_FILE})")
        saved = json.loads((checkpoint / STATE_FILE).read_text())
        before = saved.get("run", {})
        changed = {key: (before.get(key), now) for key, now in run.items() if before.get(key) != now}
        if changed and not args.force_resume:
            raise SystemExit(
                f"{checkpoint} was made by another run: "
                + "; ".join(f"{key} {old!r} there, {new!r} now" for key, (old, new) in changed.items())
                + ". Resume with the same settings, or pass --force_resume to continue anyway."
            )
        if changed:
            logger.warning(
                f"resuming {checkpoint} with changed settings (--force_resume): {changed}; the checkpoint's "
                "optimizer and scheduler states (learning rates included) are restored as they were saved"
            )
        accelerator.load_state(str(checkpoint))
        state = {**saved, "run": run}
        logger.info(f"resumed from {checkpoint}: epoch {state['epoch']}, optimizer step {state['global_step']}")

    def save_checkpoint() -> None:
        folder = owned.next_folder()
        if accelerator.is_main_process:
            owned.claim(folder)  # recorded as ours before it exists, so a killed save is ours to remove
        accelerator.wait_for_everyone()
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            (folder / STATE_FILE).write_text(json.dumps(state, indent=2))
            for path in owned.rotate(args.checkpoints_total_limit, complete):
                logger.info(f"removed {path} (--checkpoints_total_limit {args.checkpoints_total_limit})")

    # 7. Training; at the end of every epoch, select on dev F1 and keep the best model.
    if evaluate_only:
        logger.info(f"evaluation only: {args.model_name_or_path} as it is, no training (--num_train_epochs 0)")
    else:
        logger.info(
            f"training: {len(splits['train'])} sentences, {num_epochs} epochs, {max_train_steps} optimizer steps, "
            f"batch {args.per_device_train_batch_size} x {accelerator.num_processes} processes x "
            f"{args.gradient_accumulation_steps} accumulation"
        )
    progress = tqdm(
        total=max_train_steps,
        initial=state["global_step"],
        desc="training",
        disable=evaluate_only or not accelerator.is_local_main_process,
    )

    def select_on_dev() -> None:
        dev = predict(model, eval_dataloaders["validation"], accelerator, processor, True, "dev")
        dev_scores, dev_records = score(splits["validation"], dev, label_names)
        if args.metric == "authors":
            dev_scores = authors_scores(splits["validation"], dev, label_names, processor)
        state["history"].append({"epoch": state["epoch"], "step": state["global_step"], "dev_f1": dev_scores["f1"]})
        accelerator.log(
            {f"dev/{key}": dev_scores[key] for key in ("f1", "precision", "recall")}, step=state["global_step"]
        )
        when = "evaluation" if evaluate_only else f"epoch {state['epoch']}"
        logger.info(
            f"{when}: dev P {dev_scores['precision']:.4f} R {dev_scores['recall']:.4f} F1 {dev_scores['f1']:.4f}"
        )
        if dev_scores["f1"] > state["best_f1"]:
            state["best_f1"], state["best_epoch"] = dev_scores["f1"], state["epoch"]
            state["best_dev"] = flat_scores("eval", dev_scores, dev_records)
            if accelerator.is_main_process and not evaluate_only:
                accelerator.unwrap_model(model).save_pretrained(args.output_dir / BEST_DIR, safe_serialization=True)
                processor.save_pretrained(args.output_dir / BEST_DIR)

    started, seen = time.perf_counter(), 0
    while state["epoch"] < num_epochs and state["global_step"] < max_train_steps:
        model.train()
        train_dataloader.set_epoch(state["epoch"])
        loader = train_dataloader
        if state["batches_in_epoch"]:
            loader = accelerator.skip_first_batches(train_dataloader, state["batches_in_epoch"])
        for batch in loader:
            with accelerator.accumulate(model):
                loss = model(**model_inputs(batch, processor, use_objects=True), labels=batch["labels"]).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            seen += len(batch["sample_id"]) * accelerator.num_processes
            if not accelerator.sync_gradients:
                continue
            state["global_step"] += 1
            progress.update(1)
            if state["global_step"] % args.logging_steps == 0 or state["global_step"] == max_train_steps:
                rate = seen / (time.perf_counter() - started)
                progress.set_postfix(loss=f"{loss.item():.4f}", sent_per_s=f"{rate:.1f}")
                accelerator.log(
                    {"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[-1], "train/sentences_per_s": rate},
                    step=state["global_step"],
                )
            if (
                args.checkpointing_steps not in (None, "epoch")
                and state["global_step"] % int(args.checkpointing_steps) == 0
            ):
                save_checkpoint()
            if state["global_step"] >= max_train_steps:
                break
        select_on_dev()
        state["epoch"] += 1
        state["batches_in_epoch"] = 0
        if args.checkpointing_steps == "epoch":
            save_checkpoint()
    if max_train_steps == 0:  # --num_train_epochs 0: the given model, evaluated as it is
        select_on_dev()
    progress.close()
    accelerator.wait_for_everyone()
    train_seconds = time.perf_counter() - started

    # 8. Test the best dev epoch, with and without images, and the cross-domain test.
    if not evaluate_only:
        best = UMGFForTokenClassification.from_pretrained(best_model_folder(args.output_dir))
        accelerator.unwrap_model(model).load_state_dict(best.state_dict())
        del best
    tested = inference_copy(accelerator.unwrap_model(model), args.inference_precision)
    results: dict[str, Any] = {"mode": "evaluate" if evaluate_only else "train"}
    if evaluate_only:  # what was evaluated, and nothing about a training that did not happen
        results["model"] = hub.hub_id(args.model_name_or_path) or Path(args.model_name_or_path).resolve().name
    else:
        results.update(
            best_epoch=state["best_epoch"],
            train_seconds=round(train_seconds, 1),
            global_step=state["global_step"],
            num_train_epochs=state["epoch"],
            train_samples=len(splits["train"]),
            train_samples_available=len(raw["train"]),
            seed=args.seed,
        )
    results.update(
        dev_f1=state["best_f1"],
        preset=preset,
        text_encoder=encoder_name(accelerator.unwrap_model(model)),
        dataset_config_name=args.dataset_config_name,
        images=images,
        eval_samples=len(splits["validation"]),
        test_samples=len(splits["test"]),
        test_samples_available=len(raw["test"]),
        scoring="seqeval default mode (conlleval-compatible), micro-averaged entity P/R/F1",
        inference_precision=resolve_precision(args.inference_precision, accelerator.device),
    )
    evaluations = [("test", "test", True)]
    if has_objects:
        evaluations.append(("test_without_images", "test", False))
    if "cross_test" in splits:
        evaluations.append((f"cross_test_{args.test_dataset_config_name}", "cross_test", True))
    tables: dict[str, dict[str, Any]] = {}
    prediction_records: dict[str, list[dict[str, Any]]] = {}
    warning: str | None = None
    evaluated = model if tested is accelerator.unwrap_model(model) else tested  # the prepared model at fp32
    for key, split, use_objects in evaluations:
        predictions = predict(evaluated, eval_dataloaders[split], accelerator, processor, use_objects, key)
        tables[key], records = score(splits[split], predictions, label_names)
        if args.metric == "authors":
            tables[key]["authors"] = authors_scores(splits[split], predictions, label_names, processor)
        results[key] = tables[key]
        prediction_records[key] = records  # written with the model (step 9), so that they always go together
        if key == "test":  # run_ner_no_trainer's flat keys: eval_* (dev, the selected epoch) and test_*
            results.update({**state.get("best_dev", {}), **flat_scores("test", tables[key], records)})
            warning = learning_warning(state["best_f1"], sum(r["predicted"] for r in records), len(records), results)
    if warning:
        results["warnings"] = [warning]
        logger.warning(f"\n{'!' * 100}\nWARNING: {warning}\n{'!' * 100}")
    accelerator.log({f"{key}/f1": s["f1"] for key, s in tables.items()}, step=state["global_step"])

    # 9. Outputs: model + processor + pipeline code (pipeline(model=output_dir, trust_remote_code=True) works),
    #    handler, all_results.json and the model card filled with these results; then the Hub.
    #    An evaluation-only run writes its results and predictions, not another copy of the model it evaluated.
    if accelerator.is_main_process:
        examples: list[tuple[str, Any]] = []
        if is_synthetic(args):  # example posts with images for a demo Space (the Twitter images may not be shared)
            shown = [row for row in raw["test"] if row["image"] is not None][:EXAMPLES]
            examples = [(" ".join(row["tokens"]), row["image"]) for row in shown]
        card = dict(
            repo_id=args.hub_model_id or args.output_dir.resolve().name,
            dataset_id=args.hub_dataset_id or args.dataset_name,
            dataset_config=args.dataset_config_name,
            widget_texts=[text for text, _ in examples] or hub.WIDGET_TEXTS,  # the model's own posts, if any
        )
        written = [args.output_dir / "all_results.json"]
        written += [args.output_dir / f"predictions_{key}.jsonl" for key in prediction_records]

        def save_outputs(folder: Path) -> None:
            for key, records in prediction_records.items():
                with open(folder / f"predictions_{key}.jsonl", "w", encoding="utf-8") as handle:
                    handle.writelines(json.dumps(record) + "\n" for record in records)
            if evaluate_only:  # results and predictions, not another copy of the model it evaluated
                (folder / "all_results.json").write_text(json.dumps(results, indent=2), encoding="utf-8")
                return
            hub.save_for_hub(accelerator.unwrap_model(model), processor, folder, results, **card)
            if examples:
                hub.write_examples(folder, examples)

        replace_entries(args.output_dir, save_outputs)  # written beside, then renamed: a previous model stays whole
        if not evaluate_only:
            remove_best_copy(args.output_dir)  # the folder now holds the best epoch's model itself
        print_tables(tables, args, results)
        print(closing_summary(args, results, written, card["widget_texts"][0]))
        if args.push_to_hub:
            url = hub.push_to_hub(
                accelerator.unwrap_model(model),
                processor,
                args.hub_model_id,
                results,
                token=args.hub_token,
                private=args.hub_private_repo,
                **{key: value for key, value in card.items() if key != "repo_id"},
            )
            logger.info(f"pushed to the Hub: {url}")
    accelerator.end_training()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
