"""Speed and memory options leave the model's outputs unchanged (benchmarks/ measures what they buy).

Each test compares an optimised run with the plain one on the same weights and inputs: inference mode,
dynamic padding (a batch trimmed to its longest tweet), a channels_last backbone, activation checkpointing
(BERT layers, fusion layers and the timm backbone), training from cached object features, encoding identical crops once, and the compiled
backbone of `optimize_for_inference`. Padding-free text encoding has its own file, test_text_packing.py.
"""

from __future__ import annotations

import shutil
import warnings

import pytest
import torch

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.modeling_umgf import UMGFFusionLayer
from modeling_umgf.tools.tiny_models import tiny_config, tiny_inputs


def build(seed: int = 0, **overrides) -> UMGFForTokenClassification:
    torch.manual_seed(seed)
    return UMGFForTokenClassification(tiny_config(**overrides)).eval()


def with_labels(inputs: dict[str, torch.Tensor], seed: int = 0) -> dict[str, torch.Tensor]:
    """Add word-level labels for the words present in ``inputs``."""
    g = torch.Generator().manual_seed(seed)
    word_ids = inputs["word_ids"]
    num_words = int(word_ids.max()) + 1
    labels = torch.randint(0, 9, (word_ids.shape[0], num_words), generator=g)
    present = torch.zeros_like(labels, dtype=torch.bool)
    for b in range(word_ids.shape[0]):
        present[b, : int(word_ids[b].max()) + 1] = True
    return {**inputs, "labels": labels.masked_fill(~present, -100)}


def test_inference_mode_gives_the_same_outputs_as_no_grad() -> None:
    model = build()
    x = tiny_inputs(batch=3, tokens=10, objects=3)
    with torch.no_grad():
        ref = model(**x, output_gates=True)
    with torch.inference_mode():
        out = model(**x, output_gates=True)
    assert out.logits.is_inference()
    torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
    assert torch.equal(out.predictions, ref.predictions)
    for gate, ref_gate in zip(out.gates, ref.gates):
        torch.testing.assert_close(gate, ref_gate, rtol=0, atol=0)


