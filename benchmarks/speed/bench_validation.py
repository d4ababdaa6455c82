"""What the input checks cost: `input_checks.check_inputs` against the forward pass it guards, on CPU.

The model checks every batch at its boundary (`check_inputs`: shapes on the host, values reduced to one small tensor
read back once). This measures the checks alone and the whole inference forward (which includes them) on the same
batches: paper preset at bert-base-cased / ResNet-152 shape with random weights, batch 16, real Twitter-2017
training-tweet lengths, 4 objects per tweet as cached 2048-d features (the cheapest forward, so the largest share
the checks can take) and as 224x224 crops.

Example: ``python benchmarks/speed/bench_validation.py --repeats 5``; prints one SUMMARY line and saves
``benchmarks/results/validation.json``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository; bench_common before torch (OpenMP)
from benchmarks.bench_common import (
    build_model,
    machine,
    make_batch,
    median_time,
    sample_batches,
    save_results,
    set_threads,
    twitter_tweets,
)

# isort: split

import torch

from modeling_umgf.input_checks import ModelInputs, check_inputs


def measure(model: torch.nn.Module, batch: dict[str, torch.Tensor], repeats: int) -> dict[str, float]:
    """Median milliseconds of the checks alone and of the inference forward (checks included) on ``batch``."""
    inputs = ModelInputs(**batch)
    check_s, *_ = median_time(lambda: check_inputs(model.config, inputs, labels_for_every_word=True), repeats)
    with torch.inference_mode():
        forward_s, *_ = median_time(lambda: model(**batch), repeats)
    return {
        "check_ms": round(check_s * 1e3, 3),
        "forward_ms": round(forward_s * 1e3, 1),
        "share_percent": round(100 * check_s / forward_s, 3),
    }


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args(argv)
    set_threads()
    tweets, how = twitter_tweets()
    batch_tweets = sample_batches(tweets, args.batch_size, 1)[0]
    model = build_model("paper").eval()
    rows: dict[str, Any] = {}
    for name, features in (("cached-features", True), ("crops-224", False)):
        batch = make_batch(batch_tweets, features=features)
        rows[name] = measure(model, batch, args.repeats)
        print(name, rows[name], flush=True)
    path = save_results("validation", {"machine": machine(), "lengths_counted_with": how, "rows": rows})
    worst = max(row["share_percent"] for row in rows.values())
    print(
        f"SUMMARY bench_validation: checks {rows['cached-features']['check_ms']} ms per batch of {args.batch_size}, "
        f"at most {worst}% of an inference forward -> {path}"
    )


if __name__ == "__main__":
    main(sys.argv[1:])
