"""Training-step time, inference throughput and peak memory of UMGF at paper shapes, on CPU.

Sub-commands:

- ``run --mode train|infer [options]``: measure one configuration in this process and print one JSON line.
- ``suite [--only NAME ...]``: measure the named configurations (``SUITE``), each in a fresh process (so
  each peak RSS is its own), save ``benchmarks/results/speed.json`` and print a table.

Shapes: batch 16, 4 object crops of 224x224 per tweet through ResNet-152 (or 4 cached 2048-d features),
bert-base-cased shape, Adam (lr 1e-4), random weights, torch threads fixed to 2. Tweet lengths are
real Twitter-2017 training tweets (see ``bench_common``) or the reference shape of the authors' code (32 sub-tokens
padded to 128, "as their code does").

Example: ``python benchmarks/speed/bench_speed.py suite --only infer-optimised train-cached``
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import (
    RESULTS_DIR,
    build_model,
    fixed_tweets,
    gemm_gflops,
    length_stats,
    machine,
    make_batch,
    median_time,
    peak_rss_gib,
    run_isolated,
    sample_batches,
    save_results,
    set_threads,
    start_memory_guard,
    twitter_tweets,
)

# isort: split

import torch

#: The measured configurations, most important first. "reference" rows run the way the authors' code does
#: (release preset, every tweet padded to 128, NCHW tensors, inference under no_grad). Rows with a batch
#: of 64 crops through ResNet-152 take minutes each on 2 cores, so they run once (no warm-up).
TRAIN, INFER = ["--mode", "train"], ["--mode", "infer"]
PAPER = ["--preset", "paper", "--lengths", "twitter2017"]
REFERENCE = ["--preset", "release", "--lengths", "fixed32", "--pad-to", "128", "--no-text-packing"]
#: Allocator setting of the lean feature-cache row: large blocks are mmapped, so freed ones go back to the OS.
LEAN_MALLOC = {"MALLOC_MMAP_THRESHOLD_": "131072"}
SUITE: dict[str, tuple[list[str], dict[str, str] | None]] = {
    "infer-optimised": (INFER + PAPER + ["--channels-last", "--warmup", "0", "--repeats", "2"], None),
    # Compiling takes about a minute: the warm-up batch pays it (its time is in "warmup_seconds").
    "infer-optimised-compiled": (INFER + PAPER + ["--optimize", "--warmup", "1", "--repeats", "2"], None),
    # Two of the four crops repeat the other two (e.g. a noun phrase and "person" grounded to the same box):
    # an illustration of the de-duplication, at a made-up rate (no real images here to count real repeats).
    "infer-optimised-2-distinct-crops": (
        INFER + PAPER + ["--channels-last", "--distinct-crops", "2", "--warmup", "0", "--repeats", "2"],
        None,
    ),
    "infer-reference": (INFER + REFERENCE + ["--grad-mode", "no_grad", "--warmup", "0", "--repeats", "2"], None),
    "train-finetune-checkpointed": (
        TRAIN + PAPER + ["--channels-last", "--grad-checkpointing", "--adam-fused", "--warmup", "0", "--repeats", "1"],
        None,
    ),
    "train-finetune-reference": (
        TRAIN + REFERENCE + ["--warmup", "0", "--repeats", "1", "--memory-guard-gib", "19.5"],
        None,
    ),
    "infer-cached": (INFER + PAPER + ["--features", "--repeats", "5"], None),
    "train-cached": (TRAIN + PAPER + ["--features", "--repeats", "3"], None),
    "train-cached-padded": (TRAIN + PAPER + ["--features", "--no-text-packing", "--repeats", "3"], None),
    "train-cached-lean": (
        TRAIN + PAPER + ["--features", "--drop-backbone", "--adam-fused", "--repeats", "3"],
        LEAN_MALLOC,
    ),
    "train-cached-reference-shapes": (TRAIN + REFERENCE + ["--features", "--repeats", "3"], None),
    "infer-small-fp32": (INFER + PAPER + ["--channels-last", "--batch-size", "2", "--repeats", "3"], None),
    "infer-small-bf16": (INFER + PAPER + ["--channels-last", "--bf16", "--batch-size", "2", "--repeats", "2"], None),
    # One optimisation at a time, on 2 tweets (8 crops), to separate their effects.
    "infer-small-nchw": (INFER + PAPER + ["--batch-size", "2", "--repeats", "3"], None),
    "infer-small-no-grad": (
        INFER + PAPER + ["--channels-last", "--grad-mode", "no_grad", "--batch-size", "2", "--repeats", "3"],
        None,
    ),
    "infer-small-reference": (
        INFER + REFERENCE + ["--grad-mode", "no_grad", "--batch-size", "2", "--repeats", "3"],
        None,
    ),
    "train-finetune-optimised": (
        TRAIN
        + PAPER
        + ["--channels-last", "--adam-fused", "--warmup", "0", "--repeats", "1", "--memory-guard-gib", "19.5"],
        None,
    ),
}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="measure one configuration in this process")
    run.add_argument("--mode", choices=["train", "infer"], required=True)
    run.add_argument("--preset", default="paper")
    run.add_argument("--lengths", choices=["twitter2017", "fixed32"], default="twitter2017")
    run.add_argument("--pad-to", type=int, default=None, help="pad every tweet to this length (default: dynamic)")
    run.add_argument("--batch-size", type=int, default=16)
    run.add_argument("--objects", type=int, default=4)
    run.add_argument(
        "--distinct-crops",
        type=int,
        default=None,
        help="only this many distinct crops per tweet, the others repeats (identical boxes)",
    )
    run.add_argument("--features", action="store_true", help="cached object features; frozen backbone in training")
    run.add_argument(
        "--drop-backbone",
        action="store_true",
        help="with --features: release the (unused) backbone's weights before training",
    )
    run.add_argument(
        "--no-text-packing", action="store_true", help="encode the padded batch (config.text_packing=False)"
    )
    run.add_argument("--channels-last", action="store_true", help="backbone weights and crops in channels_last")
    run.add_argument(
        "--optimize",
        action="store_true",
        help="model.optimize_for_inference(): channels-last backbone compiled with weight freezing",
    )
    run.add_argument("--grad-checkpointing", action="store_true", help="activation checkpointing (BERT, fusion, timm)")
    run.add_argument("--grad-mode", choices=["no_grad", "inference_mode"], default="inference_mode")
    run.add_argument("--bf16", action="store_true", help="bfloat16 autocast")
    run.add_argument(
        "--adam-fused", action="store_true", help="torch's fused Adam kernel (no per-parameter temporaries)"
    )
    run.add_argument("--repeats", type=int, default=3)
    run.add_argument("--warmup", type=int, default=1)
    run.add_argument("--threads", type=int, default=2)
    run.add_argument("--memory-guard-gib", type=float, default=None)
    suite = sub.add_parser("suite", help="measure the SUITE configurations, each in a fresh process")
    suite.add_argument("--only", nargs="*", default=None, choices=sorted(SUITE))
    return parser.parse_args(argv)


def measure(args: argparse.Namespace) -> dict[str, Any]:
    set_threads(args.threads)
    if args.memory_guard_gib:
        start_memory_guard(args.memory_guard_gib)
    gflops_before = gemm_gflops()
    model = build_model(args.preset, text_packing=not args.no_text_packing)
    if args.channels_last:
        model.umgf.vision_backbone.to(memory_format=torch.channels_last)
    if args.optimize:
        model.optimize_for_inference()
    if args.grad_checkpointing:
        (getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable)()
    if args.lengths == "twitter2017":
        pool, counted_with = twitter_tweets()
    else:
        pool, counted_with = fixed_tweets(args.batch_size), "fixed 32 sub-tokens"
    num_batches = args.warmup + args.repeats
    batches = [
        make_batch(
            tweets,
            pad_to=args.pad_to,
            objects=args.objects,
            features=args.features,
            seed=i,
            labels=args.mode == "train",
            distinct_crops=args.distinct_crops,
        )
        for i, tweets in enumerate(sample_batches(pool, args.batch_size, num_batches))
    ]
    if args.channels_last:
        for batch in batches:
            if "pixel_values" in batch:
                pv = batch["pixel_values"]
                batch["pixel_values"] = (
                    pv.flatten(0, 1).contiguous(memory_format=torch.channels_last).unflatten(0, pv.shape[:2])
                )
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if args.bf16 else contextlib.nullcontext()
    rss_after_build = peak_rss_gib()
    it = iter(batches)

    if args.mode == "train":
        model.train()
        if args.features:
            model.umgf.vision_backbone.requires_grad_(False)  # frozen backbone: its features come from the cache
        if args.drop_backbone:
            model.umgf.vision_backbone = None  # never called when object_features are given
        optimizer = torch.optim.Adam(
            [p for p in model.parameters() if p.requires_grad], lr=1e-4, fused=True if args.adam_fused else None
        )

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with autocast:
                loss = model(**next(it)).loss
            loss.backward()
            optimizer.step()

        fn = step
    else:
        model.eval()
        grad_mode = torch.inference_mode if args.grad_mode == "inference_mode" else torch.no_grad

        def infer() -> None:
            with grad_mode(), autocast:
                model(**next(it))

        fn = infer
    seconds, times, cpu_times, warmup_times = median_time(fn, repeats=args.repeats, warmup=args.warmup)
    tokens = [int(b["attention_mask"].sum()) for b in batches]
    return {
        "mode": args.mode,
        "options": {k: v for k, v in vars(args).items() if k not in ("command",)},
        "seconds_per_batch": round(seconds, 3),
        "times": [round(t, 3) for t in times],
        "warmup_seconds": [round(t, 3) for t in warmup_times],
        "cpu_seconds": [round(t, 3) for t in cpu_times],
        "tweets_per_second": round(args.batch_size / seconds, 3),
        "peak_rss_gib": round(peak_rss_gib(), 2),
        "rss_after_build_gib": round(rss_after_build, 2),
        "gemm_gflops_before_after": [gflops_before, gemm_gflops()],
        "padded_length": [int(b["input_ids"].shape[1]) for b in batches],
        "real_subtokens_per_tweet": round(sum(tokens) / (len(tokens) * args.batch_size), 1),
        "subtokens_counted_with": counted_with,
        "machine": machine(),
    }


def main(argv: list[str]) -> None:
    args = parse(argv)
    if args.command == "run":
        result = measure(args)
        print(json.dumps(result), flush=True)
        return
    script = Path(__file__)
    names = args.only or list(SUITE)
    tweets, how = twitter_tweets()
    payload: dict[str, Any] = {
        "lengths": {"twitter2017_train": length_stats(tweets), "counted_with": how},
        "results": {},
    }
    path = RESULTS_DIR / "speed.json"
    if path.exists():  # keep the rows of earlier runs that this one does not measure again
        payload["results"] = json.loads(path.read_text()).get("results", {})
    for name in names:
        options, env = SUITE[name]
        try:
            row = run_isolated(script, ["run", *options], timeout=1800, env=env)
        except Exception as error:  # one failed configuration must not lose the others
            row = {"error": str(error)[-2000:]}
        payload["results"][name] = row
        save_results("speed", payload)  # after every row: a long suite may be stopped
        print(
            f"{name:32s} {row.get('seconds_per_batch', '-'):>9} s/batch  {row.get('tweets_per_second', '-'):>8} "
            f"tweets/s  cpu {row.get('cpu_seconds', '-')} s  peak {row.get('peak_rss_gib', '-')} GiB  "
            f"load {row.get('loadavg_before', '-')}  {row.get('aborted', row.get('error', ''))[:300]}",
            flush=True,
        )
    done = [n for n in names if "seconds_per_batch" in payload["results"][n]]
    print(f"SUMMARY bench_speed: {len(done)}/{len(names)} configurations measured -> {path}")


if __name__ == "__main__":
    main(sys.argv[1:])
