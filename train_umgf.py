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
import contextlib
import json
import logging
import math
import os
import shlex
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
from accelerate import Accelerator, DataLoaderConfiguration, DistributedDataParallelKwargs
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from huggingface_hub import create_repo
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from datasets_scripts.authors_format import drop_empty_words
from datasets_scripts.ground_dataset import ground_dataset, has_accelerator
from datasets_scripts.release_crops import attach_release_crops
from datasets_scripts.synthetic import SYNTHETIC_JOB
from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.configuration_umgf import PRESET_RECORDS
from modeling_umgf.precision import inference_copy, resolve_precision
from modeling_umgf.tools import hub
from modeling_umgf.tools.evaluation import (
    authors_scores,
    flat_scores,
    learning_warning,
    model_inputs,
    predict,
    results_tables,
    score,
)
from modeling_umgf.tools.feature_cache import cache_object_features
from modeling_umgf.tools.model_building import (
    build_model_and_processor,
    encoder_name,
    is_umgf_checkpoint,
    load_checkpoint,
    parse_config_overrides,
    preset_of,
)
from modeling_umgf.tools.optimization import (
    OPTIMIZERS,
    build_scheduler,
    parameter_groups,
)
from modeling_umgf.tools.resume import (
    BEST_DIR,
    ResumeError,
    TrainerState,
    best_model_folder,
    is_complete,
    latest_checkpoint,
    remove_best_copy,
    resume_state,
    run_signature,
    save_checkpoint,
)
from modeling_umgf.tools.run_folder import (
    OwnedCheckpoints,
    RunFolderError,
    check_run_folder,
    lock_run_folder,
    public_arguments,
    replace_entries,
)
from modeling_umgf.tools.training_args import is_synthetic, parse_args
from modeling_umgf.tools.training_data import (
    dataset_config,
    has_images,
    label_names_of,
    limit,
    load_splits,
    without_images,
)

logger = get_logger(__name__)

EXAMPLES = 3  # test posts saved as the demo's examples (synthetic job)
#: The preset of the fusion model without a visual branch, chosen by --if_no_images text-only.
TEXT_ONLY_PRESET = "text-only"


def resolve_names(args: argparse.Namespace) -> None:
    """Read what the names given stand for (``args`` is changed): the only config of a one-config --dataset_name,
    and a --model_name_or_path that is a plain encoder, not a UMGF model (run_ner_no_trainer's habit), becomes the
    --text_model_name_or_path of a new model."""
    args.dataset_config_name = dataset_config(args.dataset_name, args.dataset_config_name)
    if args.model_name_or_path and not is_umgf_checkpoint(args.model_name_or_path):
        logger.info(
            f"--model_name_or_path {args.model_name_or_path} is a text encoder, not a UMGF model: a new "
            "UMGF model is built over it (as with --text_model_name_or_path)"
        )
        args.text_model_name_or_path, args.model_name_or_path = args.model_name_or_path, None


def load_data(args: argparse.Namespace, config_name: str | None, image_dir: Path | None) -> datasets.DatasetDict:
    """The train / validation / test splits of ``config_name`` from the data the arguments name."""
    return load_splits(
        config_name,
        umt_data_dir=args.umt_data_dir,
        dataset_name=args.dataset_name,
        image_dir=image_dir,
        synthetic_sizes=args.synthetic_sizes,
        columns={args.text_column_name: "tokens", args.label_column_name: "ner_tags"},
    )


def check_images(args: argparse.Namespace, splits: dict[str, datasets.Dataset]) -> bool:
    """Whether the data has images. Without any (e.g. the UMT text alone, no --image_dir), a visual preset would
    build a vision backbone that never sees an image: say so, and with ``--if_no_images text-only`` train the
    "text-only" preset instead (``args.preset`` is changed). A checkpoint given by --model_name_or_path is used as
    it is."""
    found = any(has_images(split) for split in splits.values())
    if found or is_synthetic(args) or args.model_name_or_path:
        return found
    if PRESET_RECORDS[args.preset].config.get("use_visual", True):
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


