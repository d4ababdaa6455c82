"""The model alone, side by side with the authors' code: their MMNerModel against umgf's paper preset, same work.

    python benchmarks/speed/bench_vs_authors.py --authors_code DIR [--repeats 2] [--train-repeats 1]

``DIR`` as for ``check_release_equivalence.py`` (their ``ddp_mmner.py``, ``config.py``, ``metric.py``,
``model/utils.py``; ``pytorch-crf`` installed). Work: 16 tweets of 32 sub-tokens (30 one-piece words between
[CLS] and [SEP]), 4 crops of 224x224 per tweet, BERT-base-cased and ResNet-152 shapes, random weights, torch
threads fixed to 2, in one process, alternating theirs and ours. Theirs runs the way their scripts run it: every
tweet padded to 128, inference (their ``predict``) under ``no_grad``, a training step of ``log_likelihood`` +
backward + Adam. Ours: dynamic padding, channels-last backbone, ``inference_mode``; a training step of the loss +
backward + the same Adam (torch's default implementation, as ``train_umgf.py --optimizer adam`` builds it). Prints the
medians and, last, the speed-up of inference.

``--precision fp32 bf16 int8`` adds a row of our inference per precision (`set_inference_precision` on a copy of the
same weights), with the share of word predictions equal to our fp32 ones. ``--memory`` measures the training step
side by side in fresh processes (peak RSS is per process): theirs, ours (the default: fine-tuned backbone, no
checkpointing) and ours with ``gradient_checkpointing_enable()`` (BERT, fusion layers and the backbone), each a
warm-up step (Adam's state is allocated there) and ``--train-repeats`` timed steps; it reports the peak RSS of each
process and, for the roofline, the FLOPs of one inference batch of ours (``torch.utils.flop_counter`` on one tweet,
times 16).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import (
    machine,
    median_time,
    peak_rss_gib,
    run_isolated,
    save_results,
    set_threads,
    start_memory_guard,
)

# isort: split

import torch

from modeling_umgf import LABELS, UMGFConfig, UMGFForTokenClassification
from modeling_umgf.precision import inference_copy

TWEETS, WORDS, CROPS = 16, 30, 4


def authors_model(code: Path, seed: int):
    """Their MMNerModel at random weights (BERT-base-cased and ResNet-152 shapes), and their module."""
    import torchvision
    from transformers import BertConfig, BertModel

    sys.path.insert(0, str(code))
    module = importlib.import_module("ddp_mmner")
    module.BertModel = SimpleNamespace(from_pretrained=lambda name: BertModel(BertConfig(vocab_size=28996)))
    module.models = SimpleNamespace(resnet152=lambda pretrained=True: torchvision.models.resnet152(weights=None))
    torch.manual_seed(seed)
    model = module.MMNerModel().eval()
    with torch.no_grad():  # random, non-trivial batch-norm statistics (a fresh ResNet's are 0 / 1)
        for layer in model.resnet.modules():
            if isinstance(layer, torch.nn.BatchNorm2d):
                layer.running_mean.uniform_(-0.1, 0.1)
                layer.running_var.uniform_(0.5, 1.5)
    return model, module


def theirs_inputs(batch: list[dict], tag2idx: dict[str, int], max_len: int, max_node: int, seed: int) -> dict:
    """Their dataset's tensors: [CLS] + pieces + [SEP] padded to max_len, CLS / X / SEP token tags, the matrix
    linking every real token (CLS and SEP too) to every crop, and the crops."""
    ids, masks, labels, matrices = [], [], [], []
    for tweet in batch:
        tokens, tags = [101], [tag2idx["CLS"]]
        for pieces, tag in zip(tweet["pieces"], tweet["tags"]):
            tokens += pieces
            tags += [tag2idx[tag]] + [tag2idx["X"]] * (len(pieces) - 1)
        tokens, tags = tokens[: max_len - 1] + [102], tags[: max_len - 1] + [tag2idx["SEP"]]
        matrix = torch.zeros(max_len, max_node)
        matrix[: len(tokens)] = 1.0
        pad = max_len - len(tokens)
        ids.append(tokens + [0] * pad)
        masks.append([1] * len(tokens) + [0] * pad)
        labels.append(tags + [0] * pad)
        matrices.append(matrix)
    g = torch.Generator().manual_seed(seed + 1)
    return {
        "x": {
            "input_ids": torch.tensor(ids),
            "token_type_ids": torch.zeros(len(batch), max_len, dtype=torch.long),
            "attention_mask": torch.tensor(masks, dtype=torch.uint8),
        },
        "b_img": torch.randn(len(batch) * max_node, 3, 224, 224, generator=g),
        "b_matrix": torch.stack(matrices),
        "y": torch.tensor(labels),
    }


def the_work(tag2idx: dict[str, int], tweets: int = TWEETS) -> list[dict]:
    """16 tweets of 30 one-piece words with random tags (32 sub-tokens with [CLS] and [SEP])."""
    g = torch.Generator().manual_seed(0)
    word_tags = [t for t in tag2idx if t[:2] in ("B-", "I-")] + ["O"]
    return [
        {
            "pieces": [[int(i)] for i in torch.randint(1000, 28996, (WORDS,), generator=g)],
            "tags": [word_tags[int(i)] for i in torch.randint(0, len(word_tags), (WORDS,), generator=g)],
        }
        for _ in range(tweets)
    ]


def ours_inputs(theirs: dict) -> dict[str, torch.Tensor]:
    tweets = len(theirs["x"]["input_ids"])
    """The same tweets and crops for umgf: cut to the longest tweet, word ids, word labels, crops [B, O, ...]."""
    length = WORDS + 2
    word_ids = torch.full((tweets, length), -1)
    word_ids[:, 1 : WORDS + 1] = torch.arange(WORDS)
    return {
        "input_ids": theirs["x"]["input_ids"][:, :length],
        "attention_mask": theirs["x"]["attention_mask"][:, :length].long(),
        "word_ids": word_ids,
        "pixel_values": theirs["b_img"].view(tweets, CROPS, 3, 224, 224),
        "object_mask": torch.ones(tweets, CROPS, dtype=torch.long),
        "labels": torch.randint(0, len(LABELS), (tweets, WORDS), generator=torch.Generator().manual_seed(1)),
    }


def build_both(authors_code: Path, tweets: int = TWEETS) -> tuple[Any, Any, dict, UMGFForTokenClassification, dict]:
    """Their model and module, their batch, our paper-preset model (channels-last backbone) and our inputs."""
    theirs, module = authors_model(authors_code, seed=0)
    work = the_work(module.tag2idx, tweets)
    batch = theirs_inputs(work, module.tag2idx, module.max_len, module.max_node, seed=0)
    torch.manual_seed(0)
    ours = UMGFForTokenClassification(UMGFConfig.from_preset("paper")).eval()
    ours.umgf.vision_backbone.to(memory_format=torch.channels_last)  # the model hands it NHWC crops
    return theirs, module, batch, ours, ours_inputs(batch)


def training_steps(name: str, authors_code: Path, repeats: int, tweets: int, guard_gib: float) -> dict[str, Any]:
    """One process of ``--memory``: a warm-up step and ``repeats`` timed training steps of one model (aborted,
    saying so, above ``guard_gib`` of RSS: the machine is shared)."""
    start_memory_guard(guard_gib)
    theirs, _, batch, ours, inputs = build_both(authors_code, tweets)
    x, img, matrix, y = batch["x"], batch["b_img"], batch["b_matrix"], batch["y"]
    model = theirs if name == "theirs" else ours
    if name == "theirs":
        del ours
    else:
        del theirs
    if name == "ours_gradient_checkpointing":
        ours.gradient_checkpointing_enable()
    model.train()
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def step() -> None:
        optimiser.zero_grad()
        if name == "theirs":
            theirs.log_likelihood(x, img, matrix, x["attention_mask"], y).backward()
        else:
            ours(**inputs).loss.backward()
        optimiser.step()

    seconds, times, cpu, warmup = median_time(step, repeats, warmup=1)
    return {
        "model": name,
        "step_seconds": round(seconds, 2),
        "times": [round(t, 2) for t in times],
        "cpu_seconds": [round(c, 2) for c in cpu],
        "warmup_seconds": [round(t, 2) for t in warmup],
        "peak_rss_gib": round(peak_rss_gib(), 2),
    }


def inference_flops(ours: UMGFForTokenClassification, inputs: dict[str, torch.Tensor]) -> int:
    """FLOPs of one inference batch of ours (matrix products and convolutions, torch's flop counter)."""
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        ours(**inputs)
    return int(counter.get_total_flops())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors_code", type=Path, required=True, help="folder with their ddp_mmner.py etc.")
    parser.add_argument("--repeats", type=int, default=2, help="timed inference batches per model")
    parser.add_argument("--train-repeats", type=int, default=1, help="timed training steps per model (0: none)")
    parser.add_argument(
        "--precision", nargs="+", default=["fp32"], choices=["fp32", "bf16", "int8"], help="our inference rows"
    )
    parser.add_argument("--memory", action="store_true", help="training step time and peak RSS, one process each")
    parser.add_argument("--tweets", type=int, default=TWEETS, help="tweets per batch of --memory (default 16)")
    parser.add_argument("--memory-guard-gib", type=float, default=19.5, help="--memory aborts a process above this")
    parser.add_argument("--memory-run", help=argparse.SUPPRESS)
    args = parser.parse_args()
    set_threads()
    if args.memory_run:
        row = training_steps(args.memory_run, args.authors_code, args.train_repeats, args.tweets, args.memory_guard_gib)
        print(json.dumps(row), flush=True)
        return
    if args.memory:
        memory(args)
        return

    theirs, _, batch, ours, inputs = build_both(args.authors_code)
    x, img, matrix, y = batch["x"], batch["b_img"], batch["b_matrix"], batch["y"]
    ours_inputs_infer = {k: v for k, v in inputs.items() if k != "labels"}

    def theirs_infer() -> None:
        with torch.no_grad():
            theirs(x, img, matrix, x["attention_mask"], y)

    def ours_infer() -> None:
        with torch.inference_mode():
            ours(**ours_inputs_infer)

    results: dict[str, dict[str, float]] = {"inference": {}, "training_step": {}}
    for name, fn in (("theirs", theirs_infer), ("ours", ours_infer)):
        seconds, times, *_ = median_time(fn, args.repeats, warmup=1)
        results["inference"][name] = round(seconds, 2)
        print(f"inference {name}: {[round(t, 2) for t in times]} s", flush=True)
    agreement: dict[str, float] = {}
    with torch.inference_mode():
        reference = ours(**ours_inputs_infer).predictions
    for precision in [p for p in args.precision if p != "fp32"]:
        at_precision = inference_copy(ours, precision)

        def infer(model: UMGFForTokenClassification = at_precision) -> None:
            with torch.inference_mode():
                model(**ours_inputs_infer)

        seconds, times, *_ = median_time(infer, args.repeats, warmup=1)
        results["inference"][f"ours_{precision}"] = round(seconds, 2)
        with torch.inference_mode():
            predictions = at_precision(**ours_inputs_infer).predictions
        agreement[precision] = round(float((predictions == reference).float().mean()), 4)
        print(f"inference ours {precision}: {[round(t, 2) for t in times]} s, words as fp32 {agreement[precision]}")
        del at_precision
    if args.train_repeats:
        theirs.train(), ours.train()
        optimisers = {
            name: torch.optim.Adam(model.parameters(), lr=1e-4) for name, model in (("theirs", theirs), ("ours", ours))
        }

        def theirs_step() -> None:
            optimisers["theirs"].zero_grad()
            theirs.log_likelihood(x, img, matrix, x["attention_mask"], y).backward()
            optimisers["theirs"].step()

        def ours_step() -> None:
            optimisers["ours"].zero_grad()
            ours(**inputs).loss.backward()
            optimisers["ours"].step()

        for name, fn in (("theirs", theirs_step), ("ours", ours_step)):
            seconds, times, *_ = median_time(fn, args.train_repeats, warmup=0)
            results["training_step"][name] = round(seconds, 2)
            print(f"training step {name}: {[round(t, 2) for t in times]} s", flush=True)
    speedup = results["inference"]["theirs"] / results["inference"]["ours"]
    path = save_results(
        "vs_authors",
        {
            "machine": machine(),
            "seconds": results,
            "inference_speedup": speedup,
            "share_of_words_as_ours_fp32": agreement,
        },
    )
    print(json.dumps(results))
    print(
        f"SUMMARY bench_vs_authors: inference {results['inference']['theirs']} s (theirs) vs "
        f"{results['inference']['ours']} s (ours) per batch of {TWEETS}: {speedup:.2f}x -> {path}"
    )


def memory(args: argparse.Namespace) -> None:
    """``--memory``: each training configuration in its own process, side by side; the FLOPs of a batch."""
    rows = {}
    for name in ("theirs", "ours", "ours_gradient_checkpointing"):
        command = ["--authors_code", str(args.authors_code), "--memory-run", name, "--tweets", str(args.tweets)]
        command += ["--train-repeats", str(args.train_repeats), "--memory-guard-gib", str(args.memory_guard_gib)]
        rows[name] = run_isolated(Path(__file__), command, 3600)
        if "aborted" in rows[name]:
            raise SystemExit(f"training {name}: {rows[name]}")
        print(f"training {name}: {rows[name]['step_seconds']} s, peak RSS {rows[name]['peak_rss_gib']} GiB", flush=True)
    _, _, _, ours, inputs = build_both(args.authors_code, 1)  # FLOPs grow linearly with the tweets: count one
    flops = TWEETS * inference_flops(ours, {k: v for k, v in inputs.items() if k != "labels"})
    ratios = {
        name: {
            "step_over_theirs": round(row["step_seconds"] / rows["theirs"]["step_seconds"], 2),
            "peak_rss_over_theirs": round(row["peak_rss_gib"] / rows["theirs"]["peak_rss_gib"], 2),
        }
        for name, row in rows.items()
    }
    payload = {
        "machine": machine(),
        "tweets_per_batch": args.tweets,
        "training": rows,
        "ratios": ratios,
        "inference_flops_per_batch": flops,
    }
    path = save_results("vs_authors_memory", payload)
    print(json.dumps({"ratios": ratios, "inference_flops_per_batch": flops}))
    print(f"SUMMARY bench_vs_authors --memory: {json.dumps(ratios)} -> {path}")


if __name__ == "__main__":
    main()
