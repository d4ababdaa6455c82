"""UMGF model: graph semantics (eq 1-8), decoders, ablation switches, loading and remote code."""

from __future__ import annotations

import dataclasses
import inspect
import json
import math
import re
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from helpers import run_without_package
from safetensors.torch import save_file
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForTokenClassification,
    BertModel,
    DistilBertConfig,
)

from modeling_umgf import UMGFConfig, UMGFForTokenClassification, UMGFModel, UMGFProcessor
from modeling_umgf.input_checks import MODEL_INPUT_NAMES, ModelInputs
from modeling_umgf.modeling_umgf import (
    UMGFCrossModalGate,
    UMGFFusionLayer,
    build_vision_backbone,
    first_subtoken_index,
)
from modeling_umgf.multimodal_graph import batch_adjacency
from modeling_umgf.schema import RELEASE_TOKEN_LABELS
from modeling_umgf.tools.tiny_models import TINY_IMAGE, tiny_bert_config, tiny_config, tiny_inputs

TAGS = list(RELEASE_TOKEN_LABELS)


def build(seed: int = 0, **overrides) -> UMGFForTokenClassification:
    torch.manual_seed(seed)
    return UMGFForTokenClassification(tiny_config(**overrides)).eval()


def test_auto_classes_give_the_paper_configuration() -> None:
    config = AutoConfig.for_model("umgf")
    assert isinstance(config, UMGFConfig)
    assert (config.hidden_size, config.num_attention_heads, config.num_fusion_layers, config.dropout) == (
        512,
        8,
        2,
        0.5,
    )
    assert (config.text_config.hidden_size, config.text_config.vocab_size) == (768, 28996)  # bert-base-cased
    assert (config.vision_backbone, config.vision_feature_dim, config.decoder_type) == ("resnet152", 2048, "crf")
    assert [config.id2label[i] for i in range(config.num_labels)] == [
        "O",
        "B-PER",
        "I-PER",
        "B-LOC",
        "I-LOC",
        "B-ORG",
        "I-ORG",
        "B-MISC",
        "I-MISC",
    ]
    model = AutoModelForTokenClassification.from_config(config)
    assert isinstance(model, UMGFForTokenClassification)
    backbone = timm.create_model("resnet152", num_classes=0)
    assert sum(p.numel() for p in model.umgf.vision_backbone.parameters()) == sum(
        p.numel() for p in backbone.parameters()
    )
    assert model.umgf.text_encoder.config.num_hidden_layers == 12
    assert isinstance(AutoModel.from_config(tiny_config()), UMGFModel)


def test_presets_and_bad_values() -> None:
    release = UMGFConfig.from_preset("release")
    assert (release.num_fusion_layers, release.classifier_input) == (6, "concat")
    assert UMGFConfig.from_preset("paper", num_fusion_layers=3).num_fusion_layers == 3
    with pytest.raises(ValueError, match="unknown UMGF preset"):
        UMGFConfig.from_preset("nope")
    with pytest.raises(ValueError, match="decoder_type"):
        UMGFConfig(decoder_type="lstm")
    with pytest.raises(ValueError, match="divisible"):
        UMGFConfig(hidden_size=10, num_attention_heads=3)


def test_gates_equal_the_concatenate_then_linear_formulation() -> None:
    torch.manual_seed(1)
    gate = UMGFCrossModalGate(tiny_config()).eval()
    c_x, c_o = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    adjacency = (torch.rand(2, 5, 3) > 0.5).float()
    r, mean_alpha = gate(c_x, c_o, adjacency)
    # Reference: alpha_ij = sigmoid(W [C_xi ; C_oj] + b) with W = [W1 W2], one pair at a time (eq 3-4).
    weight = torch.cat([gate.w_self.weight, gate.w_other.weight], dim=1)
    expected = c_x.clone()
    expected_alpha = torch.zeros(2, 5, 3)
    for b in range(2):
        for i in range(5):
            for j in range(3):
                alpha = torch.sigmoid(weight @ torch.cat([c_x[b, i], c_o[b, j]]) + gate.w_self.bias)
                expected[b, i] += adjacency[b, i, j] * alpha * c_o[b, j]
                expected_alpha[b, i, j] = adjacency[b, i, j] * alpha.mean()
    torch.testing.assert_close(r, expected)
    torch.testing.assert_close(mean_alpha, expected_alpha)


