"""Agreement of each inference precision with fp32 at the same weights (modeling_umgf/precision.py).

    python benchmarks/experiments/bench_precision.py words --name main --model outputs/umgf
    python benchmarks/experiments/bench_precision.py words --name minilm-twitter2017 --model DIR -- \\
        --umt_data_dir ../shared/data --dataset_config_name twitter2017
    python benchmarks/experiments/bench_precision.py detector --images 16

``words``: the trained UMGF model ``--model`` is evaluated by ``train_umgf.py --num_train_epochs 0
--inference_precision P`` (the test split the way training tests it; the arguments after ``--`` name the data) once per
precision, each in its own process; then, against fp32, the share of the test words tagged the same, the share of
sentences tagged the same, and the test F1 difference (with and without images where the task has them).
``detector``: the pipeline benchmark's Grounding DINO (random weights at grounding-dino-tiny's shapes,
``bench_pipeline.py prepare``) grounds the benchmark's posts in fp32, under bfloat16 autocast (as the pipeline runs
it for ``precision="bf16"``) and with its linear layers quantised to int8 (measured only: the pipeline keeps the
detector in float32 for int8); against fp32: the share of fp32's boxes found again for the same phrase with
IoU >= 0.5, mean IoU, images with identical boxes, and seconds per image.

One timer (``bench_common.timed``: wall and CPU seconds), one result file: ``benchmarks/results/precision.json``
(each sub-command replaces its own entry). On a CPU without bfloat16 units (no AVX512-BF16 / AMX) PyTorch emulates
bfloat16, so its agreement is what native hardware gives but its time is not.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import REPO, RESULTS_DIR, machine, set_threads, timed, today
from benchmarks.speed.bench_pipeline import (
    BOX_THRESHOLD,
    DETECTOR_DIR,
    MAX_OBJECTS,
    agreement,
    prepare,
    read_posts,
    same_boxes,
)

# isort: split

import torch

WORK = REPO / "outputs" / "bench_precision"
PRECISIONS = ("fp32", "bf16", "int8")


def cpu_flags() -> list[str]:
    """The CPU's vector and matrix extensions that decide which precision has hardware behind it."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                wanted = ("avx", "fma", "amx", "vnni", "f16c")
                return sorted(flag for flag in line.split(":", 1)[1].split() if flag.startswith(wanted))
    except OSError:
        pass
    return []


def read_predictions(folder: Path, key: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / f"predictions_{key}.jsonl").read_text().splitlines()]


def word_agreement(reference: list[dict[str, Any]], other: list[dict[str, Any]]) -> dict[str, Any]:
    """Share of words and of sentences tagged the same (records of the same test split, by sample id)."""
    by_id = {record["id"]: record["pred"] for record in other}
    words = same_words = same_sentences = 0
    for record in reference:
        pred = by_id[record["id"]]
        words += len(record["pred"])
        same_words += sum(a == b for a, b in zip(record["pred"], pred))
        same_sentences += record["pred"] == pred
    return {
        "words": words,
        "words_differing": words - same_words,
        "share_of_words_same": round(same_words / words, 5),
        "share_of_sentences_same": round(same_sentences / len(reference), 5),
    }


def measure_words(args: argparse.Namespace) -> dict[str, Any]:
    """``words``: one evaluation per precision, then the agreement of each with fp32."""
    runs: dict[str, Any] = {}
    for precision in PRECISIONS:
        output = WORK / f"{args.name}_{precision}"
        command = [sys.executable, str(REPO / "train_umgf.py"), "--model_name_or_path", str(args.model)]
        command += ["--num_train_epochs", "0", "--inference_precision", precision, "--output_dir", str(output)]
        command += args.train_args
        done, wall, _ = timed(
            lambda command=command: subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=os.environ)
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
        results = json.loads((output / "all_results.json").read_text())
        runs[precision] = {"folder": output, "results": results, "seconds": round(wall, 1)}
        print(f"{args.name} {precision}: test F1 {results['test']['f1']:.4f} ({wall:.0f} s)", flush=True)
    splits = [key for key in ("test", "test_without_images") if key in runs["fp32"]["results"]]
    rows: dict[str, Any] = {}
    for precision, run in runs.items():
        row: dict[str, Any] = {
            "resolved_precision": run["results"].get("inference_precision"),
            "evaluation_run_seconds": run["seconds"],
        }
        for key in splits:
            reference = read_predictions(runs["fp32"]["folder"], key)
            row[key] = {
                "f1": round(100 * run["results"][key]["f1"], 2),
                "f1_minus_fp32": round(100 * (run["results"][key]["f1"] - runs["fp32"]["results"][key]["f1"]), 2),
                **word_agreement(reference, read_predictions(run["folder"], key)),
            }
        rows[precision] = row
    return {"model": str(args.model), "data_arguments": args.train_args, "precisions": rows}