def build_model(args: argparse.Namespace, label_names: list[str], images: bool = True) -> tuple[Any, Any]:
    """A UMGF checkpoint to fine-tune, a new model over pretrained encoders, or the synthetic job's small model."""
    if args.model_name_or_path:
        if args.preset != "paper" or args.config_overrides:
            logger.warning("--preset / --config_overrides are ignored: the checkpoint's configuration is used")
        return load_checkpoint(args.model_name_or_path, label_names, args.max_length, args.grounder)
    overrides = parse_config_overrides(args.config_overrides)
    if args.vision_backbone:
        overrides["vision_backbone"] = args.vision_backbone
    return build_model_and_processor(
        label_names,
        args.preset,
        text_model_name_or_path=args.text_model_name_or_path,
        synthetic=SYNTHETIC_JOB if is_synthetic(args) else None,
        overrides=overrides,
        vision_weights=args.vision_weights,
        grounder=args.grounder,
        max_length=args.max_length,
        images=images,
    )


def select_on_dev(
    model: Any,
    dataloader: DataLoader,
    accelerator: Accelerator,
    processor: Any,
    dev: datasets.Dataset,
    args: argparse.Namespace,
    state: TrainerState,
    evaluate_only: bool,
) -> None:
    """Score the model on ``dev`` and record it in ``state``; a dev F1 above every earlier one makes this epoch the
    best, its model kept in BEST_DIR (unless ``evaluate_only``: a given model evaluated as it is)."""
    predictions = predict(model, dataloader, accelerator, processor, True, "dev")
    scores, records = score(dev, predictions, processor.label_names)
    if args.metric == "authors":
        scores = authors_scores(dev, predictions, processor.label_names, processor)
    state.history.append({"epoch": state.epoch, "step": state.global_step, "dev_f1": scores["f1"]})
    accelerator.log({f"dev/{key}": scores[key] for key in ("f1", "precision", "recall")}, step=state.global_step)
    when = "evaluation" if evaluate_only else f"epoch {state.epoch}"
    logger.info(f"{when}: dev P {scores['precision']:.4f} R {scores['recall']:.4f} F1 {scores['f1']:.4f}")
    if scores["f1"] > state.best_f1:
        state.best_f1, state.best_epoch = scores["f1"], state.epoch
        state.best_dev = flat_scores("eval", scores, records)
        if accelerator.is_main_process and not evaluate_only:
            accelerator.unwrap_model(model).save_pretrained(args.output_dir / BEST_DIR, safe_serialization=True)
            processor.save_pretrained(args.output_dir / BEST_DIR)


def closing_summary(args: argparse.Namespace, results: dict[str, Any], written: list[Path], example: str) -> str:
    """What the run wrote and where, and a ready ``umgf-predict`` command for its model."""
    model = str(args.output_dir) if results.get("mode") != "evaluate" else str(args.model_name_or_path)
    lines = ["", "=" * 100, "Done." if results.get("mode") != "evaluate" else "Done (evaluation only, no training)."]
    if results.get("mode") != "evaluate":
        lines.append(f"  model, processor, pipeline code and model card: {args.output_dir}")
    lines += [f"  {path.name}: {path}" for path in written]
    lines.append(f"  tag a post: umgf-predict --model {shlex.quote(model)} --text {shlex.quote(example)}")
    lines += [f"  WARNING: {warning}" for warning in results.get("warnings", [])]
    lines.append("=" * 100)
    return "\n".join(lines)