def test_padding_tokens_and_objects_does_not_change_real_outputs() -> None:
    model = build()
    x = tiny_inputs(batch=2, tokens=8, objects=3)
    ref = model(**x)
    padded = {
        "input_ids": torch.nn.functional.pad(x["input_ids"], (0, 4)),
        "attention_mask": torch.nn.functional.pad(x["attention_mask"], (0, 4)),
        "word_ids": torch.nn.functional.pad(x["word_ids"], (0, 4), value=-1),
        "pixel_values": torch.cat([x["pixel_values"], torch.randn(2, 2, 3, TINY_IMAGE, TINY_IMAGE)], 1),
        "object_mask": torch.nn.functional.pad(x["object_mask"], (0, 2)),
        # padded objects get edges here on purpose: the object mask alone must keep them out
        "inter_modal_adjacency": torch.nn.functional.pad(x["inter_modal_adjacency"], (0, 2, 0, 4), value=1),
    }
    out = model(**padded)
    torch.testing.assert_close(out.logits[ref.word_mask], ref.logits[ref.word_mask], atol=1e-5, rtol=1e-5)
    assert torch.equal(out.predictions, ref.predictions)


def test_zero_objects_equals_the_model_without_visual_branch() -> None:
    full = build()
    text_only = UMGFForTokenClassification(tiny_config(use_visual=False)).eval()
    missing, unexpected = text_only.load_state_dict(full.state_dict(), strict=False)
    assert not missing and all(
        k.startswith(("umgf.vision_backbone", "umgf.visual_mlp", "umgf.layers")) for k in unexpected
    )
    x = tiny_inputs()
    text = {k: x[k] for k in ("input_ids", "attention_mask", "word_ids")}
    expected = text_only(**text).logits
    no_objects = {"pixel_values": x["pixel_values"][:, :0], "object_mask": x["object_mask"][:, :0]}
    torch.testing.assert_close(full(**text).logits, expected)
    torch.testing.assert_close(full(**text, **no_objects).logits, expected)
    all_padding = {"pixel_values": x["pixel_values"], "object_mask": torch.zeros_like(x["object_mask"])}
    torch.testing.assert_close(full(**text, **all_padding).logits, expected)


def test_edges_are_respected_in_one_fusion_layer() -> None:
    torch.manual_seed(0)
    model = UMGFModel(tiny_config(num_fusion_layers=1)).eval()
    x = tiny_inputs(batch=1, tokens=6, objects=2)
    adjacency = torch.zeros(1, 6, 2, dtype=torch.long)
    adjacency[0, 2, 1] = 1  # only token 2 is linked, to object 1
    args = {k: x[k] for k in ("input_ids", "attention_mask", "pixel_values", "object_mask")}
    a = model(**args, inter_modal_adjacency=adjacency).last_hidden_state
    args["pixel_values"] = torch.randn_like(args["pixel_values"])
    b = model(**args, inter_modal_adjacency=adjacency).last_hidden_state
    unlinked = [t for t in range(6) if t != 2]
    torch.testing.assert_close(a[0, unlinked], b[0, unlinked])
    assert (a[0, 2] - b[0, 2]).abs().max() > 1e-4


def test_word_level_decoding_reads_first_subtokens() -> None:
    word_ids = torch.tensor([[-1, 0, 1, 1, 2, -1], [-1, 0, 0, -1, -1, -1]])
    first, mask = first_subtoken_index(word_ids, 3)
    assert first.tolist() == [[1, 2, 4], [1, 0, 0]]
    assert mask.tolist() == [[True, True, True], [True, False, False]]
    model, ids = build(), torch.tensor([[2, 5, 6, 7, 3]])
    with pytest.raises(ValueError, match="batch item 0"):
        model(input_ids=ids[:, :4], word_ids=torch.tensor([[-1, 1, 2, -1]]))
    with pytest.raises(ValueError, match="contiguous"):
        model(input_ids=ids, word_ids=torch.tensor([[-1, 0, 1, 0, -1]]))


def test_loss_is_the_crf_negative_log_likelihood_of_the_words() -> None:
    model = build()
    x = tiny_inputs()
    labels = torch.tensor([[1, 2, 0, 3, 4], [5, 6, 0, 7, -100]])
    out = model(**x, labels=labels)
    _, word_mask = first_subtoken_index(x["word_ids"], 5)
    expected = -model.crf.log_likelihood(out.logits, labels.clamp(min=0), word_mask).mean()
    torch.testing.assert_close(out.loss, expected)
    assert torch.equal(out.predictions, model.crf.decode(out.logits, word_mask))
    with pytest.raises(ValueError, match="batch item 0 word 4"):  # the rows swapped
        model(**x, labels=torch.tensor([[1, 2, 0, 3, 4], [5, 6, 0, 7, -100]])[:, :5].roll(1, 0))
    softmax = build(decoder_type="softmax")
    out = softmax(**x, labels=labels)
    logits = out.logits[word_mask]
    torch.testing.assert_close(out.loss, torch.nn.functional.cross_entropy(logits, labels[word_mask]))