def measure_detector(args: argparse.Namespace) -> dict[str, Any]:
    """``detector``: the benchmark detector's boxes in fp32, bf16 autocast and int8, on the same posts."""
    from PIL import Image

    from modeling_umgf import UMGFProcessor
    from modeling_umgf.detector_grounding import ZeroShotDetectorGrounder, _load_detector
    from modeling_umgf.precision import autocast, quantize_linear_int8

    prepare()
    set_threads()
    posts = read_posts(args.images)
    images = [Image.open(post["image"]).convert("RGB") for post in posts]
    sentences = [UMGFProcessor.split_words(post["text"]) for post in posts]
    ids = [post["id"] for post in posts]
    settings = {"detector": str(DETECTOR_DIR), "box_threshold": BOX_THRESHOLD, "max_objects": MAX_OBJECTS}
    grounder = ZeroShotDetectorGrounder(device="cpu", **settings)
    _, detector = _load_detector(str(DETECTOR_DIR), "cpu")
    found: dict[str, Any] = {}
    times: dict[str, list[tuple[float, float]]] = {}
    with torch.inference_mode():
        grounder.ground(images[:1], sentences[:1], ids[:1])  # warm-up (loading)
        for precision in PRECISIONS:
            if precision == "int8":
                linear = quantize_linear_int8(detector)  # in place: the last variant
            for _ in range(args.repeats):
                with autocast(precision, "cpu"):
                    found[precision], wall, cpu = timed(lambda: grounder.ground(images, sentences, ids))
                times.setdefault(precision, []).append((wall / len(images), cpu / len(images)))
    rows = {}
    for precision in PRECISIONS:
        median = statistics.median(w for w, _ in times[precision])
        rows[precision] = {
            "seconds_per_image": [round(w, 2) for w, _ in times[precision]],
            "cpu_seconds_per_image": [round(c, 2) for _, c in times[precision]],
            "median_seconds_per_image": round(median, 2),
            "speed_up_over_fp32": round(statistics.median(w for w, _ in times["fp32"]) / median, 2),
            "images_with_the_same_boxes_as_fp32": same_boxes(found["fp32"], found[precision], tolerance=1.0),
            **agreement(found["fp32"], found[precision]),
        }
    return {"images": len(images), "int8_linear_layers": linear, "precisions": rows}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    words = sub.add_parser("words", help="word predictions and test F1 of each precision against fp32")
    words.add_argument("--name", required=True, help="the entry of the result file, e.g. main")
    words.add_argument("--model", type=Path, required=True, help="a trained UMGF folder (train_umgf.py output)")
    words.add_argument("train_args", nargs=argparse.REMAINDER, help="after --: train_umgf.py's data arguments")
    detector = sub.add_parser("detector", help="the benchmark detector's boxes of each precision against fp32")
    detector.add_argument("--images", type=int, default=16)
    detector.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    if args.command == "words":
        args.train_args = [a for a in args.train_args if a != "--"]
        name, row = args.name, measure_words(args)
    else:
        name, row = "detector", measure_detector(args)
    path = RESULTS_DIR / "precision.json"
    payload = json.loads(path.read_text()) if path.exists() else {}
    machine_row = {**machine(), "cpu_flags": cpu_flags()}
    payload[name] = {"date": today(), **row, "machine": machine_row, "loadavg": os.getloadavg()}
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
    print(json.dumps(row, indent=1, default=str))
    print(f"SUMMARY bench_precision {name} -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