@contextlib.contextmanager
def output_folder(args: argparse.Namespace) -> Iterator[None]:
    """The run in --output_dir: created, locked by the job's main process, and checked (another run's model or
    checkpoints are refused unless --overwrite_output_dir or resuming)."""
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
            yield
    except RunFolderError as error:
        raise SystemExit(f"--output_dir: {error}") from None
    finally:
        torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    """One run: train, select the best dev epoch, test, save. Returns the results (also in all_results.json)."""
    args = parse_args(argv)
    with output_folder(args):
        # 1. Accelerator, logging, seed. Without a GPU the processes of `torchrun` / `accelerate launch` form a CPU
        #    (gloo) process group only with cpu=True. DDP: a batch without objects leaves the visual branch unused,
        #    and the "bert" presets never use the text MLP, so unused parameters must be expected. Checkpoints are
        #    checkpoints/checkpoint_<n>, named and rotated here: only this run's checkpoints are deleted.
        accelerator = Accelerator(
            cpu=not has_accelerator(),
            gradient_accumulation_steps=args.gradient_accumulation_steps,
            mixed_precision=args.mixed_precision,
            log_with=None if args.report_to == "none" else args.report_to,
            project_config=ProjectConfiguration(project_dir=str(args.output_dir), automatic_checkpoint_naming=False),
            dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        logging.basicConfig(
            format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", datefmt="%H:%M:%S", level=logging.INFO
        )
        logger.info(accelerator.state, main_process_only=False)
        resolve_names(args)
        verbosity = logging.WARNING if accelerator.is_local_main_process else logging.ERROR
        datasets.utils.logging.set_verbosity(verbosity)
        transformers.utils.logging.set_verbosity(verbosity)
        set_seed(args.seed)
        hub_model_id = args.hub_model_id or args.output_dir.resolve().name
        if args.push_to_hub and accelerator.is_main_process:  # a bad repo id or token fails now, not after training
            try:
                create_repo(hub_model_id, token=args.hub_token, private=args.hub_private_repo, exist_ok=True)
            except Exception as error:  # network, authentication, permissions: huggingface_hub raises several kinds
                raise SystemExit(
                    f"--push_to_hub: cannot create or reach the Hub repo {hub_model_id}: {error}"
                ) from None

        # 2. Data: train / dev / test (+ the test split of a second config for cross-domain runs).
        raw = load_data(args, args.dataset_config_name, args.image_dir)
        label_names = label_names_of(raw["train"])
        # --num_train_epochs 0 --model_name_or_path DIR: that model is evaluated as it is; nothing is trained or saved
        evaluate_only = bool(args.model_name_or_path) and args.num_train_epochs == 0 and not args.max_train_steps
        splits = {
            "train": raw["train"].select([]) if evaluate_only else limit(raw["train"], args.max_train_samples),
            "validation": limit(raw["validation"], args.max_eval_samples),
            "test": limit(raw["test"], args.max_eval_samples),
        }
        if args.test_dataset_config_name:
            cross = load_data(args, args.test_dataset_config_name, args.test_image_dir)
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
        model, processor = build_model(args, label_names, images)
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

        # 5. Dataloaders (the loader's seed draws leave the global RNG), optimizer, scheduler.
        loaders = {
            name: DataLoader(
                split.with_transform(processor.process_examples),
                batch_size=args.per_device_train_batch_size if name == "train" else args.per_device_eval_batch_size,
                shuffle=name == "train" and args.shuffle_train and not evaluate_only,
                collate_fn=processor.data_collator(return_metadata=True),
                num_workers=args.dataloader_num_workers,
                generator=torch.Generator().manual_seed(args.seed),
            )
            for name, split in splits.items()
        }
        groups = parameter_groups(
            model, args.learning_rate, args.text_encoder_learning_rate, args.vision_learning_rate, args.weight_decay
        )
        optimizer = OPTIMIZERS[args.optimizer](groups)
        updates_per_epoch = math.ceil(len(loaders["train"]) / args.gradient_accumulation_steps)
        max_train_steps = (
            args.max_train_steps if args.max_train_steps is not None else args.num_train_epochs * updates_per_epoch
        )
        num_epochs = math.ceil(max_train_steps / updates_per_epoch) if updates_per_epoch else 0
        warmup_steps = args.num_warmup_steps
        if warmup_steps is None:
            warmup_steps = int(args.warmup_ratio * max_train_steps)
        scheduler = build_scheduler(args.lr_scheduler_type, optimizer, updates_per_epoch, max_train_steps, warmup_steps)
        model, optimizer, train_dataloader, scheduler = accelerator.prepare(
            model, optimizer, loaders.pop("train"), scheduler
        )
        eval_dataloaders = {name: accelerator.prepare(loader) for name, loader in loaders.items()}
        if args.report_to != "none":
            tracked = {
                k: (str(v) if isinstance(v, (Path, list, dict)) or v is None else v)
                for k, v in public_arguments(vars(args)).items()  # never a token
            }
            accelerator.init_trackers("umgf", tracked)

        # 6. Resume: the accelerate state (model, optimizer, scheduler, RNGs) and where in which epoch it stopped.
        #    New checkpoints are numbered after those already in the folder; the ones a killed run of this script
        #    left incomplete (no trainer state: written last) are dropped, others' are left alone.
        owned = OwnedCheckpoints(args.output_dir)
        if accelerator.is_main_process:
            deleted, foreign = owned.remove_incomplete(is_complete)
            for path in deleted:
                logger.warning(f"removed {path}, a checkpoint this script left incomplete")
            for path in foreign:
                logger.warning(f"{path} is incomplete but was not made by a run in this folder: left as it is")
        accelerator.wait_for_everyone()
        data = f"synthetic {args.synthetic_sizes or 'default sizes'}" if is_synthetic(args) else None
        run = run_signature(
            vars(args),
            accelerator.num_processes,
            data or f"{args.umt_data_dir or args.dataset_name} {args.dataset_config_name}",
        )
        state = TrainerState(run)
        if args.resume_from_checkpoint:
            checkpoint = (
                latest_checkpoint(args.output_dir)
                if args.resume_from_checkpoint == "latest"
                else Path(args.resume_from_checkpoint)
            )
            try:
                state = resume_state(checkpoint, run, args.force_resume)
            except ResumeError as error:
                raise SystemExit(str(error)) from None
            accelerator.load_state(str(checkpoint))
            logger.info(f"resumed from {checkpoint}: epoch {state.epoch}, optimizer step {state.global_step}")

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
            initial=state.global_step,
            desc="training",
            disable=evaluate_only or not accelerator.is_local_main_process,
        )
        dev_loader, dev_split = eval_dataloaders["validation"], splits["validation"]
        started, seen = time.perf_counter(), 0
        while state.epoch < num_epochs and state.global_step < max_train_steps:
            model.train()
            train_dataloader.set_epoch(state.epoch)
            loader = train_dataloader
            if state.batches_in_epoch:
                loader = accelerator.skip_first_batches(train_dataloader, state.batches_in_epoch)
            for batch in loader:
                with accelerator.accumulate(model):
                    loss = model(**model_inputs(batch, processor, use_objects=True), labels=batch["labels"]).loss
                    accelerator.backward(loss)
                    if accelerator.sync_gradients and args.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    optimizer.step()
                    scheduler.step()
                    optimizer.zero_grad()
                state.batches_in_epoch += 1
                seen += len(batch["sample_id"]) * accelerator.num_processes
                if not accelerator.sync_gradients:
                    continue
                state.global_step += 1
                progress.update(1)
                if state.global_step % args.logging_steps == 0 or state.global_step == max_train_steps:
                    rate = seen / (time.perf_counter() - started)
                    progress.set_postfix(loss=f"{loss.item():.4f}", sent_per_s=f"{rate:.1f}")
                    logs = {"loss": loss.item(), "lr": scheduler.get_last_lr()[-1], "sentences_per_s": rate}
                    accelerator.log({f"train/{key}": value for key, value in logs.items()}, step=state.global_step)
                if args.checkpointing_steps not in (None, "epoch") and (
                    state.global_step % int(args.checkpointing_steps) == 0
                ):
                    save_checkpoint(accelerator, owned, state, args.checkpoints_total_limit)
                if state.global_step >= max_train_steps:
                    break
            select_on_dev(model, dev_loader, accelerator, processor, dev_split, args, state, evaluate_only)
            state.epoch += 1
            state.batches_in_epoch = 0
            if args.checkpointing_steps == "epoch":
                save_checkpoint(accelerator, owned, state, args.checkpoints_total_limit)
        if max_train_steps == 0:  # --num_train_epochs 0: the given model, evaluated as it is
            select_on_dev(model, dev_loader, accelerator, processor, dev_split, args, state, evaluate_only)
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
                best_epoch=state.best_epoch,
                train_seconds=round(train_seconds, 1),
                global_step=state.global_step,
                num_train_epochs=state.epoch,
                train_samples=len(splits["train"]),
                train_samples_available=len(raw["train"]),
                seed=args.seed,
            )
        results.update(
            dev_f1=state.best_f1,
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
        evaluated = model if tested is accelerator.unwrap_model(model) else tested  # the prepared model at fp32
        for key, split, use_objects in evaluations:
            predictions = predict(evaluated, eval_dataloaders[split], accelerator, processor, use_objects, key)
            tables[key], records = score(splits[split], predictions, label_names)
            if args.metric == "authors":
                tables[key]["authors"] = authors_scores(splits[split], predictions, label_names, processor)
            results[key] = tables[key]
            prediction_records[key] = records  # written with the model (step 9), so that they always go together
            if key == "test":  # run_ner_no_trainer's flat keys: eval_* (dev, the selected epoch) and test_*
                results.update({**state.best_dev, **flat_scores("test", tables[key], records)})
        predicted = sum(record["predicted"] for record in prediction_records["test"])
        warning = learning_warning(state.best_f1, predicted, len(prediction_records["test"]), results)
        if warning:
            results["warnings"] = [warning]
            logger.warning(f"\n{'!' * 100}\nWARNING: {warning}\n{'!' * 100}")
        accelerator.log({f"{key}/f1": s["f1"] for key, s in tables.items()}, step=state.global_step)

        # 9. Outputs: model + processor + pipeline code (pipeline(model=output_dir, trust_remote_code=True) works),
        #    handler, all_results.json and the model card filled with these results; then the Hub. An
        #    evaluation-only run writes its results and predictions, not another copy of the model it evaluated.
        if accelerator.is_main_process:
            examples: list[tuple[str, Any]] = []
            if is_synthetic(args):  # example posts with images for a demo Space (the Twitter images may not be shared)
                shown = [row for row in raw["test"] if row["image"] is not None][:EXAMPLES]
                examples = [(" ".join(row["tokens"]), row["image"]) for row in shown]
            card = dict(
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
                hub.save_for_hub(
                    accelerator.unwrap_model(model), processor, folder, results, repo_id=hub_model_id, **card
                )
                if examples:
                    hub.write_examples(folder, examples)

            replace_entries(args.output_dir, save_outputs)  # written beside, then renamed: a previous model stays whole
            if not evaluate_only:
                remove_best_copy(args.output_dir)  # the folder now holds the best epoch's model itself
            data = "synthetic task" if is_synthetic(args) else args.dataset_config_name
            print(results_tables(tables, data, results))
            print(closing_summary(args, results, written, card["widget_texts"][0]))
            if args.push_to_hub:
                url = hub.push_to_hub(
                    accelerator.unwrap_model(model),
                    processor,
                    hub_model_id,
                    results,
                    token=args.hub_token,
                    private=args.hub_private_repo,
                    **card,
                )
                logger.info(f"pushed to the Hub: {url}")
        accelerator.end_training()
    return results


if __name__ == "__main__":
    main(sys.argv[1:])