def test_ablation_switches_change_the_architecture() -> None:
    def names(**overrides) -> set[str]:
        return {n for n, _ in build(**overrides).named_parameters()}

    paper = names()
    assert any(".visual.attention." in n for n in paper) and any(".visual.gate." in n for n in paper)
    assert not any(".visual.attention." in n for n in names(visual_self_attention=False))
    assert not any(".visual." in n for n in names(share_modality_parameters=True))
    assert not any(n.startswith("crf.") for n in names(decoder_type="softmax"))
    text_only = names(use_visual=False)
    assert not any("vision_backbone" in n or "visual" in n or ".gate." in n for n in text_only)
    assert not any(
        n.startswith("umgf.layers") for n in names(use_visual=False, num_fusion_layers=0, classifier_input="text")
    )
    assert build(classifier_input="concat").classifier.in_features == 32 + 16
    assert build(classifier_input="text").classifier.in_features == 32

    # Shared parameters behave exactly like independent ones whose visual copy equals the text copy.
    shared = build(seed=1, share_modality_parameters=True)
    independent = UMGFForTokenClassification(tiny_config()).eval()
    state = shared.state_dict()
    for key in list(state):
        if ".text." in key and key.startswith("umgf.layers"):
            state[key.replace(".text.", ".visual.")] = state[key]
    assert not independent.load_state_dict(state, strict=True).missing_keys
    x = tiny_inputs()
    torch.testing.assert_close(shared(**x).logits, independent(**x).logits)
    # Without visual self-attention, objects do not see each other before fusion: outputs differ.
    assert not torch.allclose(build(visual_self_attention=False)(**x).logits, build()(**x).logits)


def test_gradients_reach_every_part() -> None:
    model = build()
    model.train()
    out = model(**tiny_inputs(), labels=torch.tensor([[1, 2, 0, 3, 4], [5, 6, 0, 7, -100]]))
    out.loss.backward()
    parts = {
        "text encoder": model.umgf.text_encoder.embeddings.word_embeddings.weight,
        "vision backbone": model.umgf.vision_backbone.conv1[0].weight,
        "text gate": model.umgf.layers[0].text.gate.w_self.weight,
        "visual gate": model.umgf.layers[0].visual.gate.w_self.weight,
        "visual attention": model.umgf.layers[0].visual.attention.qkv.weight,
        "crf": model.crf.transitions,
    }
    for name, param in parts.items():
        assert param.grad is not None and param.grad.abs().sum() > 0, name


def test_save_and_load_round_trip(tmp_path: Path) -> None:
    model = build()
    model.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["auto_map"] == {
        "AutoConfig": "configuration_umgf.UMGFConfig",
        "AutoModel": "modeling_umgf.UMGFModel",
        "AutoModelForTokenClassification": "modeling_umgf.UMGFForTokenClassification",
    }
    assert {"model.safetensors", "configuration_umgf.py", "modeling_umgf.py", "crf.py"} <= {
        p.name for p in tmp_path.iterdir()
    }
    x = tiny_inputs()
    loaded = AutoModelForTokenClassification.from_pretrained(tmp_path).eval()
    assert torch.equal(loaded(**x).logits, model(**x).logits)


def test_remote_code_loads_in_a_clean_process(tmp_path: Path) -> None:
    model = build()
    model.save_pretrained(tmp_path / "model")
    x = tiny_inputs()
    torch.save(
        {
            "inputs": x,
            "logits": model(**x).logits,
            "hidden": model.umgf(**{k: v for k, v in x.items() if k != "word_ids"}).last_hidden_state,
        },
        tmp_path / "expected.pt",
    )
    script = textwrap.dedent(f"""
        import torch
        from transformers import AutoModel, AutoModelForTokenClassification
        expected = torch.load({str(tmp_path / "expected.pt")!r})
        x = expected["inputs"]
        tagger = AutoModelForTokenClassification.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        assert torch.equal(tagger(**x).logits, expected["logits"])
        encoder = AutoModel.from_pretrained({str(tmp_path / "model")!r}, trust_remote_code=True).eval()
        x.pop("word_ids")
        assert torch.equal(encoder(**x).last_hidden_state, expected["hidden"])
        print("REMOTE-OK", type(tagger).__module__)
    """)
    done = run_without_package(script, tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "REMOTE-OK transformers_modules." in done.stdout


def test_composing_pretrained_parts_keeps_their_weights(tmp_path: Path) -> None:
    torch.manual_seed(5)
    bert = BertModel(tiny_bert_config(), add_pooling_layer=False)
    bert.save_pretrained(tmp_path / "bert")
    backbone = timm.create_model("test_resnet")  # with its classifier, as published checkpoints are
    save_file(backbone.state_dict(), tmp_path / "resnet.safetensors")
    model = UMGFForTokenClassification.from_text_vision_pretrained(
        str(tmp_path / "bert"),
        vision_backbone="test_resnet",
        vision_weights=tmp_path / "resnet.safetensors",
        hidden_size=16,
        num_attention_heads=2,
        intermediate_size=32,
    )
    assert model.config.vision_feature_dim == 96 and model.config.text_config.hidden_size == 32
    for name, value in bert.state_dict().items():
        assert torch.equal(model.umgf.text_encoder.state_dict()[name], value), name
    for name, value in model.umgf.vision_backbone.state_dict().items():
        assert torch.equal(backbone.state_dict()[name], value), name
    # And it survives a save / load through the auto classes.
    model.save_pretrained(tmp_path / "umgf")
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path / "umgf")
    assert torch.equal(reloaded.umgf.vision_backbone.conv1[0].weight, backbone.conv1[0].weight)
    text_only = UMGFForTokenClassification.from_text_vision_pretrained(
        str(tmp_path / "bert"), vision_backbone=None, hidden_size=16, num_attention_heads=2
    )
    assert not text_only.config.use_visual


