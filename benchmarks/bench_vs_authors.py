"""The model alone, side by side with the authors' code: their MMNerModel against umgf's paper preset, same work.

    python benchmarks/bench_vs_authors.py --authors_code DIR [--repeats 2] [--train-repeats 1]

``DIR`` as for ``check_release_equivalence.py`` (their ``ddp_mmner.py``, ``config.py``, ``metric.py``,
``model/utils.py``; ``pytorch-crf`` installed). Work: 16 tweets of 32 sub-tokens (30 one-piece words between
[CLS] and [SEP]), 4 crops of 224x224 per tweet, BERT-base-cased and ResNet-152 shapes, random weights, torch
threads fixed to 2, in one process, alternating theirs and ours. Theirs runs the way their scripts run it: every
tweet padded to 128, inference (their ``predict``) under ``no_grad``, a training step of ``log_likelihood`` +
backward + Adam. Ours: dynamic padding, channels-last backbone, ``inference_mode``; a training step of the loss +
backward + the same Adam (torch's default implementation, as ``train_umgf.py --optimizer adam`` builds it). Prints the
medians and, last, the speed-up of inference.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from bench_common import machine, median_time, save_results, set_threads
from check_release_equivalence import authors_model, theirs_inputs

from modeling_umgf import LABELS, UMGFConfig, UMGFForTokenClassification

TWEETS, WORDS, CROPS = 16, 30, 4


def the_work(tag2idx: dict[str, int]) -> list[dict]:
    """16 tweets of 30 one-piece words with random tags (32 sub-tokens with [CLS] and [SEP])."""
    g = torch.Generator().manual_seed(0)
    word_tags = [t for t in tag2idx if t[:2] in ("B-", "I-")] + ["O"]
    return [
        {
            "pieces": [[int(i)] for i in torch.randint(1000, 28996, (WORDS,), generator=g)],
            "tags": [word_tags[int(i)] for i in torch.randint(0, len(word_tags), (WORDS,), generator=g)],
        }
        for _ in range(TWEETS)
    ]


def ours_inputs(theirs: dict) -> dict[str, torch.Tensor]:
    """The same tweets and crops for umgf: cut to the longest tweet, word ids, word labels, crops [B, O, ...]."""
    length = WORDS + 2
    word_ids = torch.full((TWEETS, length), -1)
    word_ids[:, 1 : WORDS + 1] = torch.arange(WORDS)
    return {
        "input_ids": theirs["x"]["input_ids"][:, :length],
        "attention_mask": theirs["x"]["attention_mask"][:, :length].long(),
        "word_ids": word_ids,
        "pixel_values": theirs["b_img"].view(TWEETS, CROPS, 3, 224, 224),
        "object_mask": torch.ones(TWEETS, CROPS, dtype=torch.long),
        "labels": torch.randint(0, len(LABELS), (TWEETS, WORDS), generator=torch.Generator().manual_seed(1)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors_code", type=Path, required=True, help="folder with their ddp_mmner.py etc.")
    parser.add_argument("--repeats", type=int, default=2, help="timed inference batches per model")
    parser.add_argument("--train-repeats", type=int, default=1, help="timed training steps per model (0: none)")
    args = parser.parse_args()
    set_threads()

    theirs, module = authors_model(args.authors_code, seed=0)
    batch = theirs_inputs(the_work(module.tag2idx), module.tag2idx, module.max_len, module.max_node, seed=0)
    x, img, matrix, y = batch["x"], batch["b_img"], batch["b_matrix"], batch["y"]
    torch.manual_seed(0)
    ours = UMGFForTokenClassification(UMGFConfig.from_preset("paper")).eval()
    ours.umgf.vision_backbone.to(memory_format=torch.channels_last)  # the model hands it NHWC crops
    inputs = ours_inputs(batch)
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
    path = save_results("vs_authors", {"machine": machine(), "seconds": results, "inference_speedup": speedup})
    print(json.dumps(results))
    print(
        f"SUMMARY bench_vs_authors: inference {results['inference']['theirs']} s (theirs) vs "
        f"{results['inference']['ours']} s (ours) per batch of {TWEETS}: {speedup:.2f}x -> {path}"
    )


if __name__ == "__main__":
    main()
