"""Tests of train_umgf.py (CPU, offline, tiny models on the synthetic task).

Expected scores are counted by hand from small handmade tag sequences; the end-to-end run is checked by
reloading what it saved and predicting again, and resumption by comparing a resumed run with an
uninterrupted one weight by weight.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import save_tiny_text_encoder
from safetensors.torch import load_file
from seqeval.metrics import f1_score

import compare_predictions
import run_seeds
import train_umgf
from datasets_scripts.synthetic import SyntheticMNERConfig, build_synthetic_dataset
from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.processing_umgf import UMGFProcessor
from modeling_umgf.schema import GROUNDING_COLUMNS
from modeling_umgf.tools.evaluation import model_inputs
from modeling_umgf.tools.resume import BEST_DIR


# ------------------------------------------------------------------------------------------ script runs
def run(tmp: Path, *extra: str) -> dict:
    return train_umgf.main(["--output_dir", str(tmp), *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One short synthetic run: 320 training sentences, 3 epochs, a raised learning rate."""
    out = tmp_path_factory.mktemp("run")
    run(out, "--synthetic_sizes", "320", "40", "80", "--num_train_epochs", "3", "--learning_rate", "5e-3")
    return out


def test_synthetic_task_learns_from_images(trained):
    results = json.loads((trained / "all_results.json").read_text())
    with_images, without = results["test"]["f1"], results["test_without_images"]["f1"]
    assert with_images > 0.4
    assert with_images > without + 0.2, (with_images, without)


def test_results_score_every_gold_entity(trained):
    results = json.loads((trained / "all_results.json").read_text())
    test = build_synthetic_dataset(SyntheticMNERConfig(train_size=320, validation_size=40, test_size=80))["test"]
    names = test.features["ner_tags"].feature.names
    gold = [[names[t] for t in tags] for tags in test["ner_tags"]]
    records = [json.loads(line) for line in (trained / "predictions_test.jsonl").read_text().splitlines()]
    assert [r["gold"] for r in records] == gold
    assert (
        results["test"]["support"]
        == sum(r["gold_entities"] for r in records)
        == sum(tag.startswith("B-") for sentence in gold for tag in sentence)
    )
    assert results["test"]["f1"] == pytest.approx(f1_score(gold, [r["pred"] for r in records]))
    assert results["best_epoch"] in (0, 1, 2) and "conlleval" in results["scoring"]


def test_saved_model_reloads_with_same_predictions(trained):
    model = UMGFForTokenClassification.from_pretrained(trained).eval()
    processor = UMGFProcessor.from_pretrained(trained)
    test = build_synthetic_dataset(SyntheticMNERConfig(train_size=320, validation_size=40, test_size=80))["test"]
    records = [json.loads(line) for line in (trained / "predictions_test.jsonl").read_text().splitlines()]
    collate = processor.data_collator(return_metadata=True)
    predicted = []
    for start in range(0, len(test), 16):
        batch = collate(_examples(processor, test[start : start + 16]))
        with torch.no_grad():
            outputs = model(**model_inputs(batch, processor, use_objects=True))
        predicted += processor.decode_word_predictions(outputs.predictions, batch["num_words"])
    assert predicted == [r["pred"] for r in records]


def _examples(processor: UMGFProcessor, columns: dict) -> list[dict]:
    processed = processor.process_examples(columns)
    return [{key: values[i] for key, values in processed.items()} for i in range(len(columns["tokens"]))]


def test_truncated_words_are_scored_as_o(tmp_path):
    results = run(tmp_path, "--synthetic_sizes", "32", "16", "16", "--num_train_epochs", "1", "--max_length", "6")
    records = [json.loads(line) for line in (tmp_path / "predictions_test.jsonl").read_text().splitlines()]
    long = [r for r in records if len(r["tokens"]) > 4]  # [CLS] + 4 sub-tokens + [SEP] at most
    assert long and all(r["pred"][-1] == "O" and len(r["pred"]) == len(r["gold"]) for r in long)
    assert results["test"]["support"] == sum(r["gold_entities"] for r in records)