def test_bad_visual_inputs_give_clear_errors() -> None:
    model = build()
    x = tiny_inputs()
    with pytest.raises(ValueError, match="either pixel_values or object_features"):
        model(**x, object_features=torch.zeros(2, 3, 96))
    x.pop("pixel_values")
    with pytest.raises(ValueError, match=r"object_features must be \[batch, objects, 96\]"):
        model(**x, object_features=torch.zeros(2, 3, 50))
    released = build()
    released.umgf.vision_backbone = None
    with pytest.raises(ValueError, match="give object_features instead"):
        released(**tiny_inputs())
    with pytest.raises(ValueError, match="inter_modal_adjacency must be"):
        model(
            **{**x, "inter_modal_adjacency": x["inter_modal_adjacency"][:, :3]}, object_features=torch.zeros(2, 3, 96)
        )


def test_object_features_equal_encoding_the_crops() -> None:
    model = build()
    x = tiny_inputs()
    features = model.umgf.encode_objects(x["pixel_values"], x["object_mask"])
    with_features = dict(x, object_features=features)
    with_features.pop("pixel_values")
    torch.testing.assert_close(model(**with_features).logits, model(**x).logits)


def fusion_linears(model: UMGFForTokenClassification) -> dict[str, torch.nn.Linear]:
    """The linear maps UMGF initialises itself: everything but the text encoder and the vision backbone."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, torch.nn.Linear) and not name.startswith(("umgf.text_encoder", "umgf.vision_backbone"))
    }


def assert_uniform(values: torch.Tensor, bound: float, name: str) -> None:
    """Drawn from U(-bound, bound): inside it, and reaching near both ends (95 % of the bound for the hundreds of
    weights of a map, half of it for its 9-16 biases)."""
    reach = 0.95 if values.numel() > 100 else 0.5
    assert values.abs().max() <= bound, name
    assert values.max() > reach * bound and values.min() < -reach * bound, name


def test_initialisation_follows_the_config() -> None:
    """normal: N(0, initializer_range) weights and zero biases; xavier_uniform: U(+-sqrt(6 / (in + out))) of each map
    the authors have (q, k, v separately; the gate's [C_i; C'_j] as one 2d -> d map) and zero biases, except the maps that keep PyTorch's own initialisation (the authors' text projection and token-level
    classifier): U(+-1 / sqrt(in)) weights and biases. The CRF starts from U(-0.1, 0.1)."""
    normal = build(initializer_range=0.05, text_node_projection="linear", crf_level="token", token_labels=TAGS)
    for name, linear in fusion_linears(normal).items():
        weight = linear.weight.detach()
        assert 0.04 < float(weight.std()) < 0.06 and abs(float(weight.mean())) < 0.02, name
        assert linear.bias is None or not linear.bias.any(), name
    for param in (normal.crf.start_transitions, normal.crf.end_transitions, normal.crf.transitions):
        assert param.abs().max() <= 0.1 and param.max() > 0.05 and param.min() < -0.05
    for overrides in ({"crf_level": "token", "token_labels": TAGS, "text_node_projection": "linear"}, {}):
        model = build(initializer="xavier_uniform", **overrides)
        defaults = {"umgf.text_mlp.0", "classifier"} if overrides else set()
        for name, linear in fusion_linears(model).items():
            fan_out, fan_in = linear.weight.shape
            if name in defaults:
                assert_uniform(linear.weight, 1 / math.sqrt(fan_in), name)
                assert_uniform(linear.bias, 1 / math.sqrt(fan_in), name)
            else:
                # as the authors' separate maps: each of q, k, v is d -> d; each gate half is half of a 2d -> d map
                if name.endswith("attention.qkv"):
                    fan_out = fan_in
                elif ".gate.w_" in name:
                    fan_in = 2 * fan_in
                assert_uniform(linear.weight, math.sqrt(6 / (fan_in + fan_out)), name)
                assert linear.bias is None or not linear.bias.any(), name


def test_given_text_encoder_and_backbone_keep_their_weights() -> None:
    """Modules built by the caller (pretrained, or any weights) are not initialised again by UMGF."""
    config = tiny_config(vision_projection=True, vision_feature_dim=40)
    text = BertModel(config.text_config, add_pooling_layer=False)
    backbone = timm.create_model("test_resnet", num_classes=40)  # the projection: a trained 96 -> 40 classifier
    with torch.no_grad():
        for param in [*text.parameters(), *backbone.parameters()]:
            param.uniform_(2.0, 3.0)
    expected = {f"text_encoder.{k}": v.clone() for k, v in text.state_dict().items()}
    expected |= {f"vision_backbone.{k}": v.clone() for k, v in backbone.state_dict().items()}
    model = UMGFForTokenClassification(config, text_encoder=text, vision_backbone=backbone)
    state = model.umgf.state_dict()
    for name, value in expected.items():
        assert torch.equal(state[name], value), name


@pytest.mark.parametrize("field", ["dropout", "attention_dropout", "activation_dropout", "classifier_dropout", None])
def test_each_dropout_acts_in_training_only(field: str | None) -> None:
    """With only ``field`` non-zero, the outputs of a training-mode forward differ from eval mode; with none, they
    are equal (object features: the backbone's BatchNorm would differ in training too)."""
    rates = dict.fromkeys(("dropout", "attention_dropout", "activation_dropout", "classifier_dropout"), 0.0)
    if field:
        rates[field] = 0.5
    text = tiny_config().text_config
    text.hidden_dropout_prob = text.attention_probs_dropout_prob = 0.0  # BERT's own dropout is BERT's business
    model = build(text_config=text, visual_value_projection=False, **rates)  # eq 2: dropout on the attention only
    x = tiny_inputs()
    x["object_features"] = torch.randn(2, 3, 96, generator=torch.Generator().manual_seed(0))
    del x["pixel_values"]
    with torch.no_grad():
        evaluated = model(**x).logits
        model.train()
        trained = model(**x).logits
    assert torch.equal(trained, evaluated) == (field is None)


def test_default_word_ids_and_masks() -> None:
    """Without ``word_ids`` every attended token is a word; without ``attention_mask`` every token is real;
    without ``object_mask`` every object is real; ``inputs_embeds`` give the outputs of their ``input_ids``."""
    model, x = build(), tiny_inputs(batch=2, tokens=6, objects=2)
    ids, mask = x["input_ids"].clamp(min=1), x["attention_mask"]
    objects = {"pixel_values": x["pixel_values"], "inter_modal_adjacency": x["inter_modal_adjacency"]}
    token_words = torch.where(mask.bool(), mask.cumsum(1) - 1, -1)
    embeds = model.umgf.text_encoder.get_input_embeddings()(ids)
    all_real = torch.ones_like(mask)
    with torch.no_grad():
        for text in ({"input_ids": ids}, {"inputs_embeds": embeds}):
            ref = model(input_ids=ids, attention_mask=mask, word_ids=token_words, **objects)
            out = model(**text, attention_mask=mask, **objects)
            torch.testing.assert_close(out.logits, ref.logits)
            assert torch.equal(out.predictions, ref.predictions)
            ref = model(input_ids=ids, attention_mask=all_real, word_ids=all_real.cumsum(1) - 1, **objects)
            torch.testing.assert_close(model(**text, **objects).logits, ref.logits)
            with_mask = model(**text, **objects, object_mask=torch.ones(2, 2, dtype=torch.long)).logits
            torch.testing.assert_close(with_mask, ref.logits)
            encoded = model.umgf(**text, **objects).last_hidden_state
            torch.testing.assert_close(
                encoded, model.umgf(input_ids=ids, attention_mask=all_real, **objects).last_hidden_state
            )


def test_new_input_embeddings_are_the_text_encoders() -> None:
    model, ids = build(), torch.tensor([[2, 7, 9, 3]])
    embeddings = torch.nn.Embedding(120, 32)
    model.set_input_embeddings(embeddings)
    assert model.get_input_embeddings() is embeddings is model.umgf.text_encoder.embeddings.word_embeddings
    with torch.no_grad():
        expected = model(inputs_embeds=embeddings(ids)).logits
        torch.testing.assert_close(model(input_ids=ids).logits, expected)


def test_outputs_hold_what_was_asked() -> None:
    """Gates only with ``output_gates``; a loss only with labels; in training with labels, no decoding."""
    model, x = build(), tiny_inputs()
    labels = torch.tensor([[1, 2, 0, 3, 4], [5, 6, 0, 7, -100]])
    out = model(**x)
    assert out.gates is None and out.loss is None and out.predictions is not None
    assert model.umgf(**x).gates is None
    gates = model.umgf(**x, output_gates=True).gates
    assert len(gates) == 2 and all(torch.equal(a, b) for a, b in zip(gates, model(**x, output_gates=True).gates))
    model.train()
    trained = model(**x, labels=labels)
    assert trained.predictions is None and trained.loss is not None
    unlabelled = model(**x)
    assert torch.equal(unlabelled.predictions, model.crf.decode(unlabelled.logits, trained.word_mask, pad_value=-100))


def test_loss_of_one_word_and_of_no_word_sentences() -> None:
    """One word: -log p(y) = -(s_y - logsumexp_k s_k) with s_k = start_k + emission_k + end_k (eq 9-10). A batch
    without any word (only special tokens) has nothing to score: the loss is 0, and still differentiable."""
    model = build()
    ids = torch.tensor([[2, 5, 3], [2, 7, 3]])
    labels = torch.tensor([[4], [0]])
    out = model(input_ids=ids, word_ids=torch.tensor([[-1, 0, -1]] * 2), labels=labels)
    crf = model.crf
    scores = crf.start_transitions + out.logits[:, 0] + crf.end_transitions
    expected = -(scores.gather(1, labels) - scores.logsumexp(1, keepdim=True)).mean()
    torch.testing.assert_close(out.loss, expected)
    empty = model(input_ids=ids, word_ids=torch.full((2, 3), -1), labels=torch.zeros(2, 0, dtype=torch.long))
    assert empty.loss.item() == 0.0 and empty.loss.requires_grad and empty.predictions.shape == (2, 0)


def test_a_fusion_layer_without_any_of_its_visual_inputs_is_a_transformer_layer() -> None:
    torch.manual_seed(0)
    layer = UMGFFusionLayer(tiny_config()).eval()
    h_x, h_o = torch.randn(2, 5, 16), torch.randn(2, 3, 16)
    text_mask, object_mask = torch.ones(2, 5, dtype=torch.bool), torch.ones(2, 3, dtype=torch.bool)
    adjacency = torch.ones(2, 5, 3)
    text_only = layer(h_x, text_mask)[0]
    for missing in range(3):
        visual = [h_o, object_mask, adjacency]
        visual[missing] = None
        out, objects, gates = layer(h_x, text_mask, *visual)
        assert objects is None and gates is None
        torch.testing.assert_close(out, text_only)
    assert not torch.allclose(layer(h_x, text_mask, h_o, object_mask, adjacency)[0], text_only)


def test_save_pretrained_names_the_flat_modules_and_passes_its_arguments_on(tmp_path: Path, monkeypatch) -> None:
    """The auto_map keeps entries it already had, and names the flat module files also when the classes were
    loaded as remote code (module ``transformers_modules.<hash>.modeling_umgf``); save options reach transformers."""
    model = build()
    model.config.auto_map = {"AutoProcessor": "processing_umgf.UMGFProcessor"}
    monkeypatch.setattr(UMGFModel, "__module__", "transformers_modules.abc123.modeling_umgf")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="200KB")
    saved = json.loads((tmp_path / "sharded" / "config.json").read_text())
    assert saved["auto_map"]["AutoProcessor"] == "processing_umgf.UMGFProcessor"
    assert saved["auto_map"]["AutoModel"] == "modeling_umgf.UMGFModel"
    assert len(list((tmp_path / "sharded").glob("model-*-of-*.safetensors"))) > 1
    model.save_pretrained(tmp_path / "not-main", False)  # is_main_process=False: the config is not written
    assert not (tmp_path / "not-main" / "config.json").exists()


