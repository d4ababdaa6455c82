"""Invariances the model must keep, as properties over random tiny batches (hypothesis).

- Permuting the objects (their features, mask and adjacency columns) leaves every word's output unchanged.
- Padding (tokens at the end, object slots with mask 0 holding NaN, inf or garbage and edges to everything) leaves
  the real outputs unchanged.
- Batch composition: a sample's outputs do not depend on the other samples of its batch (eval mode).
- Objects without edges: a sample whose objects have no edge to any word gets the outputs of the same sample with
  no objects; without visual self-attention ("w/o VCorr"), edgeless objects next to linked ones change nothing
  either. With eq 2 (the paper), objects attend to each other, so an edgeless object does reach the words through
  the objects that have edges: the invariance holds only when no object has an edge.

The model runs in float64 so that the comparisons can be tight: a reordered sum differs by ~1e-16, a real change by
far more. Examples are derandomized, so a run (and a mutation run) always sees the same ones.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from helpers import RELEASE_SWITCHES
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.tools.tiny_models import TINY_IMAGE, tiny_config

PROPERTY = settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
TIGHT = {"rtol": 1e-9, "atol": 1e-9}
VOCAB, FEATURES = 120, 96


CONFIGS = {"paper": {}, "release": RELEASE_SWITCHES}


@functools.cache
def model(name: str = "paper", **overrides) -> UMGFForTokenClassification:
    """A tiny model in float64 whose LayerNorms have random affine maps (at initialisation they are the identity's,
    which would hide a LayerNorm too many or too few)."""
    torch.manual_seed(0)
    net = UMGFForTokenClassification(tiny_config(**CONFIGS[name], **overrides)).double().eval()
    with torch.no_grad():
        for module in net.umgf.layers.modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return net


@dataclass
class Sample:
    """One tweet: sub-token ids and word ids ([CLS] words [SEP]), labels, its objects and their edges."""

    input_ids: torch.Tensor  # [T]
    word_ids: torch.Tensor  # [T], -1 at [CLS] / [SEP]
    labels: torch.Tensor  # [W]
    features: torch.Tensor  # [O, 96]
    pixels: torch.Tensor  # [O, 3, 32, 32]
    adjacency: torch.Tensor  # [T, O] bool, sub-tokens inherit their word's edges

    def without_objects(self, keep: torch.Tensor) -> Sample:
        return Sample(
            self.input_ids, self.word_ids, self.labels, self.features[keep], self.pixels[keep], self.adjacency[:, keep]
        )


@st.composite
def samples(draw, max_objects: int = 3, edges: bool = True) -> Sample:
    pieces = draw(st.lists(st.integers(1, 2), min_size=1, max_size=5))  # sub-tokens of each word
    objects = draw(st.integers(0, max_objects))
    word_ids = torch.tensor([-1] + [w for w, n in enumerate(pieces) for _ in range(n)] + [-1])
    size = len(pieces) * objects
    word_edges = torch.tensor(draw(st.lists(st.booleans(), min_size=size, max_size=size)), dtype=torch.bool)
    word_edges = word_edges.reshape(len(pieces), objects) & edges
    adjacency = torch.zeros(len(word_ids), objects, dtype=torch.bool)
    adjacency[word_ids >= 0] = word_edges[word_ids[word_ids >= 0]]
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    return Sample(
        input_ids=torch.randint(1, VOCAB, (len(word_ids),), generator=g),
        word_ids=word_ids,
        labels=torch.randint(0, 9, (len(pieces),), generator=g),
        features=torch.randn(objects, FEATURES, generator=g, dtype=torch.float64),
        pixels=torch.randn(objects, 3, TINY_IMAGE, TINY_IMAGE, generator=g, dtype=torch.float64),
        adjacency=adjacency,
    )


GARBAGE = st.sampled_from([math.nan, math.inf, -math.inf, 1e30, 0.0])


def collate(
    batch: list[Sample], pixels: bool = False, extra_tokens: int = 0, extra_objects: int = 0, fill: float = 0.0
) -> dict[str, torch.Tensor]:
    """Pad ``batch`` to its longest sample plus ``extra_tokens`` and its most objects plus ``extra_objects``.
    Padded token slots hold random ids and edges to every object, padded object slots hold ``fill``."""
    length = max(len(s.input_ids) for s in batch) + extra_tokens
    objects = max(len(s.features) for s in batch) + extra_objects
    words = max(len(s.labels) for s in batch) + extra_tokens
    g = torch.Generator().manual_seed(length * 100 + objects)
    x = {
        "input_ids": torch.randint(0, VOCAB, (len(batch), length), generator=g),
        "attention_mask": torch.zeros(len(batch), length, dtype=torch.long),
        "word_ids": torch.full((len(batch), length), -1),
        "labels": torch.full((len(batch), words), -100),
        "object_mask": torch.zeros(len(batch), objects, dtype=torch.long),
        "inter_modal_adjacency": torch.ones(len(batch), length, objects, dtype=torch.long),
    }
    visual = torch.full((len(batch), objects, *((3, TINY_IMAGE, TINY_IMAGE) if pixels else (FEATURES,))), fill)
    for b, s in enumerate(batch):
        n, o = len(s.input_ids), len(s.features)
        x["input_ids"][b, :n] = s.input_ids
        x["attention_mask"][b, :n] = 1
        x["word_ids"][b, :n] = s.word_ids
        x["labels"][b, : len(s.labels)] = s.labels
        x["object_mask"][b, :o] = 1
        x["inter_modal_adjacency"][b, :n, :o] = s.adjacency
        visual[b, :o] = s.pixels if pixels else s.features
    x["pixel_values" if pixels else "object_features"] = visual.double()
    return x


def forward(net: UMGFForTokenClassification, x: dict[str, torch.Tensor]):
    with torch.no_grad():
        return net(**x, output_gates=True)  # eval mode: the loss and the Viterbi predictions


def assert_same_words(out, ref, rows: slice = slice(None), words: int | None = None) -> None:
    """``out``'s logits and predictions at ``rows`` (their first ``words`` words) equal ``ref``'s, and so do the
    gates of every edge: ``ref``'s padded with zeros to ``out``'s tokens and objects (padding has no edge)."""
    torch.testing.assert_close(out.logits[rows, :words], ref.logits, **TIGHT)
    assert torch.equal(out.predictions[rows, :words], ref.predictions)
    gates = torch.stack(out.gates)[:, rows] if out.gates else None
    if gates is None:
        assert ref.gates is None
        return
    expected = torch.zeros_like(gates)
    if ref.gates is not None:
        ref_gates = torch.stack(ref.gates)
        expected[:, :, : ref_gates.shape[2], : ref_gates.shape[3]] = ref_gates
    torch.testing.assert_close(gates, expected, **TIGHT)


@PROPERTY
@given(batch=st.lists(samples(), min_size=1, max_size=3), pixels=st.booleans(), data=st.data())
def test_permuting_objects_leaves_the_words_unchanged(batch: list[Sample], pixels: bool, data) -> None:
    x = collate(batch, pixels=pixels, extra_objects=1)
    order = torch.tensor(data.draw(st.permutations(range(x["object_mask"].shape[1]))))
    visual = "pixel_values" if pixels else "object_features"
    permuted = {
        **x,
        visual: x[visual][:, order],
        "object_mask": x["object_mask"][:, order],
        "inter_modal_adjacency": x["inter_modal_adjacency"][:, :, order],
    }
    out, ref = forward(model(), permuted), forward(model(), x)
    ref.gates = tuple(gate[:, :, order] for gate in ref.gates)  # each edge keeps its gate, in its new column
    assert_same_words(out, ref)
    torch.testing.assert_close(out.loss, ref.loss, **TIGHT)


@PROPERTY
@given(
    batch=st.lists(samples(), min_size=1, max_size=3),
    pixels=st.booleans(),
    extra_tokens=st.integers(0, 4),
    extra_objects=st.integers(1, 3),
    fill=GARBAGE,
)
def test_padding_leaves_the_real_outputs_unchanged(
    batch: list[Sample], pixels: bool, extra_tokens: int, extra_objects: int, fill: float
) -> None:
    ref = forward(model(), collate(batch, pixels=pixels))
    out = forward(model(), collate(batch, pixels, extra_tokens, extra_objects, fill))
    assert_same_words(out, ref)
    torch.testing.assert_close(out.loss, ref.loss, **TIGHT)


@PROPERTY
@given(batch=st.lists(samples(), min_size=2, max_size=4), pixels=st.booleans(), name=st.sampled_from(list(CONFIGS)))
def test_a_samples_outputs_do_not_depend_on_its_batch(batch: list[Sample], pixels: bool, name: str) -> None:
    """Also with the authors' switches: a sentence without objects next to sentences with objects."""
    together = forward(model(name), collate(batch, pixels=pixels))
    losses = []
    for b, sample in enumerate(batch):
        alone = forward(model(name), collate([sample], pixels=pixels))
        assert_same_words(together, alone, rows=slice(b, b + 1), words=len(sample.labels))
        losses.append(alone.loss)
    torch.testing.assert_close(together.loss, torch.stack(losses).mean(), **TIGHT)  # the mean over the sentences