def checkpoint_at(output_dir: Path, step: int) -> Path:
    """The checkpoint folder of a run saved after optimizer step ``step``."""
    [found] = [
        p
        for p in output_dir.glob("checkpoints/*")
        if json.loads((p / "trainer_state.json").read_text())["global_step"] == step
    ]
    return found


def test_resume_matches_uninterrupted_run(tmp_path):
    args = ["--synthetic_sizes", "64", "16", "16", "--num_train_epochs", "2", "--checkpointing_steps", "3"]
    full, resumed = tmp_path / "full", tmp_path / "resumed"
    run(full, *args)
    # A run killed after step 3 leaves exactly this checkpoint behind.
    shutil.copytree(checkpoint_at(full, 3), resumed / "checkpoints" / checkpoint_at(full, 3).name)
    run(resumed, *args, "--resume_from_checkpoint", "latest")
    last_full = load_file(checkpoint_at(full, 6) / "model.safetensors")
    last_resumed = load_file(checkpoint_at(resumed, 6) / "model.safetensors")
    assert last_full.keys() == last_resumed.keys()
    for name in last_full:
        torch.testing.assert_close(last_resumed[name], last_full[name], rtol=0, atol=0, msg=name)
    a, b = (json.loads((d / "all_results.json").read_text()) for d in (full, resumed))
    assert a["test"] == b["test"] and a["best_epoch"] == b["best_epoch"]


def test_gradient_checkpointing_flag_trains_the_same_weights(tmp_path, monkeypatch):
    from modeling_umgf.modeling_umgf import UMGFPreTrainedModel

    switched = []
    original = UMGFPreTrainedModel._set_gradient_checkpointing
    monkeypatch.setattr(
        UMGFPreTrainedModel,
        "_set_gradient_checkpointing",
        lambda self, enable=True, *a, **k: switched.append(enable) or original(self, enable, *a, **k),
    )
    args = ["--synthetic_sizes", "48", "16", "16", "--num_train_epochs", "1", "--checkpointing_steps", "3"]
    plain, checkpointed = tmp_path / "plain", tmp_path / "checkpointed"
    run(plain, *args)
    assert switched == []
    run(checkpointed, *args, "--gradient_checkpointing")
    assert switched == [True]
    a = load_file(checkpoint_at(plain, 3) / "model.safetensors")
    b = load_file(checkpoint_at(checkpointed, 3) / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:  # recomputation replays dropout with the saved RNG state: the same updates
        torch.testing.assert_close(b[name], a[name], rtol=1e-5, atol=1e-6, msg=name)


def test_compare_predictions_prefers_images(trained, capsys):
    result = compare_predictions.main(
        [
            str(trained / "predictions_test.jsonl"),
            str(trained / "predictions_test_without_images.jsonl"),
            "--samples",
            "200",
        ]
    )
    assert result["delta"] > 0 and result["p_value"] < 0.05


def test_checkpoint_with_other_labels_is_refused(tmp_path):
    from modeling_umgf.tools.tiny_models import tiny_config

    labels = ["O", "B-X", "I-X"]
    UMGFForTokenClassification(
        tiny_config(id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)})
    ).save_pretrained(tmp_path / "ckpt")
    with pytest.raises(ValueError, match="label set mismatch"):
        run(tmp_path / "out", "--model_name_or_path", str(tmp_path / "ckpt"), "--synthetic_sizes", "8", "4", "4")