def test_preparing_for_inference_switches_to_eval_channels_last_and_a_frozen_compile(monkeypatch) -> None:
    """optimize_for_inference with the compiler stubbed (test_speed_options.py compiles for real)."""
    model = build()
    model.train()
    x = tiny_inputs()
    with torch.no_grad():
        expected = build()(**x).logits
    calls = []
    monkeypatch.setattr(model.umgf.vision_backbone, "compile", lambda **kwargs: calls.append(kwargs))
    assert model.optimize_for_inference() is model and not model.training
    assert calls == [{"options": {"freezing": True}}]
    convs = [m for m in model.umgf.vision_backbone.modules() if isinstance(m, torch.nn.Conv2d)]
    assert all(conv.weight.is_contiguous(memory_format=torch.channels_last) for conv in convs)
    with torch.no_grad():
        torch.testing.assert_close(model(**x).logits, expected, rtol=1e-5, atol=1e-5)
    model.optimize_for_inference(compile_backbone=False)
    assert len(calls) == 1
    text_only = build(use_visual=False).train()
    assert text_only.optimize_for_inference() is text_only and not text_only.training
    encoder = UMGFModel(tiny_config()).train()  # the base model prepares its own backbone
    assert encoder.optimize_for_inference(compile_backbone=False) is encoder and not encoder.training
    assert all(
        c.weight.is_contiguous(memory_format=torch.channels_last)
        for c in encoder.vision_backbone.modules()
        if isinstance(c, torch.nn.Conv2d)
    )
    assert not model.is_activation_checkpointing


