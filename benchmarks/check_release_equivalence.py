"""Check that the "release" preset is the authors' network: their MMNerModel vs a converted umgf model.

    python benchmarks/check_release_equivalence.py --authors_code DIR [--tweets 4]

``DIR`` holds the authors' ``ddp_mmner.py``, ``config.py``, ``metric.py`` and ``model/utils.py``
(github.com/TransformersWsz/UMGF; e.g. ``git archive`` of a clone; they are not part of this project), and their
dependency ``pytorch-crf`` must be installed. Their model is built at random weights with BERT-base and
ResNet-152 shapes (no download: ``from_pretrained`` / ``pretrained=True`` are replaced by random initialisation),
saved with ``torch.save(model.state_dict())``, converted with ``python -m modeling_umgf.convert_original_checkpoint``
and loaded with ``AutoModelForTokenClassification.from_pretrained(..., trust_remote_code=True)``. On one ragged
batch (real lengths differ, 4 crops per tweet, their inter-modal matrix), fed the way their dataset feeds it
(padded to 128) and also unpadded, it compares: the emission scores (their ``hidden2tag`` output), the word-level
predictions (their Viterbi path read at first sub-tokens, as their ``predict`` writes its scoring file) and the CRF
negative log-likelihood (their ``log_likelihood``: pytorch-crf's sum over the batch). The last line is the verdict.
"""

from __future__ import annotations

import argparse
import importlib
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


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


def ragged_batch(tweets: int, seed: int, tag2idx: dict[str, int]) -> list[dict]:
    """Tweets of different lengths: sub-token ids per word (1-3 pieces) and a word tag per word."""
    g = torch.Generator().manual_seed(seed)
    words = [int(n) for n in torch.randint(2, 14, (tweets,), generator=g)]
    word_tags = [t for t in tag2idx if t[:2] in ("B-", "I-")] + ["O"] * 4
    batch = []
    for n in words:
        pieces = [
            torch.randint(1000, 28996, (int(torch.randint(1, 4, (1,), generator=g)),), generator=g).tolist()
            for _ in range(n)
        ]
        tags = [word_tags[int(i)] for i in torch.randint(0, len(word_tags), (n,), generator=g)]
        batch.append({"pieces": pieces, "tags": tags})
    return batch


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors_code", type=Path, required=True, help="folder with their ddp_mmner.py etc.")
    parser.add_argument("--tweets", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    model, module = authors_model(args.authors_code, args.seed)
    tag2idx, idx2tag, max_len, max_node = module.tag2idx, module.idx2tag, module.max_len, module.max_node
    batch = ragged_batch(args.tweets, args.seed, tag2idx)
    theirs = theirs_inputs(batch, tag2idx, max_len, max_node, args.seed)
    emissions = {}
    model.hidden2tag.register_forward_hook(lambda _m, _i, output: emissions.__setitem__("theirs", output))
    with torch.no_grad():
        x, img, matrix, y = theirs["x"], theirs["b_img"], theirs["b_matrix"], theirs["y"]
        paths = model(x, img, matrix, x["attention_mask"], y)
        nll_theirs = float(model.log_likelihood(x, img, matrix, x["attention_mask"], y))
    # their predict(): every gold position that is not PAD / X / CLS / SEP, the predicted tag with those read as O
    words_theirs = [
        [
            idx2tag[p] if idx2tag[p] not in ("PAD", "X", "CLS", "SEP") else "O"
            for p, g in zip(path, y[b].tolist())
            if idx2tag[g] not in ("PAD", "X", "CLS", "SEP")
        ]
        for b, path in enumerate(paths)
    ]

    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, folder = Path(tmp) / "ddp_mner.pt", Path(tmp) / "converted"
        state = model.state_dict()
        state["bert.embeddings.position_ids"] = torch.arange(512).unsqueeze(0)  # as transformers 3.x saved it
        torch.save(state, checkpoint)
        command = [
            sys.executable,
            "-m",
            "modeling_umgf.convert_original_checkpoint",
            "--checkpoint",
            str(checkpoint),
            "--output_dir",
            str(folder),
            "--text_model_name_or_path",
            str(Path(tmp) / "no-such-bert"),
        ]
        subprocess.run(command, check=True, cwd=REPO, capture_output=True)
        from transformers import AutoModelForTokenClassification

        ours = AutoModelForTokenClassification.from_pretrained(folder, trust_remote_code=True).eval()
        labels = ours.config.label2id
        results = {}
        for padded in (True, False):
            length = max_len if padded else int(x["attention_mask"].sum(1).max())
            word_ids = torch.full((len(batch), length), -1)
            for b, tweet in enumerate(batch):
                position = 1
                for w, pieces in enumerate(tweet["pieces"]):
                    word_ids[b, position : position + len(pieces)] = w
                    position += len(pieces)
            words = max(len(t["tags"]) for t in batch)
            word_labels = torch.full((len(batch), words), -100)
            for b, tweet in enumerate(batch):
                word_labels[b, : len(tweet["tags"])] = torch.tensor(
                    [labels[t.replace("OTHER", "MISC")] for t in tweet["tags"]]
                )
            inputs = {
                "input_ids": x["input_ids"][:, :length],
                "attention_mask": x["attention_mask"][:, :length].long(),
                "token_type_ids": x["token_type_ids"][:, :length],
                "word_ids": word_ids,
                "pixel_values": img.view(len(batch), max_node, 3, 224, 224),
                "object_mask": torch.ones(len(batch), max_node, dtype=torch.long),
                "inter_modal_adjacency": matrix[:, :length],
            }
            with torch.no_grad():
                out = ours(**inputs, labels=word_labels)
            real = x["attention_mask"][:, :length].bool()
            diff = (out.logits - emissions["theirs"][:, :length])[real].abs().max()
            predicted = [[ours.config.id2label[int(t)] for t in row if t != -100] for row in out.predictions]
            expected = [[t.replace("OTHER", "MISC") for t in row] for row in words_theirs]
            results["padded to 128" if padded else "unpadded"] = {
                "logits_shape": list(out.logits.shape),
                "max_emission_difference": float(diff),
                "same_word_predictions": predicted == expected,
                "nll_ours": float(out.loss),
                "nll_theirs": nll_theirs,
                "nll_difference": abs(float(out.loss) - nll_theirs),
            }
    ok = all(
        r["max_emission_difference"] < 1e-4 and r["same_word_predictions"] and r["nll_difference"] < 1e-3
        for r in results.values()
    )
    print(json.dumps(results, indent=2))
    print(
        f"release preset vs the authors' MMNerModel ({args.tweets} tweets, 4 crops each): "
        f"{'EQUAL' if ok else 'DIFFERENT'} (emissions < 1e-4, word predictions, NLL < 1e-3)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
