"""Padded vs packed text encoding, the two packing modes side by side: transformers' own padding-free path
(position ids only, ``packing_mode="library"``) and the hand-built block-diagonal mask (``"block"``).

BERT-base shape (random weights), batches of 16 real Twitter-2017 tweets (sub-token lengths from
`bench_common.twitter_tweets`), forward (``no_grad``) and forward + backward. The modes are interleaved within
each repeat, so load from other processes on the shared cores falls on all of them alike; the outputs of the
three are compared on every batch. Prints one JSON line and writes ``results/text_packing.json``.

    python benchmarks/speed/bench_text_packing.py [--repeats 10] [--batch-size 16] [--layers 12]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import (
    gemm_gflops,
    machine,
    sample_batches,
    save_results,
    set_threads,
    timed,
    twitter_tweets,
)

# isort: split

import torch
import transformers
from transformers import BertConfig, BertModel

from modeling_umgf import text_packing
from modeling_umgf.text_packing import encode_packed, library_separates_packed_sequences

MODES = ("padded", "block", "library")


def encode(model: BertModel, batch: dict[str, torch.Tensor], mode: str) -> torch.Tensor:
    if mode == "padded":
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        return hidden * batch["attention_mask"][..., None]
    packed = encode_packed(model, batch["attention_mask"], batch["input_ids"], packing_mode=mode)  # type: ignore[arg-type]
    assert packed is not None
    return packed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--layers", type=int, default=12)
    args = parser.parse_args()
    set_threads()
    text_packing.MIN_SAVING = 0.0  # pack every batch: this compares the ways of packing, not whether to pack
    if not library_separates_packed_sequences():
        raise SystemExit(f"transformers {transformers.__version__} does not separate packed sequences for BERT")
    torch.manual_seed(0)
    config = BertConfig(num_hidden_layers=args.layers, vocab_size=28996, attn_implementation="sdpa")
    config.hidden_dropout_prob = config.attention_probs_dropout_prob = 0.0
    model = BertModel(config, add_pooling_layer=False)
    tweets, how = twitter_tweets("train")
    batches = []
    for tweets_of_batch in sample_batches(tweets, args.batch_size, args.repeats + 1):
        length = max(len(t.word_ids) for t in tweets_of_batch)
        ids = torch.zeros(len(tweets_of_batch), length, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for b, tweet in enumerate(tweets_of_batch):
            ids[b, : len(tweet.word_ids)] = torch.randint(1000, 28996, (len(tweet.word_ids),))
            mask[b, : len(tweet.word_ids)] = 1
        batches.append({"input_ids": ids, "attention_mask": mask})

    gflops_before = gemm_gflops()
    times: dict[str, list[float]] = {f"{m} {k}": [] for m in MODES for k in ("forward", "forward+backward")}
    worst_difference = 0.0
    for i, batch in enumerate(batches):  # the first batch warms up and is not timed
        outputs = {}
        for mode in MODES:
            with torch.no_grad():
                outputs[mode], elapsed, _ = timed(lambda mode=mode, batch=batch: encode(model, batch, mode))
            if i:
                times[f"{mode} forward"].append(elapsed)
            model.zero_grad(set_to_none=True)
            _, elapsed, _ = timed(lambda mode=mode, batch=batch: encode(model, batch, mode).square().mean().backward())
            if i:
                times[f"{mode} forward+backward"].append(elapsed)
        for mode in ("block", "library"):
            worst_difference = max(worst_difference, (outputs[mode] - outputs["padded"]).abs().max().item())

    medians = {name: round(statistics.median(values), 4) for name, values in times.items()}
    result = {
        "benchmark": "text_packing",
        "machine": machine(),
        "transformers": transformers.__version__,
        "tokens": how,
        "batch_size": args.batch_size,
        "layers": args.layers,
        "repeats": args.repeats,
        "gemm_gflops_before_after": [gflops_before, gemm_gflops()],
        "median_seconds": medians,
        "library_over_block": {
            kind: round(medians[f"block {kind}"] / medians[f"library {kind}"], 3)
            for kind in ("forward", "forward+backward")
        },
        "packed_over_padded_speedup": {
            f"{mode} {kind}": round(medians[f"padded {kind}"] / medians[f"{mode} {kind}"], 3)
            for mode in ("block", "library")
            for kind in ("forward", "forward+backward")
        },
        "max_abs_difference_to_padded": worst_difference,
    }
    save_results("text_packing", result)
    print(json.dumps(result))
    print(
        f"SUMMARY bench_text_packing: BERT {args.layers} layers, batch {args.batch_size}, block/library time "
        f"{result['library_over_block']}, outputs within {worst_difference:.1e} of padded"
    )


if __name__ == "__main__":
    main()