def test_checkpointing_leaves_a_backbone_without_timms_switch_alone() -> None:
    class Pooled(torch.nn.Module):  # a vision backbone that is not timm's: no set_grad_checkpointing
        def __init__(self) -> None:
            super().__init__()
            self.proj = torch.nn.Linear(3, 96)

        def forward(self, crops: torch.Tensor) -> torch.Tensor:
            return self.proj(crops.mean((2, 3)))

    model = UMGFForTokenClassification(tiny_config(), vision_backbone=Pooled())
    model.activation_checkpointing_enable()
    assert all(layer.gradient_checkpointing for layer in model.umgf.layers)
    model.train()
    model(**tiny_inputs(), labels=torch.tensor([[1, 2, 0, 3, 4], [5, 6, 0, 7, -100]])).loss.backward()
    assert model.umgf.vision_backbone.proj.weight.grad.abs().sum() > 0


def test_the_visual_branch_refuses_what_it_cannot_encode() -> None:
    with pytest.raises(ValueError, match=r"^this UMGF model has no visual branch \(config\.use_visual=False\)$"):
        build(use_visual=False).umgf.encode_objects(torch.zeros(1, 1, 3, 8, 8), torch.ones(1, 1))
    released = build()
    released.umgf.vision_backbone = None
    message = (
        "this model's vision backbone was released (vision_backbone=None, e.g. to save memory when training from "
        "cached features): give object_features instead of pixel_values"
    )
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        released.umgf.encode_objects(torch.zeros(1, 1, 3, 8, 8), torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"pixel_values must be \[batch, objects, 3, H, W\], got shape \(1, 3, 8, 8\)"):
        build().umgf.encode_objects(torch.zeros(1, 3, 8, 8), torch.ones(1, 1))
    with pytest.raises(ValueError, match=r"'test_resnet' gives 96-d features, but config\.vision_feature_dim is 50"):
        build_vision_backbone(tiny_config(vision_feature_dim=50))


