#!/usr/bin/env python
"""Train and evaluate UMGF (Zhang et al., AAAI 2021) for multimodal NER with 🤗 Accelerate.

With no arguments it runs the main job offline: a small UMGF is trained on a synthetic multimodal task
generated on the fly (`datasets_scripts.synthetic`: made-up sentences and drawn images where, for ambiguous
names, only the image tells the entity type), then evaluated on its test split with and without the images::

    python train_umgf.py                    # or: accelerate launch train_umgf.py

Real data (Twitter-2015 / 2017 / 2017c, CONTRACT.md columns) comes from the UMT release text (+ an image
folder), or from a dataset exported by ``python -m datasets_scripts build`` (local folder or Hub repo)::

    accelerate launch train_umgf.py --umt_data_dir ../shared/data --dataset_config_name twitter2017 \\
        --image_dir twitter2017_images --text_model_name_or_path bert-base-cased --vision_weights timm \\
        --output_dir outputs/umgf-t17
    python train_umgf.py --dataset_name my/twitter-mner --dataset_config_name twitter2015 \\
        --text_model_name_or_path bert-base-cased --preset bert-crf --seeds 1 2 3

Steps, in order: check the arguments (before anything heavy), load the data, build or load the model and
its processor, ground images that have no grounding yet (once), optionally cache the features of a frozen
vision backbone on disk (once per object crop), train with checkpoints, select the epoch with the best dev F1,
evaluate test (and a second test config for cross-domain runs), write ``all_results.json`` and the
per-sentence predictions, save the model + processor, and optionally push them to the Hub.

Scores are seqeval's default (conlleval-compatible) mode, micro-averaged; see `modeling_umgf.metrics`.
Every gold entity of every test sentence is scored: the words a sentence loses to ``--max_length`` are
predicted O, never dropped. Other entry points of this script:

    python train_umgf.py ... --seeds 1 2 3            # one run per seed, then mean ± std
    python train_umgf.py --compare_predictions A/predictions_test.jsonl B/predictions_test.jsonl
                                                      # paired bootstrap: is run A better than run B?
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoConfig, AutoTokenizer, BertConfig, get_scheduler

from modeling_umgf import PRESETS, UMGFConfig, UMGFForTokenClassification, hub
from modeling_umgf.image_processing_umgf import UMGFImageProcessor
from modeling_umgf.metrics import entity_scores, format_table2, mean_std, paired_bootstrap, sentence_counts
from modeling_umgf.processing_umgf import UMGFProcessor
from datasets_scripts.synthetic import SyntheticMNERConfig, build_synthetic_dataset, build_tokenizer

logger = get_logger(__name__)

VISUAL_KEYS = ("pixel_values", "object_features", "object_mask", "inter_modal_adjacency")
GROUNDING_COLUMNS = ("object_boxes", "object_scores", "object_phrases", "object_word_start", "object_word_end", "grounder")
STATE_FILE = "trainer_state.json"
BEST_DIR = "best_model"

#: The small model of the synthetic main job (the paper's architecture at toy size, from scratch).
SYNTHETIC_MODEL: dict[str, Any] = dict(
    vision_backbone="test_resnet", vision_feature_dim=96, vision_image_size=32,
    hidden_size=64, num_attention_heads=4, intermediate_size=128, dropout=0.1,
)
SYNTHETIC_TEXT_MODEL: dict[str, Any] = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128, max_position_embeddings=64,
)
#: Training defaults of the synthetic job where they differ from the paper's (encoders trained from scratch).
SYNTHETIC_TRAINING: dict[str, Any] = dict(learning_rate=2e-3, num_train_epochs=6, per_device_train_batch_size=16,
                                          freeze_vision_backbone=True)
PAPER_TRAINING: dict[str, Any] = dict(learning_rate=1e-4, num_train_epochs=3, per_device_train_batch_size=16,
                                      freeze_vision_backbone=False)


# ----------------------------------------------------------------------------------------------- arguments
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    data = parser.add_argument_group("data (default: the built-in synthetic task)")
    data.add_argument("--umt_data_dir", type=Path, help="UMT release data/ folder (<dir>/twitter2015/train.txt ...)")
    data.add_argument("--dataset_name", help="dataset folder or Hub repo exported by `python -m datasets_scripts build`")
    data.add_argument("--dataset_config_name", help="twitter2015, twitter2017 or twitter2017c")
    data.add_argument("--image_dir", type=Path, help="folder of <IMGID>.jpg images (with --umt_data_dir)")
    data.add_argument("--test_dataset_config_name", help="cross-domain: also test on this config's test split")
    data.add_argument("--test_image_dir", type=Path, help="image folder of --test_dataset_config_name")
    data.add_argument("--grounder", help="override the preset's grounder (detector, release, grid, precomputed)")
    data.add_argument("--max_length", type=int, default=128, help="max sub-tokens per sentence (paper: 128)")
    data.add_argument("--max_train_samples", type=int)
    data.add_argument("--max_eval_samples", type=int, help="cap on dev and test sentences (quick runs)")
    data.add_argument("--synthetic_sizes", type=int, nargs=3, metavar=("TRAIN", "DEV", "TEST"),
                      help="sentences per split of the synthetic task (default 1200 200 300)")
    data.add_argument("--preprocessing_num_workers", type=int, help="processes for dataset.map (grounding)")
    data.add_argument("--dataloader_num_workers", type=int, default=0)

    model = parser.add_argument_group("model")
    model.add_argument("--preset", default="paper", choices=sorted(PRESETS), help="UMGFConfig preset (default: paper)")
    model.add_argument("--model_name_or_path", help="a trained UMGF checkpoint (folder or Hub id) to fine-tune")
    model.add_argument("--text_model_name_or_path", help="pretrained BERT-like encoder (Hub id or folder)")
    model.add_argument("--vision_backbone", help="timm model name of the object encoder (default: the preset's)")
    model.add_argument("--vision_weights", default="none",
                       help="'timm' (timm's pretrained weights, downloaded), a local .safetensors/.pth file, or 'none'")
    model.add_argument("--config_overrides", default="",
                       help="UMGFConfig fields, e.g. 'hidden_size=256,num_fusion_layers=1,dropout=0.3'")
    model.add_argument("--freeze_vision_backbone", action=argparse.BooleanOptionalAction,
                       help="do not train the vision backbone: its object features are computed once and cached on disk "
                            "(default: off; on for the synthetic job)")
    model.add_argument("--gradient_checkpointing", action="store_true",
                       help="recompute activations in the backward pass (BERT, fusion layers and the vision backbone): "
                            "same gradients, much less memory, about 25%% more time")
    model.add_argument("--feature_cache_dir", type=Path, help="visual feature cache (default: <output_dir>/feature_cache)")

    optim = parser.add_argument_group("optimisation (defaults: the paper's; the synthetic job uses lr 2e-3, 6 epochs, frozen vision)")
    optim.add_argument("--learning_rate", type=float, help="lr of the new layers (fusion, MLPs, decoder)")
    optim.add_argument("--text_encoder_learning_rate", type=float, help="lr of the pretrained text encoder (default: --learning_rate)")
    optim.add_argument("--vision_learning_rate", type=float, help="lr of the vision backbone (default: --text_encoder_learning_rate)")
    optim.add_argument("--weight_decay", type=float, default=0.0)
    optim.add_argument("--num_train_epochs", type=int)
    optim.add_argument("--max_train_steps", type=int, help="stop after this many optimizer steps")
    optim.add_argument("--per_device_train_batch_size", type=int)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=32)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--lr_scheduler_type", default="linear",
                       choices=["linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup"])
    optim.add_argument("--warmup_ratio", type=float, default=0.1, help="share of the steps with a linear warmup")
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    optim.add_argument("--seed", type=int, default=42)
    optim.add_argument("--seeds", type=int, nargs="+", help="one run per seed (<output_dir>/seed_<s>), then mean ± std")
    optim.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], help="default: accelerate's config")

    run = parser.add_argument_group("outputs, checkpoints, tracking, Hub")
    run.add_argument("--output_dir", type=Path, default=Path("outputs/umgf"))
    run.add_argument("--checkpointing_steps", help="'epoch', or save every N optimizer steps")
    run.add_argument("--resume_from_checkpoint", help="a checkpoint folder, or 'latest' (newest in --output_dir)")
    run.add_argument("--report_to", default="none", choices=["none", "tensorboard"], help="experiment tracker")
    run.add_argument("--logging_steps", type=int, default=10)
    run.add_argument("--push_to_hub", action="store_true", help="push the best model, processor and card to the Hub")
    run.add_argument("--hub_model_id", help="Hub repo of --push_to_hub (default: the output folder's name)")
    run.add_argument("--hub_token")
    run.add_argument("--hub_private_repo", action="store_true")
    run.add_argument("--compare_predictions", nargs=2, type=Path, metavar=("RUN_A", "RUN_B"),
                     help="only run a paired bootstrap test between two predictions_*.jsonl files and exit")
    run.add_argument("--bootstrap_samples", type=int, default=1000)
    args = parser.parse_args(argv)
    try:
        check_args(args)
    except (ValueError, FileNotFoundError) as error:
        parser.error(str(error))
    return args


def parse_config_overrides(text: str) -> dict[str, Any]:
    """'a=1,b=0.5,c=crf' -> {"a": 1, "b": 0.5, "c": "crf"} (Python literals where they parse, else strings)."""
    overrides = {}
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


def _local_path_like(name: str) -> bool:
    return name.startswith((".", "/", "~")) or os.sep in name and not name.count("/") == 1


def check_args(args: argparse.Namespace) -> None:
    """Every check that needs no data or weights, so bad arguments fail in a second with a clear message."""
    if args.compare_predictions:
        for path in args.compare_predictions:
            if not path.is_file():
                raise FileNotFoundError(f"--compare_predictions: no predictions file {path}")
        return
    args.synthetic = args.umt_data_dir is None and args.dataset_name is None
    if args.umt_data_dir is not None and args.dataset_name is not None:
        raise ValueError("give --umt_data_dir or --dataset_name, not both")
    if not args.synthetic and not args.dataset_config_name:
        raise ValueError("--dataset_config_name is required with --umt_data_dir / --dataset_name (e.g. twitter2017)")
    if args.umt_data_dir is not None:
        for config_name in filter(None, (args.dataset_config_name, args.test_dataset_config_name)):
            source = config_name.removesuffix("c")
            folder = args.umt_data_dir / source
            missing = [name for name in ("train.txt", "valid.txt", "test.txt") if not (folder / name).is_file()]
            if missing:
                raise FileNotFoundError(f"--umt_data_dir: {folder} lacks {missing} (expected the UMT release data/ folder)")
    for flag in ("image_dir", "test_image_dir"):
        folder = getattr(args, flag)
        if folder is not None and not folder.is_dir():
            raise FileNotFoundError(f"--{flag}: no such folder {folder}")
    if args.dataset_name and _local_path_like(args.dataset_name) and not Path(args.dataset_name).exists():
        raise FileNotFoundError(f"--dataset_name: no such folder {args.dataset_name}")
    for flag in ("model_name_or_path", "text_model_name_or_path"):
        name = getattr(args, flag)
        if name and _local_path_like(name) and not Path(name).is_dir():
            raise FileNotFoundError(f"--{flag}: no such folder {name}")
    if args.model_name_or_path and args.text_model_name_or_path:
        raise ValueError("give --model_name_or_path (a UMGF checkpoint) or --text_model_name_or_path, not both")
    if not args.synthetic and not (args.model_name_or_path or args.text_model_name_or_path):
        raise ValueError("real data needs --text_model_name_or_path (e.g. bert-base-cased) or --model_name_or_path")
    if args.vision_weights not in ("none", "timm") and not Path(args.vision_weights).is_file():
        raise FileNotFoundError(f"--vision_weights: no such file {args.vision_weights} (or use 'timm' / 'none')")
    args.config_overrides_dict = parse_config_overrides(args.config_overrides)
    if args.grounder is not None:
        from modeling_umgf.grounding import GROUNDERS

        if args.grounder not in GROUNDERS:
            raise ValueError(f"--grounder: unknown grounder {args.grounder!r}; choose one of {sorted(GROUNDERS)}")
    if args.checkpointing_steps not in (None, "epoch") and not str(args.checkpointing_steps).isdigit():
        raise ValueError(f"--checkpointing_steps must be 'epoch' or a number of steps, got {args.checkpointing_steps!r}")
    if args.resume_from_checkpoint not in (None, "latest") and not Path(args.resume_from_checkpoint).is_dir():
        raise FileNotFoundError(f"--resume_from_checkpoint: no such checkpoint folder {args.resume_from_checkpoint}")
    if args.report_to == "tensorboard":
        try:
            import tensorboard  # noqa: F401
        except ImportError:
            raise ValueError("--report_to tensorboard needs the tensorboard package: pip install tensorboard") from None
    if args.push_to_hub and not args.hub_model_id:
        args.hub_model_id = args.output_dir.resolve().name
    if args.gradient_accumulation_steps < 1:
        raise ValueError("--gradient_accumulation_steps must be >= 1")
    defaults = SYNTHETIC_TRAINING if args.synthetic else PAPER_TRAINING
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.text_encoder_learning_rate = args.text_encoder_learning_rate or args.learning_rate
    args.vision_learning_rate = args.vision_learning_rate or args.text_encoder_learning_rate


# ----------------------------------------------------------------------------------------------------- data
def label_names_of(dataset: datasets.Dataset) -> list[str]:
    feature = dataset.features["ner_tags"]
    inner = getattr(feature, "feature", None)
    if not isinstance(inner, datasets.ClassLabel):
        raise ValueError("the dataset's ner_tags must be a list of datasets.ClassLabel (CONTRACT.md columns)")
    return list(inner.names)


def load_raw_datasets(args: argparse.Namespace, config_name: str | None = None, image_dir: Path | None = None) -> datasets.DatasetDict:
    """The train / validation / test splits with the CONTRACT.md columns."""
    if args.synthetic:
        sizes = dict(zip(("train_size", "validation_size", "test_size"), args.synthetic_sizes or (1200, 200, 300)))
        return build_synthetic_dataset(SyntheticMNERConfig(**sizes))
    config_name = config_name or args.dataset_config_name
    if args.umt_data_dir is not None:
        from datasets_scripts.twitter_mner import build_dataset

        dataset, reports = build_dataset(config_name, data_dir=args.umt_data_dir, image_dir=image_dir)
        for split, report in reports.items():
            logger.info(f"{config_name} {split}: {report.summary()}")
    else:
        dataset = datasets.load_dataset(args.dataset_name, config_name)
    missing = {"train", "validation", "test"} - set(dataset)
    if missing:
        raise ValueError(f"dataset {config_name!r} lacks the splits {sorted(missing)}")
    return dataset


def limit(dataset: datasets.Dataset, count: int | None) -> datasets.Dataset:
    """The first ``count`` sentences, with a check that the ``id`` column names every sentence once
    (predictions are matched to gold sentences by id)."""
    dataset = dataset.select(range(min(count, len(dataset)))) if count else dataset
    ids = dataset["id"] if "id" in dataset.column_names else []
    if len(set(ids)) != len(dataset):
        raise ValueError(f"the dataset's 'id' column must hold a unique id per sentence ({len(set(ids))} ids for "
                         f"{len(dataset)} sentences)")
    return dataset


def ground_images(dataset: datasets.Dataset, processor: UMGFProcessor, args: argparse.Namespace) -> datasets.Dataset:
    """Run the processor's grounder once on the images that have no grounding yet, store the CONTRACT.md
    columns, and clip every box to its image (so cached features and later crops see the same objects).

    Rows grounded by another grounder are re-grounded when the configured one defines a different graph
    ("grid", "release"); a "precomputed" processor never grounds anything.
    """
    if "image" not in dataset.column_names or processor.grounder == "precomputed" and not _has_grounding(dataset):
        return dataset
    from modeling_umgf.grounding import Grounding
    from modeling_umgf.image_utils_umgf import UnreadableImageError, load_rgb_image

    regrounded = processor.grounder in ("grid", "release")

    def ground(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        rows = len(batch["tokens"])
        images = []
        for image in batch["image"]:
            try:
                images.append(None if image is None else load_rgb_image(image))
            except UnreadableImageError:
                images.append(None)
        groundings = [Grounding.from_columns({c: batch[c][i] for c in GROUNDING_COLUMNS}, batch["id"][i]) for i in range(rows)]
        todo = [i for i in range(rows) if images[i] is not None and processor.grounder != "precomputed"
                and (not groundings[i].grounder or regrounded and groundings[i].grounder != processor.grounder)]
        if todo:
            found = processor.visual_grounder.ground([images[i] for i in todo], [batch["tokens"][i] for i in todo],
                                                     [batch["id"][i] for i in todo])
            for i, grounding in zip(todo, found):
                groundings[i] = grounding
        for i, image in enumerate(images):
            if image is not None and groundings[i].grounder:
                groundings[i] = groundings[i].clipped(*image.size)
        columns = [g.to_columns() for g in groundings]
        return {c: [col[c] for col in columns] for c in GROUNDING_COLUMNS}

    return dataset.map(ground, batched=True, batch_size=32, num_proc=args.preprocessing_num_workers,
                       desc=f"grounding images ({processor.grounder})")


def _has_grounding(dataset: datasets.Dataset) -> bool:
    return "grounder" in dataset.column_names and any(dataset["grounder"])


def without_images(dataset: datasets.Dataset) -> datasets.Dataset:
    """The same sentences with no image and no grounding: every example has zero objects."""
    return dataset.remove_columns([c for c in ("image", *GROUNDING_COLUMNS) if c in dataset.column_names])


def backbone_fingerprint(backbone: torch.nn.Module, processor: UMGFProcessor) -> str:
    """Hash of the backbone's weights and of the crop transform: the key of the feature cache."""
    digest = hashlib.sha256(json.dumps(processor.image_processor.data_config, sort_keys=True).encode())
    for name, tensor in sorted(backbone.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@torch.no_grad()
def cache_object_features(
    dataset: datasets.Dataset, split: str, backbone: torch.nn.Module, processor: UMGFProcessor,
    cache_dir: Path, fingerprint: str, device: torch.device, batch_size: int,
) -> datasets.Dataset:
    """Add an ``object_features`` column [N, F] per example, computed once per object crop by the frozen
    backbone and stored in ``cache_dir`` (an Arrow file keyed by the data and the backbone): later epochs and
    later runs read it back instead of cropping and encoding again. Examples without objects get None. The
    ``image`` column is dropped from the result."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    backbone.eval().to(device)

    def encode(batch: dict[str, list[Any]]) -> dict[str, list[Any]]:
        examples = processor.process_examples(batch)
        crops = examples["pixel_values"]
        counts = [len(c) for c in crops]
        features = []
        if sum(counts):
            pixels = torch.cat([c for c in crops if len(c)]).to(device)
            encoded = torch.cat([backbone(chunk).float().cpu() for chunk in pixels.split(batch_size)])
            features = list(encoded.split([c for c in counts if c]))
        out, iterator = [], iter(features)
        for count in counts:
            out.append(next(iterator).tolist() if count else None)
        return {"object_features": out}

    cache_file = cache_dir / f"{split}-{dataset._fingerprint}-{fingerprint}.arrow"
    cached = dataset.map(
        encode, batched=True, batch_size=batch_size, cache_file_name=str(cache_file),
        new_fingerprint=f"{dataset._fingerprint}-{fingerprint}",
        features=datasets.Features({**dataset.features, "object_features": datasets.List(datasets.List(datasets.Value("float32")))}),
        desc=f"caching object features ({split})",
    )
    return cached.remove_columns("image")  # the features replace the crops: no image is decoded again


# ---------------------------------------------------------------------------------------------------- model
def synthetic_processor(config: UMGFConfig, label_names: list[str], grounder: str, max_length: int) -> UMGFProcessor:
    size = config.vision_image_size
    image_processor = UMGFImageProcessor(
        config.vision_backbone,
        data_config={"input_size": [3, size, size], "interpolation": "bilinear", "mean": [0.5] * 3, "std": [0.5] * 3,
                     "crop_pct": 1.0, "crop_mode": "center"},
    )
    return UMGFProcessor(image_processor, build_tokenizer(), grounder=grounder, max_length=max_length, label_names=label_names)


def effective_grounder(args: argparse.Namespace, config: UMGFConfig) -> str:
    """--grounder, else the preset's; the synthetic task brings exact groundings, used unless the preset asks
    for a different graph ("grid" for w/o Tar.), since the detector cannot be downloaded offline."""
    if args.grounder:
        return args.grounder
    if args.synthetic and config.grounder in ("detector", "release"):
        return "precomputed"
    return config.grounder


def build_model_and_processor(args: argparse.Namespace, label_names: list[str]) -> tuple[UMGFForTokenClassification, UMGFProcessor]:
    id2label = dict(enumerate(label_names))
    label2id = {label: i for i, label in id2label.items()}
    if args.model_name_or_path:
        if args.preset != "paper" or args.config_overrides_dict:
            logger.warning("--preset / --config_overrides are ignored: the checkpoint's configuration is used")
        model = UMGFForTokenClassification.from_pretrained(args.model_name_or_path)
        processor = UMGFProcessor.from_pretrained(args.model_name_or_path)
        processor.max_length = args.max_length
        if args.grounder:
            processor.grounder = args.grounder
        return model, processor
    overrides = {**args.config_overrides_dict, "id2label": id2label, "label2id": label2id}
    if args.vision_backbone:
        overrides["vision_backbone"] = args.vision_backbone
    if args.text_model_name_or_path:
        preset = {**PRESETS[args.preset], **overrides}
        vision = preset.get("vision_backbone", UMGFConfig().vision_backbone)
        weights = {"none": False, "timm": True}.get(args.vision_weights, args.vision_weights)
        if weights is False and preset.get("use_visual", True):
            logger.warning(f"the {vision} vision backbone starts from random weights: pass --vision_weights timm "
                           "(or a local weights file) to use pretrained ones")
        preset.pop("vision_backbone", None)
        model = UMGFForTokenClassification.from_text_vision_pretrained(
            args.text_model_name_or_path, vision_backbone=vision, vision_weights=weights, **preset)
        tokenizer = AutoTokenizer.from_pretrained(args.text_model_name_or_path)
        image_processor = UMGFImageProcessor(model.config.vision_backbone)
        processor = UMGFProcessor(image_processor, tokenizer, grounder=effective_grounder(args, model.config),
                                  max_length=args.max_length, label_names=label_names)
        return model, processor
    text_config = BertConfig(vocab_size=len(build_tokenizer()), **SYNTHETIC_TEXT_MODEL)
    config = UMGFConfig.from_preset(args.preset, **{"text_config": text_config, **SYNTHETIC_MODEL, **overrides})
    model = UMGFForTokenClassification(config)
    processor = synthetic_processor(config, label_names, effective_grounder(args, config), args.max_length)
    return model, processor


def check_checkpoint_labels(args: argparse.Namespace, label_names: list[str]) -> None:
    """A UMGF checkpoint must tag the dataset's label set, in the same order (checked before loading weights)."""
    if not args.model_name_or_path:
        return
    config = AutoConfig.from_pretrained(args.model_name_or_path)
    checkpoint_labels = [config.id2label[i] for i in range(len(config.id2label))]
    if checkpoint_labels != label_names:
        raise ValueError(
            f"label set mismatch: checkpoint {args.model_name_or_path} tags {checkpoint_labels}, but the dataset "
            f"has {label_names}"
        )


def parameter_groups(model: UMGFForTokenClassification, args: argparse.Namespace) -> list[dict[str, Any]]:
    """Pretrained text encoder / vision backbone / new layers, each with its lr; no weight decay on biases
    and LayerNorm weights (frozen parameters are left out)."""
    groups: dict[tuple[str, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:
            continue
        part = "text" if name.startswith("umgf.text_encoder.") else "vision" if name.startswith("umgf.vision_backbone.") else "new"
        no_decay = parameter.ndim < 2 or "LayerNorm" in name or "norm" in name.rsplit(".", 2)[-2]
        groups.setdefault((part, no_decay), []).append(parameter)
    lr = {"text": args.text_encoder_learning_rate, "vision": args.vision_learning_rate, "new": args.learning_rate}
    return [{"params": params, "lr": lr[part], "weight_decay": 0.0 if no_decay else args.weight_decay, "name": f"{part}{'_no_decay' * no_decay}"}
            for (part, no_decay), params in groups.items()]


# ----------------------------------------------------------------------------------------------- evaluation
def model_inputs(batch: dict[str, Any], use_objects: bool) -> dict[str, Any]:
    """The model's keyword arguments from a collated batch (metadata and, if asked, visual inputs removed)."""
    drop = set(UMGFProcessor.metadata_keys) | ({"labels"}) | (set() if use_objects else set(VISUAL_KEYS))
    return {key: value for key, value in batch.items() if key not in drop}


@torch.no_grad()
def predict(model, dataloader, accelerator: Accelerator, processor: UMGFProcessor, use_objects: bool, desc: str) -> dict[str, list[str]]:
    """Tag names for every word of every sentence, by sample id (words cut by truncation are tagged O)."""
    model.eval()
    predictions: dict[str, list[str]] = {}
    for batch in tqdm(dataloader, desc=desc, leave=False, disable=not accelerator.is_local_main_process):
        outputs = model(**model_inputs(batch, use_objects))
        tags = accelerator.pad_across_processes(outputs.predictions, dim=1, pad_index=-100)
        tags = accelerator.gather_for_metrics(tags)
        ids = accelerator.gather_for_metrics(list(batch["sample_id"]), use_gather_object=True)
        num_words = accelerator.gather_for_metrics(list(batch["num_words"]), use_gather_object=True)
        for sample, words in zip(ids, processor.decode_word_predictions(tags.cpu(), num_words)):
            predictions[sample] = words
    return predictions


def score(dataset: datasets.Dataset, predictions: dict[str, list[str]], label_names: list[str]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """seqeval scores of ``predictions`` against the gold tags of every sentence of ``dataset``, and the
    per-sentence records written to predictions_*.jsonl."""
    gold = [[label_names[t] for t in tags] for tags in dataset["ner_tags"]]
    missing = [sample for sample in dataset["id"] if sample not in predictions]
    if missing:
        raise RuntimeError(f"no prediction for {len(missing)} sentences, e.g. {missing[:3]}")
    pred = [predictions[sample] for sample in dataset["id"]]
    counts = sentence_counts(gold, pred)
    records = [{"id": sample, "tokens": tokens, "gold": g, "pred": p, "correct": int(c[0]), "predicted": int(c[1]), "gold_entities": int(c[2])}
               for sample, tokens, g, p, c in zip(dataset["id"], dataset["tokens"], gold, pred, counts)]
    return entity_scores(gold, pred), records


# ------------------------------------------------------------------------------------------------- training
def make_dataloader(dataset: datasets.Dataset, processor: UMGFProcessor, batch_size: int, shuffle: bool, args, seed: int) -> DataLoader:
    return DataLoader(
        dataset.with_transform(processor.process_examples),
        batch_size=batch_size,
        shuffle=shuffle,
        collate_fn=processor.data_collator(return_metadata=True),
        num_workers=args.dataloader_num_workers,
        generator=torch.Generator().manual_seed(seed),  # the loader's own seed draws never touch the global RNG
    )


def latest_checkpoint(output_dir: Path) -> Path:
    checkpoints = [p for p in output_dir.glob("checkpoints/*") if (p / STATE_FILE).is_file()]
    if not checkpoints:
        raise FileNotFoundError(f"--resume_from_checkpoint latest: no checkpoint in {output_dir / 'checkpoints'}")
    return max(checkpoints, key=lambda p: json.loads((p / STATE_FILE).read_text())["global_step"])


def train_and_evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """One full run: data, model, training with best-epoch selection, test evaluation, outputs. Returns the results."""
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_dir=str(args.output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
        # DDP: a batch without objects leaves the visual branch unused, and the "bert" presets never use the
        # text MLP, so unused parameters must be expected.
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    if accelerator.is_local_main_process:
        datasets.utils.logging.set_verbosity_warning()
        transformers.utils.logging.set_verbosity_warning()
    else:
        datasets.utils.logging.set_verbosity_error()
        transformers.utils.logging.set_verbosity_error()
    set_seed(args.seed)
    args.output_dir.mkdir(parents=True, exist_ok=True)

    # data, labels, model
    raw = load_raw_datasets(args, image_dir=args.image_dir)
    label_names = label_names_of(raw["train"])
    check_checkpoint_labels(args, label_names)
    splits = {"train": limit(raw["train"], args.max_train_samples), "validation": limit(raw["validation"], args.max_eval_samples),
              "test": limit(raw["test"], args.max_eval_samples)}
    if args.test_dataset_config_name:
        cross = load_raw_datasets(args, config_name=args.test_dataset_config_name, image_dir=args.test_image_dir)
        if label_names_of(cross["test"]) != label_names:
            raise ValueError(f"label set mismatch between {args.dataset_config_name} and {args.test_dataset_config_name}")
        splits["cross_test"] = limit(cross["test"], args.max_eval_samples)
    model, processor = build_model_and_processor(args, label_names)
    if args.gradient_checkpointing:  # transformers >= 5.x: activation_checkpointing_enable (the old name warns)
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    use_visual = bool(model.config.use_visual)
    logger.info(f"model: preset {args.preset!r}, {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                f"visual branch {'on' if use_visual else 'off'}, grounder {processor.grounder!r}")

    # visual preprocessing done once: grounding, then (frozen backbone) the feature cache
    if use_visual:
        splits = {name: ground_images(split, processor, args) for name, split in splits.items()}
    else:
        splits = {name: without_images(split) for name, split in splits.items()}
    if use_visual and args.freeze_vision_backbone:
        backbone = model.umgf.vision_backbone
        backbone.requires_grad_(False)
        fingerprint = backbone_fingerprint(backbone, processor)
        cache_dir = args.feature_cache_dir or args.output_dir / "feature_cache"
        with accelerator.main_process_first():
            splits = {name: cache_object_features(split, name, backbone, processor, cache_dir, fingerprint,
                                                  accelerator.device, args.per_device_eval_batch_size)
                      for name, split in splits.items()}
    has_objects = use_visual and any(_has_grounding(split) for split in splits.values())

    train_dataloader = make_dataloader(splits["train"], processor, args.per_device_train_batch_size, True, args, args.seed)
    eval_dataloaders = {name: make_dataloader(split, processor, args.per_device_eval_batch_size, False, args, args.seed)
                        for name, split in splits.items() if name != "train"}

    optimizer = torch.optim.AdamW(parameter_groups(model, args))
    updates_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    max_train_steps = args.max_train_steps or args.num_train_epochs * updates_per_epoch
    num_epochs = math.ceil(max_train_steps / updates_per_epoch)
    scheduler = get_scheduler(args.lr_scheduler_type, optimizer=optimizer,
                              num_warmup_steps=int(args.warmup_ratio * max_train_steps), num_training_steps=max_train_steps)
    model, optimizer, train_dataloader, scheduler = accelerator.prepare(model, optimizer, train_dataloader, scheduler)
    eval_dataloaders = {name: accelerator.prepare(loader) for name, loader in eval_dataloaders.items()}
    if args.report_to != "none":
        tracked = {k: (str(v) if isinstance(v, (Path, list, dict)) or v is None else v) for k, v in vars(args).items()}
        accelerator.init_trackers("umgf", tracked)

    state = {"global_step": 0, "epoch": 0, "batches_in_epoch": 0, "best_f1": -1.0, "best_epoch": None, "history": []}
    if args.resume_from_checkpoint:
        checkpoint = latest_checkpoint(args.output_dir) if args.resume_from_checkpoint == "latest" else Path(args.resume_from_checkpoint)
        if not (checkpoint / STATE_FILE).is_file():
            raise FileNotFoundError(f"{checkpoint} is not a checkpoint of this script (no {STATE_FILE})")
        accelerator.load_state(str(checkpoint))
        state = json.loads((checkpoint / STATE_FILE).read_text())
        logger.info(f"resumed from {checkpoint}: epoch {state['epoch']}, optimizer step {state['global_step']}")

    def save_checkpoint(name: str) -> None:
        folder = args.output_dir / "checkpoints" / name
        accelerator.save_state(str(folder))
        if accelerator.is_main_process:
            (folder / STATE_FILE).write_text(json.dumps(state, indent=2))

    def save_best(unwrapped) -> None:
        if accelerator.is_main_process:
            unwrapped.save_pretrained(args.output_dir / BEST_DIR, safe_serialization=True)
            processor.save_pretrained(args.output_dir / BEST_DIR)

    logger.info(f"training: {len(splits['train'])} sentences, {num_epochs} epochs, {max_train_steps} optimizer steps, "
                f"batch {args.per_device_train_batch_size} x {accelerator.num_processes} processes x {args.gradient_accumulation_steps} accumulation")
    progress = tqdm(total=max_train_steps, initial=state["global_step"], desc="training", disable=not accelerator.is_local_main_process)
    started = time.perf_counter()
    seen = 0
    while state["epoch"] < num_epochs and state["global_step"] < max_train_steps:
        model.train()
        train_dataloader.set_epoch(state["epoch"])
        loader = train_dataloader
        if state["batches_in_epoch"]:
            loader = accelerator.skip_first_batches(train_dataloader, state["batches_in_epoch"])
        for batch in loader:
            with accelerator.accumulate(model):
                inputs = model_inputs(batch, use_objects=True)
                loss = model(**inputs, labels=batch["labels"]).loss
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
                accelerator.log({"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[-1],
                                 "train/sentences_per_s": rate}, step=state["global_step"])
            if args.checkpointing_steps not in (None, "epoch") and state["global_step"] % int(args.checkpointing_steps) == 0:
                save_checkpoint(f"step_{state['global_step']}")
            if state["global_step"] >= max_train_steps:
                break
        # end of epoch (or of training): select on dev F1
        dev = predict(model, eval_dataloaders["validation"], accelerator, processor, True, "dev")
        dev_scores, _ = score(splits["validation"], dev, label_names)
        state["history"].append({"epoch": state["epoch"], "step": state["global_step"], "dev_f1": dev_scores["f1"]})
        accelerator.log({"dev/f1": dev_scores["f1"], "dev/precision": dev_scores["precision"], "dev/recall": dev_scores["recall"]},
                        step=state["global_step"])
        logger.info(f"epoch {state['epoch']}: dev P {dev_scores['precision']:.4f} R {dev_scores['recall']:.4f} F1 {dev_scores['f1']:.4f}")
        if dev_scores["f1"] > state["best_f1"]:
            state["best_f1"], state["best_epoch"] = dev_scores["f1"], state["epoch"]
            save_best(accelerator.unwrap_model(model))
        state["epoch"] += 1
        state["batches_in_epoch"] = 0
        if args.checkpointing_steps == "epoch":
            save_checkpoint(f"epoch_{state['epoch'] - 1}")
    progress.close()
    accelerator.wait_for_everyone()
    train_seconds = time.perf_counter() - started

    # the best epoch on dev, then test (with and without images) and the cross-domain test
    best = UMGFForTokenClassification.from_pretrained(args.output_dir / BEST_DIR)
    accelerator.unwrap_model(model).load_state_dict(best.state_dict())
    del best
    results: dict[str, Any] = {"best_epoch": state["best_epoch"], "dev_f1": state["best_f1"], "train_seconds": round(train_seconds, 1),
                               "global_step": state["global_step"], "seed": args.seed, "preset": args.preset,
                               "scoring": "seqeval default mode (conlleval-compatible), micro-averaged entity P/R/F1"}
    tables: dict[str, dict[str, Any]] = {}
    evaluations = [("test", "test", True)]
    if has_objects:
        evaluations.append(("test_without_images", "test", False))
    if "cross_test" in splits:
        evaluations.append((f"cross_test_{args.test_dataset_config_name}", "cross_test", True))
    for key, split, use_objects in evaluations:
        predictions = predict(model, eval_dataloaders[split], accelerator, processor, use_objects, key)
        scores, records = score(splits[split], predictions, label_names)
        results[key] = scores
        tables[key] = scores
        if accelerator.is_main_process:
            with open(args.output_dir / f"predictions_{key}.jsonl", "w", encoding="utf-8") as handle:
                handle.writelines(json.dumps(record) + "\n" for record in records)
    accelerator.log({f"{key}/f1": s["f1"] for key, s in tables.items()}, step=state["global_step"])

    if accelerator.is_main_process:
        # model + processor + pipeline code (pipeline(model=output_dir, trust_remote_code=True) works) + handler
        # + all_results.json + the model card filled with these results
        hub.save_for_hub(accelerator.unwrap_model(model), processor, args.output_dir, results,
                         repo_id=args.hub_model_id, dataset_id=args.dataset_name, dataset_config=args.dataset_config_name)
        print_tables(tables, args, results)
        if args.push_to_hub:
            push(accelerator.unwrap_model(model), processor, args, results)
    accelerator.end_training()
    return results


def print_tables(tables: dict[str, dict[str, Any]], args: argparse.Namespace, results: dict[str, Any]) -> None:
    data = "synthetic task" if args.synthetic else args.dataset_config_name
    names = {"test": "UMGF (with images)" if "test_without_images" in tables else f"UMGF ({args.preset})",
             "test_without_images": "UMGF (images removed)"}
    print(f"\nTest results on {data} (best epoch {results['best_epoch']} of dev F1 {100 * results['dev_f1']:.2f}; "
          f"seqeval default, conlleval-compatible):")
    print(format_table2({names.get(key, key): scores for key, scores in tables.items()}))
    print()


def push(model: UMGFForTokenClassification, processor: UMGFProcessor, args: argparse.Namespace, results: dict[str, Any]) -> None:
    """Upload model, processor, pipeline, handler and the model card with the measured results in one commit."""
    url = hub.push_to_hub(model, processor, args.hub_model_id, results, token=args.hub_token,
                          private=args.hub_private_repo, dataset_id=args.dataset_name,
                          dataset_config=args.dataset_config_name)
    logger.info(f"pushed to the Hub: {url}")


# -------------------------------------------------------------------------------------------- other modes
def run_seeds(args: argparse.Namespace) -> dict[str, Any]:
    """One run per seed in <output_dir>/seed_<s>, then mean ± std of every test evaluation."""
    root, runs = args.output_dir, {}
    for seed in args.seeds:
        run_args = argparse.Namespace(**{**vars(args), "seed": seed, "output_dir": root / f"seed_{seed}"})
        runs[seed] = train_and_evaluate(run_args)
    keys = [key for key in runs[args.seeds[0]] if key.startswith(("test", "cross_test"))]
    summary = {"seeds": args.seeds, **{f"{key}_mean_std": mean_std([runs[s][key] for s in args.seeds]) for key in keys},
               "dev_f1": [runs[s]["dev_f1"] for s in args.seeds]}
    (root / "all_results.json").write_text(json.dumps({"runs": {str(s): r for s, r in runs.items()}, **summary}, indent=2))
    print(f"\nMean ± std over seeds {args.seeds}:")
    print(format_table2({key: summary[f"{key}_mean_std"] for key in keys}))
    return summary


def compare(args: argparse.Namespace) -> dict[str, Any]:
    """Paired bootstrap between two predictions_*.jsonl files of the same sentences."""
    runs = []
    for path in args.compare_predictions:
        with open(path, encoding="utf-8") as handle:
            runs.append({r["id"]: r for r in map(json.loads, handle)})
    a, b = runs
    if set(a) != set(b):
        raise SystemExit(f"the two prediction files cover different sentences ({len(set(a) ^ set(b))} differ)")
    ids = sorted(a)
    if any(a[i]["gold"] != b[i]["gold"] for i in ids):
        raise SystemExit("the two prediction files disagree on the gold tags: not the same test set")
    result = paired_bootstrap([a[i]["gold"] for i in ids], [a[i]["pred"] for i in ids], [b[i]["pred"] for i in ids],
                              samples=args.bootstrap_samples, seed=args.seed)
    result.update(run_a=str(args.compare_predictions[0]), run_b=str(args.compare_predictions[1]))
    print(json.dumps(result, indent=2))
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    if args.compare_predictions:
        return compare(args)
    threads = torch.get_num_threads()
    if args.synthetic and "OMP_NUM_THREADS" not in os.environ:
        # The synthetic model is tiny (64-d): intra-op threads only add synchronisation, and on a busy machine
        # their spin-waits make a step several times slower. OMP_NUM_THREADS overrides this.
        torch.set_num_threads(1)
    try:
        return run_seeds(args) if args.seeds else train_and_evaluate(args)
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    main(sys.argv[1:])