def test_umt_text_cross_domain_and_seeds(tmp_path):
    """Twitter text (UMT format fixtures) with a pretrained-style text encoder folder: train on 2015, also test
    on 2017, two seeds; the summary's mean is the mean of the runs."""
    encoder = save_tiny_text_encoder(tmp_path / "tiny-bert")
    fixtures = Path(__file__).parent / "fixtures" / "twitter"
    summary = run_seeds.main(
        [
            "--seeds",
            "1",
            "2",
            "--",
            "--output_dir",
            str(tmp_path / "out"),
            "--umt_data_dir",
            str(fixtures),
            "--dataset_config_name",
            "twitter2015",
            "--test_dataset_config_name",
            "twitter2017",
            "--text_model_name_or_path",
            str(encoder),
            "--preset",
            "bert-crf",
            "--num_train_epochs",
            "1",
        ]
    )
    runs = json.loads((tmp_path / "out" / "all_results.json").read_text())["runs"]
    assert set(runs) == {"1", "2"}
    cross = [runs[s]["cross_test_twitter2017"] for s in ("1", "2")]
    gold_2017 = sum(
        line.split("\t")[-1].strip().startswith("B-")
        for line in (fixtures / "twitter2017" / "test.txt").read_text(encoding="utf-8").splitlines()
    )
    assert all(c["support"] == gold_2017 for c in cross)
    assert summary["cross_test_twitter2017_mean_std"]["f1"]["mean"] == pytest.approx(np.mean([c["f1"] for c in cross]))
    assert "test_without_images" not in runs["1"]  # no image anywhere: nothing to remove


def test_feature_cache_holds_backbone_features_of_each_crop(trained):
    import datasets

    [cache_file] = (trained / "feature_cache").glob("test-*.arrow")
    cached = datasets.Dataset.from_file(str(cache_file))
    test = build_synthetic_dataset(SyntheticMNERConfig(train_size=320, validation_size=40, test_size=80))["test"]
    assert cached["id"] == test["id"]
    model = UMGFForTokenClassification.from_pretrained(trained).eval()
    processor = UMGFProcessor.from_pretrained(trained)
    rows = [i for i, boxes in enumerate(test["object_boxes"]) if boxes][:3]
    for i in rows:
        crops = processor(
            images=test[i]["image"], words=test[i]["tokens"], grounding={c: test[i][c] for c in GROUNDING_COLUMNS}
        )["pixel_values"]
        with torch.no_grad():
            expected = model.umgf.vision_backbone(crops)
        torch.testing.assert_close(torch.tensor(cached[i]["object_features"]), expected, rtol=1e-4, atol=1e-5)
    assert all(cached[i]["object_features"] is None for i, boxes in enumerate(test["object_boxes"]) if not boxes)