def test_a_projected_backbone_gives_its_classifier_outputs_and_backbone_kwargs_reach_timm() -> None:
    """vision_projection: the backbone ends with a trainable Linear(num_features, vision_feature_dim); the config's
    timm arguments build the backbone (here max pooling): features equal timm's own model with those weights."""
    config = tiny_config(vision_projection=True, vision_feature_dim=40, vision_backbone_kwargs={"global_pool": "max"})
    torch.manual_seed(0)
    backbone = build_vision_backbone(config).eval()
    reference = timm.create_model("test_resnet", num_classes=40, global_pool="max").eval()
    reference.load_state_dict(backbone.state_dict())
    crops = torch.randn(2, 3, 2 * TINY_IMAGE, 2 * TINY_IMAGE)  # a 2 x 2 map to pool
    with torch.no_grad():
        torch.testing.assert_close(backbone(crops), reference(crops))
        average = timm.create_model("test_resnet", num_classes=40).eval()
        average.load_state_dict(backbone.state_dict())
        assert not torch.allclose(backbone(crops), average(crops))


def test_composed_models_compute_with_their_parts(tmp_path: Path, monkeypatch) -> None:
    """from_text_vision_pretrained: by default ResNet-152 with timm's pretrained weights (timm is stubbed here to
    record the call and build the tiny backbone); the composed model's object features are the backbone's pooled
    features; a text-only composition never builds a backbone; an encoder without a pooler argument is used as is."""
    BertModel(tiny_config().text_config, add_pooling_layer=False).save_pretrained(tmp_path / "bert")
    calls, create = [], timm.create_model

    def recording_create(name, **kwargs):
        calls.append((name, kwargs))
        return create(
            "test_resnet", **{k: v for k, v in kwargs.items() if k not in ("pretrained", "pretrained_cfg_overlay")}
        )

    monkeypatch.setattr(timm, "create_model", recording_create)
    small = {"hidden_size": 16, "num_attention_heads": 2, "intermediate_size": 32}
    model = UMGFForTokenClassification.from_text_vision_pretrained(
        str(tmp_path / "bert"), vision_backbone_kwargs={"global_pool": "max"}, **small
    ).eval()
    assert calls == [
        ("resnet152", {"pretrained": True, "pretrained_cfg_overlay": None, "num_classes": 0, "global_pool": "max"})
    ]
    assert model.config.vision_backbone == "resnet152" and model.config.vision_feature_dim == 96
    crops = torch.randn(1, 2, 3, TINY_IMAGE, TINY_IMAGE)
    with torch.no_grad():
        features = model.umgf.encode_objects(crops, torch.ones(1, 2))
        torch.testing.assert_close(features[0], model.umgf.vision_backbone(crops[0]))
        assert features.shape == (1, 2, 96)
    calls.clear()
    text_only = UMGFForTokenClassification.from_text_vision_pretrained(
        str(tmp_path / "bert"), use_visual=False, **small
    )
    assert not calls and not text_only.config.use_visual and text_only.config.text_config.hidden_size == 32
    out = text_only(input_ids=torch.tensor([[2, 7, 3]]))
    assert out.logits.shape == (1, 3, 9)

    distil = DistilBertConfig(vocab_size=120, dim=32, n_layers=1, n_heads=2, hidden_dim=64, max_position_embeddings=64)
    model = UMGFForTokenClassification(tiny_config(text_config=distil, use_visual=False)).eval()
    ids = torch.tensor([[2, 7, 9, 3]])
    with torch.no_grad():
        expected = model.umgf.text_encoder(input_ids=ids).last_hidden_state
        assert torch.equal(model.umgf(input_ids=ids).text_encoder_hidden_state, expected)


