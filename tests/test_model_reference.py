"""The UMGF forward against the paper's equations written out from the model's parameters.

The reference below takes one sentence at a time with no padding at all, computes attention head by head with an
explicit softmax (eq 1-2), every gate from the concatenated pair ``W [C_i; C'_j]`` (eq 3-6), the FFN (eq 7-8) and
the sinusoidal position encoding from its formula (Vaswani et al. 2017), reading only the weights of the model's
modules. The model computes the same on a padded batch with fused projections, SDPA, broadcast gates and packed
text: any difference beyond float rounding is a bug (or a mutant).
"""

from __future__ import annotations

import math

import pytest
import torch
from helpers import RELEASE_SWITCHES

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.modeling_umgf import (
    UMGFCrossModalGate,
    UMGFFeedForward,
    UMGFFusionLayer,
    UMGFSelfAttention,
    sinusoidal_position_encoding,
)
from modeling_umgf.schema import RELEASE_TOKEN_LABELS
from modeling_umgf.tools.tiny_models import TINY_IMAGE, tiny_config

# float64 throughout, but the position encoding is computed in float32 (then cast), ~1e-8 off its formula
TIGHT = {"rtol": 1e-7, "atol": 1e-7}


def position_encoding(length: int, dim: int) -> torch.Tensor:
    """PE(p, 2i) = sin(p / 10000^(2i/dim)), PE(p, 2i+1) = cos(p / 10000^(2i/dim)), one entry at a time."""
    pe = torch.zeros(length, dim, dtype=torch.float64)
    for p in range(length):
        for c in range(dim):
            angle = p / 10000 ** ((c - c % 2) / dim)
            pe[p, c] = math.sin(angle) if c % 2 == 0 else math.cos(angle)
    return pe


