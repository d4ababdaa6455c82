"""Check that the "release" preset is the authors' network, from their files: their MMNerModel vs a converted model.

    PYTHONPATH=.:DIR_WITH_PYTORCH_CRF python benchmarks/checks/check_release_equivalence.py \\
        --authors_code AUTHORS_CHECKOUT --my_data AUTHORS_CHECKOUT/my_data [--tweets 6] [--swap layer_norms]

``AUTHORS_CHECKOUT`` is a local copy of github.com/TransformersWsz/UMGF (their ``ddp_mmner.py``, ``config.py``,
``metric.py``, ``model/`` and ``my_data/``; never part of this project) and ``pytorch-crf`` must be importable.
No download: their BERT is a small random one with 768-d outputs and a real WordPiece vocabulary, their ResNet-152
a random torchvision ResNet-50 (``--resnet``), as in ``check_release_reproduction.py``, built with no dropout in
BERT so that a training step is deterministic.

Their model is built at random weights, then every LayerNorm affine, every bias (the xavier layers' zero biases
too) and every batch-norm statistic is drawn at random, so a converter that swapped two LayerNorms or the two gate
biases would be caught (``--swap layer_norms`` / ``--swap gate_biases`` makes the converter do so, and the verdict
must then be DIFFERENT). It is saved their way (``torch.save(model.state_dict())``) and converted with
``modeling_umgf.tools.convert_original_checkpoint.convert``.

The inputs come from files, both ways: the first ``--tweets`` test tweets of ``my_data/<dataset>`` plus a made-up
tweet with words that tokenise to nothing, and random crops in their layout. Their side reads them with their
``MMNerDataset`` and ``collate_fn`` (their tokenizer, their crop transform, their matrix, which links [CLS] and [SEP]
to every crop); ours with the ``*_authors`` dataset config, the released-crops reader, ``drop_empty_words`` and the
processor (the tokenizer, timm's transform; its adjacency leaves [CLS] / [SEP] unlinked and the preset's
``link_special_tokens`` switch links them). Compared: the emission scores (their ``hidden2tag`` output), the word
predictions (as their ``predict`` writes its scoring file) and the CRF negative log-likelihood (their
``log_likelihood``, summed over the batch) in eval mode; then one Adam step (lr 1e-4, their optimiser) from the same
weights in train mode with every dropout off: the gradients and the updated weights (their tensors converted,
against ours). Gradients are compared relative to the model's largest gradient (some, like attention key biases',
are 0 in exact arithmetic and float noise in both). Adam's first step moves a weight by +-lr whatever the size of its
gradient, so the weights whose gradient's sign is float noise (|g| at most 10 times the difference of the two
gradients there) can move either way: they are counted apart, and every other weight must agree within 1e-5.
The step is taken with the ResNet's batch norm on batch statistics, as their ``train()`` does (the preset's crops go
into the backbone in their NCHW layout in training: channels-last crops moved the first convolution's gradient by
2 % of the model's largest; BENCHMARKS.md); ``--frozen_batch_norm`` takes it on the running statistics in both.
The train-mode ResNet's backward magnifies float32 rounding of the gradient it receives: the first convolution's
gradient can move by a few 1e-4 of the largest (a real difference, the crop layout, moved it by 2e-2), so gradients
must agree within 1e-3 of the largest and the updated weights, the issue's criterion, within 1e-5; ``--float64`` runs
both models in float64, where the step's gradients agree to rounding (BENCHMARKS.md). The last line is the verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import tempfile
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))
sys.path.insert(0, str(HERE))

from check_release_reproduction import (  # noqa: E402  (the shared set-up of the two checks)
    authors_module,
    default_vocab,
    randomise,
    save_text_encoder,
    write_crops,
)

# float32 rounding magnified by the train-mode ResNet's backward stays a few 1e-4 of the largest gradient
GRADIENT_TOLERANCE = 1e-3


def their_files(source: Path, target: Path, tweets: int) -> None:
    """The first ``tweets`` test tweets (train / valid: the same, the builder wants all three) and one made-up tweet
    with a zero-width space and a variation selector among its words, in their layout."""
    from datasets_scripts.authors_format import tweet_numbers

    numbers = tweet_numbers(source / "test")[:tweets]
    for split in ("train", "valid", "test"):
        (target / split).mkdir(parents=True)
        for number in numbers:
            for kind in "slp":
                shutil.copy(source / "test" / f"{number}_{kind}.txt", target / split / f"{number}_{kind}.txt")
    words = (source / "test" / f"{numbers[0]}_s.txt").read_text(encoding="utf-8").split("\t")
    tags = (source / "test" / f"{numbers[0]}_l.txt").read_text(encoding="utf-8").split("\t")
    image_id = (source / "test" / f"{numbers[0]}_p.txt").read_text(encoding="utf-8").strip()
    made_up = {"s": ["\u200b", *words[:2], "\ufe0f", *words[2:]], "l": ["B-PER", *tags[:2], "O", *tags[2:]]}
    for kind, values in made_up.items():
        (target / "test" / f"20000000_{kind}.txt").write_text("\t".join(values), encoding="utf-8")
    (target / "test" / "20000000_p.txt").write_text(image_id, encoding="utf-8")


def gradient(parameter: torch.Tensor) -> torch.Tensor:
    """The parameter's gradient; zeros for one the loss does not reach (the objects' last update, in both)."""
    return parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)


def no_dropout(model: torch.nn.Module) -> None:
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
        if hasattr(module, "attention_dropout") and isinstance(module.attention_dropout, float):
            module.attention_dropout = 0.0


def swapped_converter(swap: str):
    """A context that makes the converter swap two LayerNorms or the two gate biases (the check must catch it)."""
    from modeling_umgf.tools import convert_original_checkpoint as converter

    if swap == "layer_norms":
        names = dict(converter.LAYER_NORMS)
        names["res4mes_x"], names["xgate"] = names["xgate"], names["res4mes_x"]
        return _patched(converter, "LAYER_NORMS", names)
    original = converter.convert_state_dict

    def convert_state_dict(state_dict, layers):
        out = original(state_dict, layers)
        for i in range(layers):
            text, visual = f"umgf.layers.{i}.text.gate.w_self.bias", f"umgf.layers.{i}.visual.gate.w_self.bias"
            out[text], out[visual] = out[visual], out[text]
        return out

    return _patched(converter, "convert_state_dict", convert_state_dict)


@contextlib.contextmanager
def _patched(module, name: str, value):
    original = getattr(module, name)
    setattr(module, name, value)
    try:
        yield
    finally:
        setattr(module, name, original)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors_code", type=Path, required=True, help="their ddp_mmner.py, metric.py, ... folder")
    parser.add_argument("--my_data", type=Path, required=True, help="their my_data/ folder")
    parser.add_argument("--dataset", default="twitter2015", choices=["twitter2015", "twitter2017"])
    parser.add_argument("--tweets", type=int, default=6)
    parser.add_argument("--resnet", type=int, default=50, choices=[50, 101, 152])
    parser.add_argument("--vocab", type=Path, default=default_vocab(), help="a WordPiece vocab.txt")
    parser.add_argument("--swap", choices=["none", "layer_norms", "gate_biases"], default="none")
    parser.add_argument(
        "--frozen_batch_norm", action="store_true", help="training step with the ResNet's batch norm in eval mode"
    )
    parser.add_argument(
        "--float64", action="store_true", help="both models in float64, the step on their pixel tensor in both"
    )
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    if args.float64:
        torch.set_default_dtype(torch.float64)
    from transformers import AutoTokenizer

    from datasets_scripts.authors_format import drop_empty_words
    from datasets_scripts.release_crops import attach_release_crops
    from datasets_scripts.twitter_mner import build_dataset
    from modeling_umgf import UMGFForTokenClassification, UMGFProcessor
    from modeling_umgf.tools.convert_original_checkpoint import convert, convert_state_dict

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        save_text_encoder(tmp / "bert", args.vocab, layers=2, dropout=0.0)
        their_files(args.my_data / args.dataset, tmp / "my_data" / args.dataset, args.tweets)
        write_crops(tmp / "my_data" / args.dataset, tmp / "crops", args.seed)

        module = authors_module(args.authors_code, tmp / "bert", args.resnet)
        torch.manual_seed(args.seed)
        theirs = module.MMNerModel()
        randomise(theirs, args.seed)
        with contextlib.redirect_stdout(sys.stderr):
            module.save_model(theirs, str(tmp / "ddp_mner.pt"))
        context = swapped_converter(args.swap) if args.swap != "none" else contextlib.nullcontext()
        with context, contextlib.redirect_stdout(sys.stderr):
            convert(tmp / "ddp_mner.pt", tmp / "converted", str(tmp / "bert"), dataset=args.dataset)
        ours = UMGFForTokenClassification.from_pretrained(tmp / "converted")
        processor = UMGFProcessor.from_pretrained(tmp / "converted")

        # their inputs, read by their dataset and collate_fn
        dataset = module.MMNerDataset(textdir=str(tmp / "my_data" / args.dataset / "test"), imgdir=str(tmp / "crops"))
        batch = module.collate_fn([dataset[i] for i in range(len(dataset))])
        x, img, matrix, y = batch["x"], batch["b_img"], batch["b_matrix"], batch["y"]
        # ours, read by the *_authors config, the released-crops reader, drop_empty_words and the processor
        built, _ = build_dataset(f"{args.dataset}_authors", data_dir=tmp / "my_data", cache_dir=tmp / "cache")
        test, _ = attach_release_crops(built["test"], tmp / "crops")
        test, dropped = drop_empty_words(test, AutoTokenizer.from_pretrained(tmp / "bert"))
        examples = processor.process_examples(test[:])
        collated = processor.data_collator()([{k: v[i] for k, v in examples.items()} for i in range(len(test))])
        inputs, _ = processor.split_batch(collated)
        labels = inputs.pop("labels")
        special_rows_linked = bool(inputs["inter_modal_adjacency"][:, 0].any())

        # eval mode: emissions, word predictions, NLL
        emissions = {}
        theirs.hidden2tag.register_forward_hook(lambda _m, _i, output: emissions.__setitem__("theirs", output))
        theirs.eval()
        ours.eval()
        with torch.no_grad():
            paths = theirs(x, img, matrix, x["attention_mask"], y)
            nll_theirs = float(theirs.log_likelihood(x, img, matrix, x["attention_mask"], y))
            out = ours(**inputs, labels=labels)
        idx2tag = module.idx2tag
        words_theirs = [
            [
                (idx2tag[p] if idx2tag[p] not in ("PAD", "X", "CLS", "SEP") else "O").replace("OTHER", "MISC")
                for p, g in zip(path, y[b].tolist())
                if idx2tag[g] not in ("PAD", "X", "CLS", "SEP")
            ]
            for b, path in enumerate(paths)
        ]
        words_ours = processor.decode_word_predictions(out.predictions, [len(t) for t in test["tokens"]])
        length = out.logits.shape[1]
        real = x["attention_mask"][:, :length].bool()
        same_ids = torch.equal(inputs["input_ids"][inputs["attention_mask"].bool()], x["input_ids"][:, :length][real])
        emission_difference = float((out.logits - emissions["theirs"][:, :length])[real].abs().max())

        # one training step from the same weights, dropout off, their optimiser
        for model in (theirs, ours):
            no_dropout(model)
            model.train()
            if args.frozen_batch_norm:  # the backbone's batch norm on its running statistics, in both
                for layer in model.modules():
                    if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm):
                        layer.eval()
        if args.float64:  # the two crop transforms round apart in float64 (1e-7): take the step on their pixels
            inputs["pixel_values"] = img.view(inputs["pixel_values"].shape).clone()
        adam_theirs = torch.optim.Adam(theirs.parameters(), lr=1e-4)
        adam_ours = torch.optim.Adam(ours.parameters(), lr=1e-4)
        loss_theirs = theirs.log_likelihood(x, img, matrix, x["attention_mask"], y)
        loss_theirs.backward()
        adam_theirs.step()
        loss_ours = ours(**inputs, labels=labels).loss
        loss_ours.backward()
        adam_ours.step()
        ignored = ("bert.pooler.", "bert.embeddings.position_ids")
        layers = ours.config.num_fusion_layers
        updated = convert_state_dict(
            {k: v for k, v in theirs.state_dict().items() if not k.startswith(ignored)}, layers
        )
        grads = convert_state_dict(
            {k: gradient(p) for k, p in theirs.named_parameters() if not k.startswith(ignored)},
            layers,
        )
        mine, my_grads = ours.state_dict(), {k: gradient(p) for k, p in ours.named_parameters()}
        # gradients: the largest difference relative to the largest gradient of the model (some gradients are 0 in
        # exact arithmetic, e.g. of attention key biases, and only float noise in both)
        scale = max(float(grad.abs().max()) for grad in grads.values())
        gradient_differences = {key: float((my_grads[key] - grad).abs().max()) / scale for key, grad in grads.items()}
        # weights after the step. Adam's first step moves a weight by +-lr whatever the size of its gradient, so a
        # weight whose gradient's sign is not fixed at float precision (|g| no more than 10 times the difference of
        # the two gradients there) can move either way: those are counted apart; every other weight must agree.
        step_differences, undetermined_moves, compared = {}, 0, 0
        for key, value in updated.items():
            difference = (mine[key].float() - value.float()).abs()
            if key in grads:
                undetermined = grads[key].abs() <= 10 * (my_grads[key] - grads[key]).abs()
                undetermined_moves += int((difference > 1e-5)[undetermined].sum())
                difference = difference[~undetermined]
            compared += difference.numel()
            step_differences[key] = float(difference.max()) if difference.numel() else 0.0
        worst = max(step_differences, key=step_differences.__getitem__)
        worst_gradient = max(gradient_differences, key=gradient_differences.__getitem__)

    report = {
        "swap_in_converter": args.swap,
        "tweets": len(test),
        "words_dropped_without_sub_tokens": len(dropped.removed),
        "same_input_ids": same_ids,
        "special_tokens_linked_by_our_processor": special_rows_linked,
        "max_emission_difference": emission_difference,
        "same_word_predictions": words_ours == words_theirs,
        "nll_theirs": nll_theirs,
        "nll_ours": float(out.loss),
        "nll_difference": abs(float(out.loss) - nll_theirs),
        "train_step_loss_difference": abs(float(loss_ours) - float(loss_theirs)),
        "max_relative_gradient_difference": gradient_differences[worst_gradient],
        "where_gradient": worst_gradient,
        "largest_gradient_there": float(grads[worst_gradient].abs().max()),
        "weights_compared_after_the_step": compared,
        "max_updated_weight_difference": step_differences[worst],
        "where": worst,
        "weights_whose_gradient_sign_is_float_noise_moved_otherwise": undetermined_moves,
    }
    ok = (
        same_ids
        and not special_rows_linked
        and emission_difference < 1e-4
        and report["same_word_predictions"]
        and report["nll_difference"] < 1e-3
        and report["max_relative_gradient_difference"] < GRADIENT_TOLERANCE
        and report["max_updated_weight_difference"] < 1e-5
    )
    print(json.dumps(report, indent=2))
    print(
        f"release preset vs the authors' MMNerModel, from their files ({len(test)} tweets, converter swap: "
        f"{args.swap}): {'EQUAL' if ok else 'DIFFERENT'} (input ids, emissions < 1e-4, word predictions, "
        f"NLL < 1e-3, gradients < {GRADIENT_TOLERANCE:g} of the largest, weights after one Adam step < 1e-5)"
    )
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