def test_no_attention_row_reaches_the_kernel_fully_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A tweet without objects beside one with objects: its object self-attention (eq 2) gets every key allowed,
    never a row without keys (NaN or 0 depending on the SDPA kernel), and the tweet with objects gets exactly its
    real objects, as when it is alone."""
    from modeling_umgf.modeling_umgf import UMGFSelfAttention

    masks: list[torch.Tensor] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(*args: torch.Tensor, attn_mask: torch.Tensor, **kwargs: object) -> torch.Tensor:
        masks.append(attn_mask)
        return sdpa(*args, attn_mask=attn_mask, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    torch.manual_seed(0)
    attention = UMGFSelfAttention(tiny_config(), value_projection=True).eval()
    hidden = torch.randn(2, 3, tiny_config().hidden_size)
    key_mask = torch.tensor([[True, True, False], [False, False, False]])
    both = attention(hidden, key_mask)
    assert masks[0][:, 0, 0].tolist() == [[True, True, False], [True, True, True]]
    torch.testing.assert_close(both[:1], attention(hidden[:1], key_mask[:1]))


@pytest.mark.parametrize("link_special_tokens", [False, True])
def test_batch_edges_join_real_tokens_and_real_objects(link_special_tokens: bool) -> None:
    """Edge by edge: given edges between a real token and a real object, and with ``link_special_tokens`` every
    real special token (word id -1) <-> every real object; no edge given means every real pair."""
    torch.manual_seed(0)
    token_mask = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 0, 0, 0]]).bool()
    word_ids = torch.tensor([[-1, 0, 1, 1, -1, -1], [-1, 0, -1, -1, -1, -1]])
    object_mask = torch.tensor([[1, 1, 0], [0, 1, 1]]).bool()
    given = torch.randint(0, 2, (2, 6, 3))
    edges = batch_adjacency(token_mask, object_mask, given, word_ids, link_special_tokens)
    every_pair = batch_adjacency(token_mask, object_mask)
    for b, t, o in torch.cartesian_prod(torch.arange(2), torch.arange(6), torch.arange(3)).tolist():
        real = bool(token_mask[b, t] and object_mask[b, o])
        linked = bool(given[b, t, o]) or (link_special_tokens and int(word_ids[b, t]) < 0)
        assert bool(edges[b, t, o]) == (real and linked), (b, t, o)
        assert bool(every_pair[b, t, o]) == real, (b, t, o)


def test_the_model_input_names_are_the_processors_and_the_forward_signatures() -> None:
    """One list: the processor returns and the token classifier's signature spells out `MODEL_INPUT_NAMES`."""
    assert list(UMGFProcessor.model_input_names) == list(MODEL_INPUT_NAMES)
    parameters = list(inspect.signature(UMGFForTokenClassification.forward).parameters)
    inputs = [name for name in parameters if name in {field.name for field in dataclasses.fields(ModelInputs)}]
    assert sorted(inputs) == sorted([*MODEL_INPUT_NAMES, "inputs_embeds"])
    assert set(parameters) - set(inputs) == {"self", "output_gates", "kwargs"}
