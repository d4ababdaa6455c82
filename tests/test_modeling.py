"""UMGF model: graph semantics (eq 1-8), decoders, ablation switches, loading and remote code."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest
import timm
import torch
from conftest import TINY_IMAGE, run_without_package, tiny_config, tiny_inputs
from safetensors.torch import save_file
from transformers import AutoConfig, AutoModel, AutoModelForTokenClassification, BertConfig, BertModel

from modeling_umgf import UMGFConfig, UMGFForTokenClassification, UMGFModel
from modeling_umgf.modeling_umgf import UMGFCrossModalGate, first_subtoken_index


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
    bert = BertModel(
        BertConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        add_pooling_layer=False,
    )
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