def test_the_saved_model_reads_raw_test_images_in_a_clean_process(trained, tmp_path):
    """The main job's model, given the test images as pixels (no grounding) through
    pipeline(model=folder, trust_remote_code=True) where umgf cannot be imported, scores what the run scored: its
    symbols grounder finds the same objects at inference as in training."""
    from helpers import run_without_package

    processor = UMGFProcessor.from_pretrained(trained)
    assert processor.grounder == "symbols" and "look" in processor.grounder_kwargs["function_words"]
    test = build_synthetic_dataset(SyntheticMNERConfig(train_size=320, validation_size=40, test_size=80))["test"]
    names = test.features["ner_tags"].feature.names
    posts = []
    for row in test:
        image = None
        if row["image"] is not None:
            image = str(tmp_path / f"{row['id']}.png")
            row["image"].save(image)
        posts.append({"words": row["tokens"], "image": image, "gold": [names[t] for t in row["ner_tags"]]})
    (tmp_path / "posts.json").write_text(json.dumps(posts))
    script = f"""
import json
from transformers import pipeline
from seqeval.metrics import f1_score
posts = json.load(open({str(tmp_path / "posts.json")!r}))
ner = pipeline(model={str(trained)!r}, trust_remote_code=True)
assert type(ner).__module__.startswith("transformers_modules."), type(ner).__module__
gold = [p["gold"] for p in posts]
scores = {{}}
for key, with_images in (("images", True), ("text", False)):
    outputs = ner([{{"words": p["words"], "image": p["image"] if with_images else None}} for p in posts],
                  batch_size=16, return_words=True)
    scores[key] = f1_score(gold, [[w["tag"] for w in o["words"]] for o in outputs])
print(json.dumps(scores))
"""
    done = run_without_package(script, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = json.loads(done.stdout.strip().splitlines()[-1])
    results = json.loads((trained / "all_results.json").read_text())
    assert scores["images"] == pytest.approx(results["test"]["f1"], abs=1e-9)
    assert scores["text"] == pytest.approx(results["test_without_images"]["f1"], abs=1e-9)


# --------------------------------------------------------------------------- checkpoints, processes, flags
def test_resume_refuses_a_checkpoint_of_another_run_unless_forced(tmp_path):
    args = ["--synthetic_sizes", "48", "16", "16", "--num_train_epochs", "1", "--checkpointing_steps", "1"]
    run(tmp_path, *args, "--per_device_train_batch_size", "16")
    with pytest.raises(SystemExit, match=r"per_device_train_batch_size 16 there, 8 now.*--force_resume"):
        run(tmp_path, *args, "--per_device_train_batch_size", "8", "--resume_from_checkpoint", "latest")
    results = run(
        tmp_path, *args, "--per_device_train_batch_size", "8", "--resume_from_checkpoint", "latest", "--force_resume"
    )
    # it went on from the checkpoint of step 3 (3 batches of 16 into the epoch) with the new batch size: 48 sentences
    # are 6 batches of 8, so 3 more steps to the end of the epoch
    assert results["global_step"] == 6


def test_checkpoints_total_limit_keeps_the_newest(tmp_path):
    run(
        tmp_path,
        "--synthetic_sizes",
        "80",
        "16",
        "16",
        "--num_train_epochs",
        "1",
        "--checkpointing_steps",
        "1",
        "--checkpoints_total_limit",
        "2",
    )
    steps = sorted(
        json.loads((p / "trainer_state.json").read_text())["global_step"] for p in (tmp_path / "checkpoints").iterdir()
    )
    assert steps == [4, 5]


def test_a_run_killed_with_sigkill_resumes_to_the_same_weights(tmp_path):
    """A real SIGKILL after the first checkpoint, then --resume_from_checkpoint latest: the final weights equal
    those of a run never interrupted."""
    import os
    import signal
    import subprocess
    import sys
    import time

    args = ["--synthetic_sizes", "96", "16", "16", "--num_train_epochs", "2", "--checkpointing_steps", "2"]
    killed = tmp_path / "killed"
    process = subprocess.Popen(
        [sys.executable, str(Path(train_umgf.__file__)), "--output_dir", str(killed), *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    deadline = time.monotonic() + 120
    while not list(killed.glob("checkpoints/*/trainer_state.json")) and process.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    assert process.wait() == -signal.SIGKILL
    assert not (killed / "all_results.json").exists()  # killed mid-run
    resumed = run(killed, *args, "--resume_from_checkpoint", "latest")
    whole = run(tmp_path / "whole", *args)
    last = max(resumed["global_step"], whole["global_step"])
    assert resumed["global_step"] == whole["global_step"] == last == 12
    a, b = (load_file(checkpoint_at(d, last) / "model.safetensors") for d in (killed, tmp_path / "whole"))
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=0, msg=name)
    assert resumed["test"] == whole["test"]


def test_two_cpu_processes_train_one_job(tmp_path):
    """torchrun with 2 processes on a CPU: one gloo process group, each process its shard of every batch, one set
    of outputs (on a CPU accelerate forms the group only with cpu=True)."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nproc_per_node",
            "2",
            str(Path(train_umgf.__file__)),
            "--output_dir",
            str(out),
            "--synthetic_sizes",
            "64",
            "16",
            "16",
            "--num_train_epochs",
            "1",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "DistributedType.MULTI_CPU  Backend: gloo" in done.stderr and "Num processes: 2" in done.stderr
    results = json.loads((out / "all_results.json").read_text())
    assert results["global_step"] == 2  # 64 sentences, batch 16 per process, 2 processes: 2 steps per epoch
    records = [json.loads(line) for line in (out / "predictions_test.jsonl").read_text().splitlines()]
    assert len(records) == 16 and len({r["id"] for r in records}) == 16  # every test sentence once, gathered


def test_run_ner_no_trainer_habits(tmp_path, monkeypatch):
    """A plain encoder as --model_name_or_path is the text encoder; a one-config dataset needs no config name;
    other column names come with --text_column_name / --label_column_name; --with_tracking, --num_warmup_steps."""
    import datasets
    from helpers import save_tiny_text_encoder

    import train_umgf as script
    from modeling_umgf.tools import training_args

    encoder = save_tiny_text_encoder(tmp_path / "bert")
    data = build_synthetic_dataset(SyntheticMNERConfig(train_size=24, validation_size=8, test_size=8))
    for split, part in data.items():
        part.rename_columns({"tokens": "words", "ner_tags": "tags"}).to_parquet(
            str(tmp_path / "dataset" / f"{split}.parquet")
        )
    from accelerate import PartialState

    PartialState(cpu=True)  # accelerate's logger needs its state
    args = script.parse_args(
        [
            "--model_name_or_path",
            str(encoder),
            "--dataset_name",
            str(tmp_path / "dataset"),
            "--text_column_name",
            "words",
            "--label_column_name",
            "tags",
            "--with_tracking",
            "--num_warmup_steps",
            "3",
            "--output_dir",
            str(tmp_path / "out"),
        ]
    )
    script.resolve_names(args)
    assert (args.model_name_or_path, args.text_model_name_or_path) == (None, str(encoder))
    assert args.report_to == "all" and args.num_warmup_steps == 3
    loaded = script.load_data(args, args.dataset_config_name, None)
    assert loaded["train"]["tokens"] == data["train"]["tokens"]
    assert loaded["test"]["ner_tags"] == data["test"]["ner_tags"]
    assert isinstance(loaded["train"].features["ner_tags"].feature, datasets.ClassLabel)
    monkeypatch.setattr(training_args.accelerate_imports, "is_swanlab_available", lambda: False)
    with pytest.raises(SystemExit):
        script.parse_args(["--report_to", "swanlab"])  # not installed: one line naming the package


@pytest.mark.assumes(
    "trackio",
    ">= 0.30 (locked in .ci/constraints.txt)",
    "accelerate's trackio tracker writing a local database offline",
)
def test_report_to_trackio_logs_the_run(tmp_path):
    """accelerate's trackio tracker, offline: the metrics land in trackio's local database (a fresh process, since
    trackio reads TRACKIO_DIR when it is imported)."""
    import os
    import sqlite3
    import subprocess
    import sys

    pytest.importorskip("trackio")
    command = [
        sys.executable,
        str(Path(train_umgf.__file__)),
        "--output_dir",
        str(tmp_path / "out"),
        "--synthetic_sizes",
        "32",
        "16",
        "16",
        "--num_train_epochs",
        "2",
        "--report_to",
        "trackio",
        "--logging_steps",
        "1",
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRACKIO_DIR": str(tmp_path / "trackio")}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=environment)
    assert done.returncode == 0, done.stderr[-3000:]
    [database] = (tmp_path / "trackio").glob("*.db")
    with sqlite3.connect(database) as connection:
        rows = connection.execute("SELECT metrics FROM metrics").fetchall()
    logged = [json.loads(row[0]) for row in rows]
    assert sum("train/loss" in metrics for metrics in logged) == 4  # 2 steps per epoch, logged every step
    assert sum("dev/f1" in metrics for metrics in logged) == 2


def test_push_to_hub_checks_the_repo_before_training(tmp_path, monkeypatch):
    import train_umgf as script

    def refuse(repo_id, **kwargs):
        raise RuntimeError(f"401 Unauthorized for {repo_id}")

    monkeypatch.setattr(script, "create_repo", refuse)
    trained = []
    monkeypatch.setattr(script, "load_splits", lambda *a, **k: trained.append(True))
    with pytest.raises(SystemExit, match="cannot create or reach the Hub repo me/umgf: 401 Unauthorized"):
        run(tmp_path, "--push_to_hub", "--hub_model_id", "me/umgf")
    assert not trained  # stopped before loading any data


# ------------------------------------------------------------------------- output folders, secrets, resumes
TINY = ["--synthetic_sizes", "24", "8", "8", "--num_train_epochs", "1"]


def test_the_hub_token_is_never_written_logged_or_tracked(tmp_path, monkeypatch, caplog, capsys):
    """The documented habit `--hub_token ... --with_tracking`, with checkpoints. The trackers get what
    `Accelerator.init_trackers` is given, written here the way tensorboard writes it
    (``<output_dir>/<tracker>/<run>/hparams.yml``): the token is in no file of the output folder, no log record and
    no output."""
    import yaml

    token = "hf_" + "FakeTokenThatMustNeverBeWritten1234"  # built here, so the source holds no token-shaped string
    out = tmp_path / "out"
    tracked = []

    def init_trackers(self, project_name, config=None, init_kwargs=None):
        tracked.append(config)
        (out / "tensorboard" / project_name).mkdir(parents=True)
        (out / "tensorboard" / project_name / "hparams.yml").write_text(yaml.safe_dump(config))

    monkeypatch.setattr(train_umgf.Accelerator, "init_trackers", init_trackers)
    caplog.set_level("DEBUG")
    run(out, *TINY, "--hub_token", token, "--with_tracking", "--checkpointing_steps", "1", "--logging_steps", "1")
    [config] = tracked
    assert config["learning_rate"] == 2e-3 and "hub_token" not in config  # the other arguments are tracked
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) > 20 and (out / "all_results.json").is_file() and list(out.glob("checkpoints/*/*"))
    assert [str(p) for p in files if token.encode() in p.read_bytes()] == []
    captured = capsys.readouterr()
    assert token not in caplog.text + captured.out + captured.err


def test_a_fresh_run_keeps_what_it_did_not_create(tmp_path):
    out = tmp_path / "out"
    foreign = out / "checkpoints" / "checkpoint_0"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("someone else's")
    (out / "checkpoints" / "checkpoint_final").mkdir()
    with pytest.raises(SystemExit, match=r"already holds a model or checkpoints.*--overwrite_output_dir"):
        run(out, *TINY, "--checkpointing_steps", "1")
    results = run(out, *TINY, "--checkpointing_steps", "1", "--checkpoints_total_limit", "1", "--overwrite_output_dir")
    assert results["global_step"] == 2  # 24 sentences in batches of 16
    assert (foreign / "notes.txt").read_text() == "someone else's" and (out / "checkpoints/checkpoint_final").is_dir()
    # its own checkpoints are numbered after the others and rotated among themselves: only the newest is left
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "checkpoint_0",
        "checkpoint_2",
        "checkpoint_final",
    ]
    # a checkpoint this script left incomplete (killed while saving) is removed by the next run; others' are not
    shutil.rmtree(out / "checkpoints" / "checkpoint_2")
    (out / "checkpoints" / "checkpoint_2").mkdir()
    (out / "checkpoints" / "checkpoint_2" / "model.safetensors").write_bytes(b"half")
    run(out, *TINY, "--overwrite_output_dir")
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["checkpoint_0", "checkpoint_final"]


def test_a_link_out_of_the_output_folder_is_never_followed(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "checkpoint_0").mkdir(parents=True)
    (elsewhere / "checkpoint_0" / "precious.txt").write_text("keep")
    out = tmp_path / "out"
    out.mkdir()
    (out / "checkpoints").symlink_to(elsewhere, target_is_directory=True)
    with pytest.raises(SystemExit, match=r"symbolic links \['checkpoints'\].*never follows a link"):
        run(out, *TINY, "--checkpointing_steps", "1", "--overwrite_output_dir")
    assert [p.name for p in elsewhere.rglob("*")] == ["checkpoint_0", "precious.txt"]
    assert sorted(p.name for p in out.iterdir()) == [".umgf-run.lock", "checkpoints"]  # nothing written
    # a link deeper down, where the best epoch's weights go
    (out / "checkpoints").unlink()
    (out / "best_model").mkdir()
    (out / "best_model" / "model.safetensors").symlink_to(elsewhere / "checkpoint_0" / "precious.txt")
    with pytest.raises(SystemExit, match=r"symbolic links \['best_model/model.safetensors'\]"):
        run(out, *TINY, "--overwrite_output_dir")
    assert (elsewhere / "checkpoint_0" / "precious.txt").read_text() == "keep"


def test_an_interrupted_final_save_leaves_the_previous_model_whole(tmp_path, monkeypatch):
    out = tmp_path / "out"
    run(out, *TINY)
    names = ("config.json", "model.safetensors", "all_results.json", "predictions_test.jsonl", "README.md")
    saved = {name: (out / name).read_bytes() for name in names}

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt  # Ctrl-C while the new model card is rendered: the new weights are already written

    monkeypatch.setattr(train_umgf.hub, "write_model_card", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run(out, *TINY, "--seed", "7", "--overwrite_output_dir")
    assert {name: (out / name).read_bytes() for name in saved} == saved
    assert not list(out.glob(".saving-*"))  # the staging folder is gone
    monkeypatch.undo()
    run(out, *TINY, "--seed", "7", "--overwrite_output_dir")
    assert (out / "model.safetensors").read_bytes() != saved["model.safetensors"]  # a save that completes replaces


def test_one_run_per_output_folder_at_a_time(tmp_path):
    from modeling_umgf.tools.run_folder import LOCK_NAME, lock_run_folder

    out = tmp_path / "out"
    out.mkdir()
    with lock_run_folder(out), pytest.raises(SystemExit, match=f"another run is writing into {out} .*{LOCK_NAME}"):
        run(out, *TINY)  # another run holds the folder
    assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # it wrote nothing
    run(out, *TINY)  # released: the folder is usable again
    assert (out / "model.safetensors").is_file()


def test_resume_refuses_a_changed_learning_rate_unless_forced(tmp_path, caplog):
    args = [*TINY, "--checkpointing_steps", "1"]
    run(tmp_path, *args, "--learning_rate", "1e-3")
    with pytest.raises(SystemExit, match=r"learning_rate 0.001 there, 0.5 now.*--force_resume"):
        run(tmp_path, *args, "--learning_rate", "0.5", "--resume_from_checkpoint", "latest")
    # arguments that do not change what is trained may differ
    run(tmp_path, *args, "--learning_rate", "1e-3", "--resume_from_checkpoint", "latest", "--logging_steps", "3")
    run(tmp_path, *args, "--learning_rate", "0.5", "--resume_from_checkpoint", "latest", "--force_resume")
    assert "with changed settings (--force_resume)" in caplog.text and "learning rates included" in caplog.text


# ------------------------------------------------------------------------------- what a run says and writes
def test_all_results_has_run_ner_no_trainers_flat_keys(trained):
    from seqeval.metrics import accuracy_score

    results = json.loads((trained / "all_results.json").read_text())
    records = [json.loads(line) for line in (trained / "predictions_test.jsonl").read_text().splitlines()]
    gold, pred = [r["gold"] for r in records], [r["pred"] for r in records]
    assert results["test_f1"] == pytest.approx(f1_score(gold, pred)) == pytest.approx(results["test"]["f1"])
    assert results["test_precision"] == results["test"]["precision"]
    assert results["test_recall"] == results["test"]["recall"]
    assert results["test_accuracy"] == pytest.approx(accuracy_score(gold, pred))
    assert results["eval_f1"] == results["dev_f1"] and 0 <= results["eval_accuracy"] <= 1
    assert {"eval_precision", "eval_recall"} <= set(results)


def test_a_run_leaves_no_second_copy_and_its_card_tells_what_happened(trained):
    from huggingface_hub import ModelCard

    assert not (trained / BEST_DIR).exists()  # the folder holds the best epoch's model itself
    results = json.loads((trained / "all_results.json").read_text())
    assert results["mode"] == "train" and results["train_samples"] == 320 and results["num_train_epochs"] == 3
    card = ModelCard.load(trained / "README.md")
    examples = json.loads((trained / "examples" / "examples.json").read_text())
    assert [w["text"] for w in card.data.widget] == [e["text"] for e in examples]  # its own posts
    assert "Trained on the synthetic task, 3 epochs." in card.text
    assert "Text encoder: `bert (64-d), trained from scratch`" in card.text


def test_an_evaluation_only_run_reads_the_model_and_trains_and_copies_nothing(trained, tmp_path, capsys, monkeypatch):
    pushed = {}
    monkeypatch.setattr(train_umgf, "create_repo", lambda *a, **k: None)
    monkeypatch.setattr(train_umgf.hub, "push_to_hub", lambda *a, **k: pushed.update(k) or "url")
    out = tmp_path / "eval"
    argv = ["--model_name_or_path", str(trained), "--num_train_epochs", "0", "--preset", "bert"]
    hub_args = ["--push_to_hub", "--hub_model_id", "me/umgf-eval", "--hub_dataset_id", "me/synthetic-mner"]
    results = run(out, *argv, "--synthetic_sizes", "320", "40", "80", *hub_args)
    trained_results = json.loads((trained / "all_results.json").read_text())
    assert results["mode"] == "evaluate" and results["preset"] == "paper"  # the model's, not --preset's
    assert results["test"] == trained_results["test"]  # the same model on the same test split
    assert not {"train_seconds", "best_epoch", "global_step"} & set(results)
    assert sorted(p.name for p in out.iterdir() if p.name not in ("feature_cache", ".umgf-run.lock")) == [
        "all_results.json",
        "predictions_test.jsonl",
        "predictions_test_without_images.jsonl",
    ]
    assert pushed["dataset_id"] == "me/synthetic-mner"  # --hub_dataset_id reaches the pushed card
    printed = capsys.readouterr().out
    assert "model evaluated as it is" in printed and "best epoch" not in printed
    assert f"umgf-predict --model {trained}" in printed


def test_a_model_that_tags_nothing_is_reported_loudly(trained, tmp_path, capsys):
    silent = tmp_path / "silent"
    model = UMGFForTokenClassification.from_pretrained(trained)
    with torch.no_grad():
        model.classifier.bias[model.config.label2id["O"]] = 1e4  # every word O
    model.save_pretrained(silent)
    UMGFProcessor.from_pretrained(trained).save_pretrained(silent)
    results = run(
        tmp_path / "eval",
        "--model_name_or_path",
        str(silent),
        "--num_train_epochs",
        "0",
        "--synthetic_sizes",
        "320",
        "40",
        "80",
    )
    assert results["test"]["f1"] == 0 and "predicts no entity at all" in results["warnings"][0]
    assert "WARNING: the model predicts no entity at all in the 80 test sentences" in capsys.readouterr().out


def test_data_without_images_is_said_and_the_text_only_preset_can_be_chosen(tmp_path, caplog):
    from accelerate import PartialState

    PartialState(cpu=True)  # accelerate's logger needs its state
    fixtures = Path(__file__).parent / "fixtures" / "twitter"
    encoder = save_tiny_text_encoder(tmp_path / "bert")
    base = ["--umt_data_dir", str(fixtures), "--dataset_config_name", "twitter2017", "--output_dir", str(tmp_path)]
    base += ["--text_model_name_or_path", str(encoder), "--vision_backbone", "test_resnet"]
    args = train_umgf.parse_args(base)
    splits = dict(train_umgf.load_data(args, args.dataset_config_name, None))
    with caplog.at_level("WARNING"):
        assert train_umgf.check_images(args, splits) is False
        train_umgf.build_model(args, ["O", "B-PER", "I-PER"], images=False)
    said = " ".join(r.getMessage() for r in caplog.records)
    assert "the data has no images" in said and "--preset text-only" in said
    assert "--vision_weights" not in said  # no advice about weights for images there are none of
    assert args.preset == "paper"
    chosen = train_umgf.parse_args([*base, "--if_no_images", "text-only"])
    train_umgf.check_images(chosen, splits)
    assert chosen.preset == "text-only"
    model, _ = train_umgf.build_model(chosen, ["O", "B-PER", "I-PER"], images=False)
    assert model.config.use_visual is False


def test_the_closing_summary_names_every_output_and_a_ready_command(tmp_path):
    args = train_umgf.parse_args(["--output_dir", str(tmp_path / "my run")])
    written = [tmp_path / "my run" / "all_results.json", tmp_path / "my run" / "predictions_test.jsonl"]
    summary = train_umgf.closing_summary(args, {"mode": "train", "warnings": ["no entity"]}, written, "Hi Bob !")
    assert f"model, processor, pipeline code and model card: {tmp_path / 'my run'}" in summary
    assert all(f"{path.name}: {path}" in summary for path in written)
    assert f"umgf-predict --model '{tmp_path / 'my run'}' --text 'Hi Bob !'" in summary
    assert "WARNING: no entity" in summary
