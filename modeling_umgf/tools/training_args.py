"""The arguments of train_umgf.py: its flags, the checks that need no data or weights (bad arguments fail in a
second with a clear message), and the preset's training recipe (`PRESET_RECORDS`) filling the optimisation flags
not given."""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path
from typing import Any

from accelerate.utils import imports as accelerate_imports
from huggingface_hub.utils import validate_repo_id

from datasets_scripts.output_folder import OutputFolderError, writable_folder
from datasets_scripts.synthetic import SYNTHETIC_JOB

from ..configuration_umgf import PRESET_RECORDS, TrainingRecipe
from ..grounder_registry import GROUNDERS
from ..precision import PRECISIONS
from . import hub
from .model_building import parse_config_overrides
from .optimization import OPTIMIZERS, SCHEDULES, STEP_EPOCHS, STEP_GAMMA

DESCRIPTION = "Train and evaluate UMGF (Zhang et al., AAAI 2021) for multimodal NER with 🤗 Accelerate."

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


class WithTracking(argparse.Action):
    """``--with_tracking``: run_ner_no_trainer's switch, ``--report_to all`` unless a tracker is named."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, *_: Any) -> None:
        if namespace.report_to == "none":
            namespace.report_to = "all"


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the data comes from and how much of it is used."""
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
        help="sentences per split of the synthetic task (default: SyntheticMNERConfig's 1200 200 300)",
    )
    data.add_argument("--preprocessing_num_workers", type=int, help="processes for dataset.map (grounding)")
    data.add_argument("--dataloader_num_workers", type=int, default=0)


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model: a preset, a checkpoint or pretrained encoders, and how its visual branch runs."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--preset", default="paper", choices=sorted(PRESET_RECORDS), help="UMGFConfig preset (default: paper)"
    )
    model.add_argument("--model_name_or_path", help="a trained UMGF checkpoint (folder or Hub id) to fine-tune")
    model.add_argument("--text_model_name_or_path", help="pretrained BERT-like encoder (Hub id or folder)")
    model.add_argument("--vision_backbone", help="timm model name of the object encoder (a --config_overrides field)")
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
        help="do not train the vision backbone: its object features are computed once and cached on disk",
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


def add_optimization_arguments(parser: argparse.ArgumentParser) -> None:
    """The optimisation flags; those the recipe holds default to None (filled from the preset's recipe)."""
    synthetic = SYNTHETIC_JOB.training
    optim = parser.add_argument_group(
        "optimisation (defaults: the preset's training recipe, PRESET_RECORDS in configuration_umgf.py; the "
        f"synthetic job's: lr {synthetic.learning_rate:g}, {synthetic.num_train_epochs} epochs, frozen vision)"
    )
    optim.add_argument("--learning_rate", type=float, help="lr of the new layers (fusion, MLPs, decoder)")
    optim.add_argument(
        "--text_encoder_learning_rate", type=float, help="lr of the text encoder (default: --learning_rate)"
    )
    optim.add_argument("--vision_learning_rate", type=float, help="lr of the vision backbone (default: text encoder's)")
    optim.add_argument("--weight_decay", type=float, help="AdamW weight decay")
    optim.add_argument("--optimizer", choices=sorted(OPTIMIZERS))
    optim.add_argument(
        "--num_train_epochs", type=int, help="0 with --model_name_or_path: evaluate that model only (no training)"
    )
    optim.add_argument("--max_train_steps", type=int, help="stop after this many optimizer steps")
    optim.add_argument("--per_device_train_batch_size", type=int)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=32)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument(
        "--lr_scheduler_type",
        choices=SCHEDULES,
        help=f"'step' multiplies the lr by {STEP_GAMMA} every {STEP_EPOCHS} epochs (the release preset's)",
    )
    optim.add_argument("--warmup_ratio", type=float, help="share of the steps with a linear warmup")
    optim.add_argument("--num_warmup_steps", type=int, help="warmup steps (instead of --warmup_ratio)")
    optim.add_argument("--max_grad_norm", type=float, help="gradient clipping (0: none)")
    optim.add_argument(
        "--shuffle_train",
        action=argparse.BooleanOptionalAction,
        help="shuffle the training data every epoch (the release preset does not, as the authors)",
    )
    optim.add_argument("--seed", type=int, default=42)
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="default: accelerate's config")


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """Outputs, checkpoints, tracking and the Hub."""
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
    run.add_argument(
        "--report_to", default="none", choices=["none", "all", *TRACKERS], help="experiment tracker(s) of accelerate"
    )
    run.add_argument(
        "--with_tracking", nargs=0, action=WithTracking, help="run_ner_no_trainer's spelling of --report_to all"
    )
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--push_to_hub", action="store_true", help="push the best model, processor and card to the Hub")
    run.add_argument("--hub_model_id", help="Hub repo of --push_to_hub (default: the output folder's name)")
    run.add_argument("--hub_token", help="Hub token (never written to disk, logged or sent to a tracker)")
    run.add_argument("--hub_private_repo", action="store_true")
    run.add_argument("--hub_dataset_id", help="Hub id of the training dataset, for the model card")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    for add_arguments in (add_data_arguments, add_model_arguments, add_optimization_arguments, add_run_arguments):
        add_arguments(parser)
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    recipe = SYNTHETIC_JOB.training if is_synthetic(args) else PRESET_RECORDS[args.preset].training
    for field in dataclasses.fields(TrainingRecipe):  # the recipe's value where the flag is not given
        if getattr(args, field.name) is None:
            setattr(args, field.name, getattr(recipe, field.name))
    return args


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