@PROPERTY
@given(batch=st.lists(samples(edges=False), min_size=1, max_size=3), pixels=st.booleans())
def test_objects_without_any_edge_change_nothing(batch: list[Sample], pixels: bool) -> None:
    """No object of the batch has an edge: the outputs are those of the same sentences without objects."""
    without = [sample.without_objects(torch.zeros(len(sample.features), dtype=torch.bool)) for sample in batch]
    out, ref = forward(model(), collate(batch, pixels=pixels)), forward(model(), collate(without, pixels=pixels))
    assert_same_words(out, ref)
    torch.testing.assert_close(out.loss, ref.loss, **TIGHT)


@PROPERTY
@given(sample=samples(max_objects=4), pixels=st.booleans(), data=st.data())
def test_without_visual_self_attention_edgeless_objects_change_nothing(sample: Sample, pixels: bool, data) -> None:
    """w/o VCorr: objects never see each other, so objects without edges cannot reach the words at all."""
    count = len(sample.features)
    edgeless = torch.tensor(data.draw(st.lists(st.booleans(), min_size=count, max_size=count)), dtype=torch.bool)
    sample.adjacency = sample.adjacency & ~edgeless
    net = model(visual_self_attention=False)
    out = forward(net, collate([sample], pixels=pixels))
    ref = forward(net, collate([sample.without_objects(~edgeless)], pixels=pixels))
    if out.gates:  # the edgeless objects' columns hold no gate
        gates = torch.zeros_like(torch.stack(out.gates))
        if ref.gates:
            gates[..., ~edgeless] = torch.stack(ref.gates)
        ref.gates = tuple(gates)
    assert_same_words(out, ref)
    torch.testing.assert_close(out.loss, ref.loss, **TIGHT)