def test_dynamic_padding_gives_the_same_outputs_as_padding_to_max_length() -> None:
    """The authors pad every tweet to 128; trimming the batch to its longest tweet changes no output."""
    model = build()
    x = with_labels(tiny_inputs(batch=3, tokens=10, objects=3))
    longest = int(x["attention_mask"].sum(1).max())
    trimmed = {
        k: v[:, :longest] if k in ("input_ids", "attention_mask", "word_ids", "inter_modal_adjacency") else v
        for k, v in x.items()
    }
    assert trimmed["input_ids"].shape[1] < 64
    pad = 64 - 10  # the tiny BERT's max_position_embeddings
    padded = dict(x)
    padded["input_ids"] = torch.nn.functional.pad(x["input_ids"], (0, pad), value=0)
    padded["attention_mask"] = torch.nn.functional.pad(x["attention_mask"], (0, pad), value=0)
    padded["word_ids"] = torch.nn.functional.pad(x["word_ids"], (0, pad), value=-1)
    padded["inter_modal_adjacency"] = torch.nn.functional.pad(x["inter_modal_adjacency"], (0, 0, 0, pad), value=1)
    with torch.inference_mode():
        long, short = model(**padded), model(**trimmed)
    torch.testing.assert_close(short.logits, long.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(short.predictions, long.predictions)
    with torch.no_grad():
        torch.testing.assert_close(model(**trimmed).loss, model(**padded).loss, rtol=1e-5, atol=1e-5)


def test_channels_last_backbone_gives_the_same_outputs() -> None:
    model = build()
    x = tiny_inputs(batch=2, tokens=8, objects=3)
    with torch.inference_mode():
        ref = model(**x)
        model.umgf.vision_backbone.to(memory_format=torch.channels_last)
        convs = [m for m in model.umgf.vision_backbone.modules() if isinstance(m, torch.nn.Conv2d)]
        assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
        pv = x["pixel_values"]
        out = model(
            **{**x, "pixel_values": pv.flatten(0, 1).contiguous(memory_format=torch.channels_last).view(pv.shape)}
        )
    torch.testing.assert_close(out.logits, ref.logits, rtol=1e-5, atol=1e-5)
    assert torch.equal(out.predictions, ref.predictions)


@pytest.mark.skipif(
    shutil.which("g++") is None and shutil.which("c++") is None, reason="TorchInductor needs a C++ compiler on CPU"
)
def test_optimize_for_inference_keeps_outputs_across_crop_counts() -> None:
    """Compiled, frozen, channels-last backbone: same outputs as eager, also when the crop count changes."""
    model = build()
    inputs = [tiny_inputs(batch=2, tokens=8, objects=3, seed=0), tiny_inputs(batch=3, tokens=9, objects=4, seed=1)]
    with torch.inference_mode():
        refs = [model(**x) for x in inputs]
        assert model.optimize_for_inference() is model and not model.training
        outs = [model(**x) for x in inputs]
    compiled = model.umgf.vision_backbone._compiled_call_impl
    assert compiled is not None
    assert set(model.state_dict()) == set(build().state_dict())  # compiled in place: same keys to save and load
    for out, ref in zip(outs, refs):
        torch.testing.assert_close(out.logits, ref.logits, rtol=1e-4, atol=1e-4)
        assert torch.equal(out.predictions, ref.predictions)


def test_identical_crops_are_encoded_once_in_eval_mode_with_the_same_features() -> None:
    model = build()
    x = tiny_inputs(batch=3, tokens=8, objects=4)  # real crops per tweet: 4, 3, 2
    pixel_values, object_mask = x["pixel_values"].clone(), x["object_mask"]
    pixel_values[0, 1] = pixel_values[0, 0]  # the same box grounded from two phrases
    pixel_values[2, 0] = pixel_values[0, 0]  # ... or in another tweet of the batch
    pixel_values[1, 2] = pixel_values[1, 1]
    pixel_values[2, 3] = pixel_values[2, 1]  # a padded slot equal to a real crop stays padding
    batch_sizes = []
    model.umgf.vision_backbone.register_forward_pre_hook(lambda _, args: batch_sizes.append(len(args[0])))
    with torch.no_grad():
        features = model.umgf.encode_objects(pixel_values, object_mask)
        alone = {
            (b, o): model.umgf.vision_backbone(pixel_values[b, o][None])[0]
            for b in range(3)
            for o in range(4)
            if object_mask[b, o]
        }
    assert batch_sizes[0] == 9 - 3  # 9 real crops, 3 of them repeats
    for (b, o), feature in alone.items():
        torch.testing.assert_close(features[b, o], feature, rtol=1e-5, atol=1e-5)
    assert not features[~object_mask.bool()].any()

    batch_sizes.clear()
    model.train()  # BatchNorm on batch statistics: every crop counts, none is skipped
    model.umgf.encode_objects(pixel_values, object_mask)
    assert batch_sizes == [9]


def _train_step(model: UMGFForTokenClassification, inputs: dict[str, torch.Tensor], seed: int, frozen_backbone=False):
    """Loss and parameter gradients of one training step (dropout on) with a fixed random seed.

    A frozen backbone runs in eval mode (BatchNorm on its running statistics), as a feature cache computes it.
    """
    model.train()
    if frozen_backbone:
        model.umgf.vision_backbone.eval()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(seed)
    loss = model(**inputs).loss
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def set_checkpointing(model: UMGFForTokenClassification, enable: bool) -> None:
    """transformers >= 5.x names it activation checkpointing; gradient_checkpointing_* is the older alias."""
    prefix = "activation" if hasattr(model, "activation_checkpointing_enable") else "gradient"
    getattr(model, f"{prefix}_checkpointing_{'enable' if enable else 'disable'}")()


def _count_forwards(modules: list[torch.nn.Module]) -> list[int]:
    counts = [0] * len(modules)
    for i, module in enumerate(modules):
        module.register_forward_pre_hook(lambda *_, i=i: counts.__setitem__(i, counts[i] + 1))
    return counts


def test_gradient_checkpointing_covers_bert_fusion_and_backbone_and_keeps_gradients() -> None:
    model = build(dropout=0.3)
    x = with_labels(tiny_inputs(batch=3, tokens=10, objects=3))
    # transformers checkpoints a layer's `forward` (its own hooks stay outside), so count its first sub-module.
    counts = _count_forwards(
        [
            model.umgf.text_encoder.encoder.layer[0].attention,
            model.umgf.layers[0].text.attention,
            model.umgf.vision_backbone.layer1[0],
        ]
    )
    ref_loss, ref_grads = _train_step(model, x, seed=7)
    assert counts == [1, 1, 1]

    set_checkpointing(model, True)
    assert all(layer.gradient_checkpointing for layer in model.umgf.layers)
    assert all(layer.gradient_checkpointing for layer in model.umgf.text_encoder.encoder.layer)
    assert model.umgf.vision_backbone.grad_checkpointing
    counts[:] = [0, 0, 0]
    loss, grads = _train_step(model, x, seed=7)
    # Each checkpointed module runs again in the backward pass: checkpointing is really in use everywhere.
    assert counts == [2, 2, 2]
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)

    set_checkpointing(model, False)
    assert not any(layer.gradient_checkpointing for layer in model.modules() if isinstance(layer, UMGFFusionLayer))
    assert not model.umgf.vision_backbone.grad_checkpointing
    counts[:] = [0, 0, 0]
    _train_step(model, x, seed=7)
    assert counts == [1, 1, 1]

    with warnings.catch_warnings():  # the older name reaches the backbone too
        warnings.simplefilter("ignore", FutureWarning)
        model.gradient_checkpointing_enable()
    assert model.umgf.vision_backbone.grad_checkpointing and model.umgf.layers[-1].gradient_checkpointing


def test_training_from_cached_features_matches_training_through_a_frozen_backbone() -> None:
    """The feature cache: feeding the frozen backbone's pooled features gives the same loss and gradients."""
    model = build()
    model.umgf.vision_backbone.requires_grad_(False)
    x = with_labels(tiny_inputs(batch=3, tokens=10, objects=3))
    ref_loss, ref_grads = _train_step(model, x, seed=3, frozen_backbone=True)
    model.eval()
    with torch.no_grad():
        pv = x["pixel_values"]
        features = model.umgf.vision_backbone(pv.flatten(0, 1)).view(*pv.shape[:2], -1)
    cached = {k: v for k, v in x.items() if k != "pixel_values"} | {"object_features": features}
    loss, grads = _train_step(model, cached, seed=3, frozen_backbone=True)
    torch.testing.assert_close(loss, ref_loss)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        torch.testing.assert_close(grad, ref_grads[name], rtol=1e-4, atol=1e-6, msg=name)