def linear(module: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    return x @ module.weight.T + (module.bias if module.bias is not None else 0)


def layer_norm(module: torch.nn.LayerNorm, x: torch.Tensor, eps: float) -> torch.Tensor:
    mean, var = x.mean(-1, keepdim=True), x.var(-1, unbiased=False, keepdim=True)
    return (x - mean) / torch.sqrt(var + eps) * module.weight + module.bias


def mlp(sequential: torch.nn.Sequential, x: torch.Tensor, output_activation: bool = False) -> torch.Tensor:
    """The node MLP: Linear, ReLU, (dropout), Linear, and with ``output_activation`` a final ReLU."""
    x = linear(sequential[3], torch.relu(linear(sequential[0], x)))
    return torch.relu(x) if output_activation else x


def attention(block: UMGFSelfAttention, h: torch.Tensor, eps: float) -> torch.Tensor:
    """Eq 1-2 on the real nodes ``h`` [N, d]: C = LN(H + MHA(H, H, H)), one head at a time."""
    d, heads = h.shape[-1], block.num_heads
    size = d // heads
    weights, biases = block.qkv.weight, block.qkv.bias
    q, k = h @ weights[:d].T + biases[:d], h @ weights[d : 2 * d].T + biases[d : 2 * d]
    v = h @ weights[2 * d :].T + biases[2 * d :] if block.out is not None else h
    context = torch.zeros_like(h)
    for head in range(heads):
        cols = slice(head * size, (head + 1) * size)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(size)
        context[:, cols] = scores.softmax(-1) @ v[:, cols]
    if block.out is not None:
        context = linear(block.out, context)
    return layer_norm(block.norm, h + context, eps)


def gate(module: UMGFCrossModalGate, c_self: torch.Tensor, c_other: torch.Tensor, edges: torch.Tensor, eps: float):
    """Eq 3-6 pair by pair: R_i = C_i + sum_j A_ij sigmoid(W [C_i; C'_j] + b) * C'_j, and the mean gates. With the
    authors' LayerNorm, R_i = LN(...) for the nodes that have an edge (the others received nothing: C_i)."""
    weight = torch.cat([module.w_self.weight, module.w_other.weight], dim=1)
    fused, alpha = c_self.clone(), torch.zeros(edges.shape, dtype=c_self.dtype)
    for i in range(len(c_self)):
        for j in range(len(c_other)):
            if edges[i, j]:
                a = torch.sigmoid(weight @ torch.cat([c_self[i], c_other[j]]) + module.w_self.bias)
                fused[i] = fused[i] + a * c_other[j]
                alpha[i, j] = a.mean()
    if module.norm is not None:
        linked = edges.any(1)
        fused[linked] = layer_norm(module.norm, fused[linked], eps)
    return fused, alpha


def feed_forward(ffn: UMGFFeedForward, h: torch.Tensor, eps: float) -> torch.Tensor:
    return layer_norm(ffn.norm, h + linear(ffn.fc2, torch.relu(linear(ffn.fc1, h))), eps)


def fusion_layer(layer: UMGFFusionLayer, config, h_x, h_o, edges):
    """One fusion layer (eq 1-8) on a sentence's real tokens [T, d] and real objects [O, d] with edges [T, O]."""
    text, visual, eps = layer.text, layer.visual or layer.text, config.layer_norm_eps
    c_x = attention(text.attention, h_x, eps)
    if h_o is None:
        return feed_forward(text.ffn, c_x, eps), None, None
    c_o = attention(visual.attention, h_o, eps) if config.visual_self_attention else h_o
    r_x, alpha = gate(text.gate, c_x, c_o, edges, eps)
    r_o, _ = gate(visual.gate, c_o, c_x, edges.T, eps)
    return feed_forward(text.ffn, r_x, eps), feed_forward(visual.ffn, r_o, eps), alpha


def reference(model: UMGFForTokenClassification, x: dict, b: int) -> dict:
    """Sentence ``b`` of the batch ``x``, alone and unpadded: fused states, object states, gates and logits."""
    config, umgf = model.config, model.umgf
    tokens = x["attention_mask"][b].bool()
    ids, word_ids, types = x["input_ids"][b, tokens], x["word_ids"][b, tokens], x["token_type_ids"][b, tokens]
    bert = umgf.text_encoder(input_ids=ids[None], token_type_ids=types[None]).last_hidden_state[0]
    h_x = bert + position_encoding(*bert.shape) if config.use_position_encoding else bert
    h_x = linear(umgf.text_mlp[0], h_x) if config.text_node_projection == "linear" else mlp(umgf.text_mlp, h_x)
    h_o, edges = None, None
    objects = x["object_mask"][b].bool()
    if objects.any():
        if "pixel_values" in x:
            features = torch.cat([umgf.vision_backbone(crop[None]) for crop in x["pixel_values"][b, objects]])
        else:
            features = x["object_features"][b, objects]
        h_o = mlp(umgf.visual_mlp, features, config.visual_mlp_output_activation)
        edges = x["inter_modal_adjacency"][b, tokens][:, objects].bool()
        if config.link_special_tokens:
            edges = edges | (word_ids < 0)[:, None]
    gates = []
    for layer in umgf.layers:
        h_x, h_o, alpha = fusion_layer(layer, config, h_x, h_o, edges)
        gates.append(alpha)
    features = {"fused": h_x, "text": bert, "concat": torch.cat([bert, h_x], -1)}[config.classifier_input]
    if config.crf_level == "token":
        logits = linear(model.classifier, features)
    else:
        words = int(word_ids.max()) + 1
        if config.word_readout == "first":
            read = torch.stack([features[int((word_ids == w).nonzero()[0, 0])] for w in range(words)])
        else:
            read = torch.stack([features[word_ids == w].mean(0) for w in range(words)])
        logits = linear(model.classifier, read)
    return {"fused": h_x, "objects": h_o, "gates": gates, "logits": logits}


def batch(pixels: bool = False) -> dict[str, torch.Tensor]:
    """Three sentences of 9, 6 and 3 sub-tokens (5, 3 and 1 words of 1-2 sub-tokens) with 3, 1 and 0 objects, sparse
    edges, token types and labels."""
    g = torch.Generator().manual_seed(4)
    word_ids = torch.tensor(
        [[-1, 0, 1, 1, 2, 3, 4, 4, -1], [-1, 0, 0, 1, 2, -1, -1, -1, -1], [-1, 0, -1, -1, -1, -1, -1, -1, -1]]
    )
    attention_mask = torch.tensor([[1] * 9, [1] * 6 + [0] * 3, [1] * 3 + [0] * 6])
    edges = torch.tensor([[0, 1, 0], [1, 1, 0], [1, 1, 0], [0, 0, 1], [1, 0, 1]], dtype=torch.long)  # word x object
    adjacency = torch.zeros(3, 9, 3, dtype=torch.long)
    adjacency[0, 1:8] = edges[word_ids[0, 1:8]]
    adjacency[1, 1:5, 0] = torch.tensor([1, 1, 0, 1])
    x = {
        "input_ids": torch.randint(1, 120, (3, 9), generator=g) * attention_mask,
        "attention_mask": attention_mask,
        "token_type_ids": torch.randint(0, 2, (3, 9), generator=g) * attention_mask,
        "word_ids": word_ids,
        "object_mask": torch.tensor([[1, 1, 1], [1, 0, 0], [0, 0, 0]]),
        "inter_modal_adjacency": adjacency,
        "labels": torch.tensor([[1, 2, 0, 3, 4], [5, 6, 0, -100, -100], [7, -100, -100, -100, -100]]),
    }
    if pixels:
        x["pixel_values"] = torch.randn(3, 3, 3, TINY_IMAGE, TINY_IMAGE, generator=g, dtype=torch.float64)
        x["pixel_values"][0, 2] = x["pixel_values"][1, 0]  # one box in two tweets: encoded once, used twice
    else:
        x["object_features"] = torch.randn(3, 3, 96, generator=g, dtype=torch.float64)
    return x


CONFIGS = {
    "paper": {},
    "release": {**RELEASE_SWITCHES, "crf_level": "token", "token_labels": list(RELEASE_TOKEN_LABELS)},
    "release-word": {**RELEASE_SWITCHES, "word_readout": "mean", "layer_norm_eps": 0.01},
    "wo-vcorr": {
        "visual_self_attention": False,
        "classifier_input": "text",
        "num_fusion_layers": 1,
        "text_packing": False,
    },
    "wo-ind": {"share_modality_parameters": True, "num_fusion_layers": 3, "layer_norm_eps": 0.01},
    "wo-vcorr-wo-ind": {"visual_self_attention": False, "share_modality_parameters": True},
}


def build(name: str, dtype: torch.dtype = torch.float64) -> UMGFForTokenClassification:
    torch.manual_seed(0)
    return UMGFForTokenClassification(tiny_config(**CONFIGS[name])).to(dtype).eval()


@pytest.mark.parametrize(("name", "pixels"), [("paper", True)] + [(name, False) for name in CONFIGS])
def test_forward_equals_the_equations_written_out(name: str, pixels: bool) -> None:
    model, x = build(name), batch(pixels)
    with torch.no_grad():
        out = model(**x, output_gates=True)
        encoded = model.umgf(**{k: v for k, v in x.items() if k != "labels"})
        expected = [reference(model, x, b) for b in range(3)]
    nll = []
    for b, ref in enumerate(expected):
        tokens, objects = x["attention_mask"][b].bool(), x["object_mask"][b].bool()
        torch.testing.assert_close(out.logits[b, : len(ref["logits"])], ref["logits"], **TIGHT)
        torch.testing.assert_close(encoded.last_hidden_state[b, tokens], ref["fused"], **TIGHT)
        if ref["objects"] is not None:
            torch.testing.assert_close(encoded.visual_hidden_state[b, objects], ref["objects"], **TIGHT)
        assert not encoded.visual_hidden_state[b, ~objects].any()  # padded objects stay zero
        for gates, alpha in zip(out.gates, ref["gates"], strict=True):
            expected_gates = torch.zeros_like(gates[b])
            if alpha is not None:
                expected_gates[: len(alpha)][:, objects] = alpha
            torch.testing.assert_close(gates[b], expected_gates, **TIGHT)
        if model.config.crf_level == "word":  # eq 10 (the token-level loss: test_release.py)
            tags = x["labels"][b, : len(ref["logits"])][None]
            nll.append(-model.crf.log_likelihood(ref["logits"][None], tags, torch.ones_like(tags).bool()))
    if nll:
        torch.testing.assert_close(out.loss, torch.cat(nll).mean(), **TIGHT)  # the mean over the sentences
    embeds = model.umgf.text_encoder.get_input_embeddings()(x["input_ids"])
    with torch.no_grad():
        embedded = model(**{k: v for k, v in x.items() if k != "input_ids"}, inputs_embeds=embeds)
    torch.testing.assert_close(embedded.logits, out.logits, **TIGHT)


def test_sinusoidal_position_encoding_is_the_transformers_formula() -> None:
    for length, dim in ((7, 8), (5, 5), (1, 2)):
        pe = sinusoidal_position_encoding(length, dim, torch.device("cpu"), torch.float64)
        torch.testing.assert_close(pe, position_encoding(length, dim), rtol=0, atol=1e-6)  # float32 inside
    assert sinusoidal_position_encoding(3, 4, torch.device("cpu"), torch.bfloat16).dtype == torch.bfloat16


def run_with_meta_default_device(model: UMGFForTokenClassification, x: dict) -> list:
    """The forward with and without ``object_mask`` / ``attention_mask`` (all real) while torch's default device is
    "meta". Model and inputs stay on the CPU, so a tensor made without the inputs' device lands on meta, holds no
    data, and breaks the forward: what would happen on a GPU with a tensor made on the CPU."""
    plain = {k: v for k, v in x.items() if k not in ("object_mask", "attention_mask", "labels")}
    plain["input_ids"] = plain["input_ids"].clamp(min=1)
    with torch.device("meta"), torch.no_grad():
        return [model(**x), model(**plain), model.umgf(input_ids=plain["input_ids"])]


@pytest.mark.parametrize(("name", "pixels"), [("paper", True), ("release", False), ("release-word", False)])
def test_the_forward_makes_every_tensor_on_the_inputs_device(name: str, pixels: bool) -> None:
    model, x = build(name), batch(pixels)
    on_meta = run_with_meta_default_device(model, x)
    plain = {k: v for k, v in x.items() if k not in ("object_mask", "attention_mask", "labels")}
    plain.update(
        input_ids=x["input_ids"].clamp(min=1),
        object_mask=torch.ones_like(x["object_mask"]),
        attention_mask=torch.ones_like(x["attention_mask"]),
    )
    with torch.no_grad():
        expected = [
            model(**x),
            model(**plain),
            model.umgf(input_ids=plain["input_ids"], attention_mask=plain["attention_mask"]),
        ]
    for out, ref in zip(on_meta[:2], expected[:2], strict=True):
        assert out.logits.device.type == "cpu"
        torch.testing.assert_close(out.logits, ref.logits, rtol=0, atol=0)
        assert torch.equal(out.predictions, ref.predictions)
    torch.testing.assert_close(on_meta[0].loss, expected[0].loss, rtol=0, atol=0)
    torch.testing.assert_close(on_meta[2].last_hidden_state, expected[2].last_hidden_state, rtol=0, atol=0)


@pytest.mark.parametrize("pixels", [False, True], ids=["features", "pixels"])
def test_a_bfloat16_model_takes_float32_inputs(pixels: bool) -> None:
    """Crops and features come from the processor in float32; a bfloat16 model converts them and computes in bfloat16
    (the CRF in float32): its tags and emissions follow the float32 model's."""
    x = batch(pixels)
    x = {k: v.float() if v.is_floating_point() else v for k, v in x.items()}
    full, half = build("paper", torch.float32), build("paper", torch.bfloat16)
    with torch.no_grad():
        ref, out = full(**x), half(**x)
    assert out.logits.dtype == torch.bfloat16 and out.loss.dtype == torch.float32
    torch.testing.assert_close(out.logits.float(), ref.logits, rtol=0.1, atol=0.1)
