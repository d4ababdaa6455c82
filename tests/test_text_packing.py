"""Padding-free text encoding (modeling_umgf/text_packing.py) gives BERT's padded outputs.

The independent reference is BERT run on each sequence alone, with no padding at all: packing must give
every real token that output, whatever the padding side, token types, or attention kernel.
"""

from __future__ import annotations

import re

import pytest
import torch
import transformers
from hypothesis import given, settings
from hypothesis import strategies as st
from packaging.version import Version
from transformers import BertModel, DataCollatorWithFlattening, RobertaConfig, RobertaModel
from transformers.masking_utils import find_packed_sequence_indices

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.text_packing import (
    LIBRARY_PACKING_SINCE,
    MIN_SAVING,
    can_pack,
    choose_packing_mode,
    encode_packed,
    library_separates_packed_sequences,
    pack_rows,
    positions_separate_sequences,
)
from modeling_umgf.tools.tiny_models import tiny_bert_config, tiny_config

LENGTHS = [12, 3, 5, 2, 12, 4, 9]


def tiny_bert(attn: str = "sdpa") -> BertModel:
    torch.manual_seed(0)
    config = tiny_bert_config(
        num_hidden_layers=2,
        num_attention_heads=4,
        type_vocab_size=2,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    config._attn_implementation = attn
    return BertModel(config, add_pooling_layer=False).eval()


def ragged(lengths: list[int], width: int, left: bool = False, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(input_ids)
    types = torch.zeros_like(input_ids)
    for b, n in enumerate(lengths):
        cols = slice(width - n, width) if left else slice(0, n)
        input_ids[b, cols] = torch.randint(1, 120, (n,), generator=g)
        mask[b, cols] = 1
        types[b, cols] = torch.randint(0, 2, (n,), generator=g)
    return {"input_ids": input_ids, "attention_mask": mask, "token_type_ids": types}


def alone(encoder: BertModel, x: dict[str, torch.Tensor], b: int) -> torch.Tensor:
    """BERT on sequence b by itself (no padding), with the position ids its tokens have in the batch."""
    cols = x["attention_mask"][b].bool().nonzero().squeeze(1)
    return encoder(
        input_ids=x["input_ids"][b, cols][None],
        token_type_ids=x["token_type_ids"][b, cols][None],
        position_ids=cols[None],
    ).last_hidden_state[0]


@pytest.mark.parametrize("mode", ["block", "library", "auto"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("left", [False, True])
def test_packed_outputs_equal_each_sequence_encoded_alone(attn: str, left: bool, mode: str) -> None:
    if mode == "library" and not library_separates_packed_sequences():
        pytest.skip(f"transformers {transformers.__version__} < {LIBRARY_PACKING_SINCE}: BERT mixes packed sequences")
    encoder = tiny_bert(attn)
    x = ragged(LENGTHS, width=12, left=left)
    with torch.no_grad():
        hidden = encode_packed(
            encoder, x["attention_mask"], x["input_ids"], token_type_ids=x["token_type_ids"], packing_mode=mode
        )
        assert hidden is not None and hidden.shape == (len(LENGTHS), 12, 32)
        for b in range(len(LENGTHS)):
            real = x["attention_mask"][b].bool()
            torch.testing.assert_close(hidden[b, real], alone(encoder, x, b), rtol=1e-5, atol=1e-5)
            assert not hidden[b, ~real].any()
        # and the padded batch gives the same at real tokens
        padded = encoder(**x).last_hidden_state
    real = x["attention_mask"].bool()
    torch.testing.assert_close(hidden[real], padded[real], rtol=1e-5, atol=1e-5)


def test_packed_inputs_embeds_and_several_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    """Sequences that do not fit one row are spread over several; inputs_embeds are packed like ids."""
    import modeling_umgf.text_packing as text_packing

    monkeypatch.setattr(text_packing, "ROW_CAPACITY", 14)  # rows of 14 slots: 12 | 3+5+2 | 12 | 4+9
    assert pack_rows(LENGTHS, 14) == [0, 1, 1, 1, 2, 3, 3]
    encoder = tiny_bert()
    x = ragged(LENGTHS, width=12)
    embeds = encoder.get_input_embeddings()(x["input_ids"])
    with torch.no_grad():
        hidden = encode_packed(encoder, x["attention_mask"], inputs_embeds=embeds)
        padded = encoder(inputs_embeds=embeds, attention_mask=x["attention_mask"]).last_hidden_state
    real = x["attention_mask"].bool()
    torch.testing.assert_close(hidden[real], padded[real], rtol=1e-5, atol=1e-5)


def test_pack_rows_matches_a_brute_force_layout() -> None:
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        lengths = torch.randint(0, 20, (int(torch.randint(1, 12, (1,), generator=g)),), generator=g).tolist()
        capacity = max(max(lengths), 1) + int(torch.randint(0, 30, (1,), generator=g))
        expected, row, used = [], 0, 0
        for n in lengths:  # a new row exactly when the current one has tokens and n would overflow it
            if used > 0 and used + n > capacity:
                row, used = row + 1, 0
            expected.append(row)
            used += n
        assert pack_rows(lengths, capacity) == expected
        fills = [sum(n for n, r in zip(lengths, expected) if r == k) for k in set(expected)]
        assert max(fills) <= capacity


def test_no_packing_when_it_saves_too_little() -> None:
    encoder = tiny_bert()
    x = ragged([12, 12, 11, 12], width=12)  # 47 of 48 slots are real
    assert MIN_SAVING > 1 - 47 / 48
    assert encode_packed(encoder, x["attention_mask"], x["input_ids"]) is None


def test_only_bert_encoders_on_eager_or_sdpa_are_packed() -> None:
    assert can_pack(tiny_bert("sdpa")) and can_pack(tiny_bert("eager"))
    roberta = RobertaModel(
        RobertaConfig(vocab_size=120, hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
        add_pooling_layer=False,
    )
    assert not can_pack(roberta)  # RoBERTa's position ids start after its padding index: not column indices


def model_inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """A batch worth packing (tokens 0..n-1 real, every word one sub-token) with two objects per tweet."""
    x = ragged(LENGTHS, width=12, seed=seed)
    del x["token_type_ids"]
    word_ids = torch.full_like(x["input_ids"], -1)
    labels = torch.full((len(LENGTHS), 10), -100)
    g = torch.Generator().manual_seed(seed)
    for b, n in enumerate(LENGTHS):
        word_ids[b, 1 : n - 1] = torch.arange(n - 2)
        labels[b, : n - 2] = torch.randint(0, 9, (n - 2,), generator=g)
    return {
        **x,
        "word_ids": word_ids,
        "labels": labels,
        "object_features": torch.rand(len(LENGTHS), 2, 96, generator=g),
    }


@pytest.mark.parametrize("preset_overrides", [{}, {"classifier_input": "concat"}])
def test_model_with_packing_matches_the_padded_model_in_outputs_loss_and_gradients(
    preset_overrides: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    import modeling_umgf.modeling_umgf as modeling

    packed_calls = []

    def spy(*args, **kwargs):
        packed_calls.append(encode_packed(*args, **kwargs))
        return packed_calls[-1]

    monkeypatch.setattr(modeling, "encode_packed", spy)
    x = model_inputs()
    results = []
    for packing in (True, False):
        torch.manual_seed(0)
        model = UMGFForTokenClassification(tiny_config(text_packing=packing, **preset_overrides)).eval()  # no dropout
        out = model(**x)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
        results.append((out, grads))
    (packed, packed_grads), (padded, padded_grads) = results
    assert len(packed_calls) == 1 and packed_calls[0] is not None  # the first model did encode packed
    word = x["labels"] != -100
    torch.testing.assert_close(packed.logits[word], padded.logits[word], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(packed.loss, padded.loss, rtol=1e-5, atol=1e-5)
    assert torch.equal(packed.predictions, padded.predictions)
    assert packed_grads.keys() == padded_grads.keys()
    for name in padded_grads:
        torch.testing.assert_close(packed_grads[name], padded_grads[name], rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.assumes(
    "transformers", f">= {LIBRARY_PACKING_SINCE} separates, earlier does not", "BERT's packed-sequence mask"
)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_transformers_keeps_packed_sequences_apart_exactly_where_the_library_mode_is_used(attn: str) -> None:
    """transformers' padding-free format (`DataCollatorWithFlattening`: one row, position ids restarting at every
    sequence, no attention mask) gives each sequence its output alone on the versions where `encode_packed` relies
    on it (``library_separates_packed_sequences``), and mixes the sequences on the others, which is why the
    hand-built block mask stays for them."""
    encoder = tiny_bert(attn)
    x = ragged([7, 5, 9], width=9)
    sequences = [x["input_ids"][b, : int(x["attention_mask"][b].sum())].tolist() for b in range(3)]
    flat = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": ids} for ids in sequences])
    assert flat["position_ids"].tolist() == [[*range(7), *range(5), *range(9)]]
    with torch.no_grad():
        flattened = encoder(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).last_hidden_state[0]
        singles = [encoder(input_ids=torch.tensor([ids])).last_hidden_state[0] for ids in sequences]
    worst = max(
        (flattened[s : s + n] - single).abs().max().item() for s, n, single in zip((0, 7, 12), (7, 5, 9), singles)
    )
    installed = transformers.__version__
    if library_separates_packed_sequences():
        assert worst < 1e-5, f"transformers {installed} mixes packed sequences for BERT (difference {worst:.1e})"
    else:  # float rounding is ~1e-6: these tokens attended to the other sequences
        assert worst > 1e-3, f"transformers {installed} keeps packed sequences apart: raise LIBRARY_PACKING_SINCE's use"


def test_the_library_mode_is_chosen_by_the_installed_version() -> None:
    assert not library_separates_packed_sequences("5.24.0")
    assert library_separates_packed_sequences("5.25.0") and library_separates_packed_sequences("5.25.0.dev0")
    assert library_separates_packed_sequences("5.26.1") and library_separates_packed_sequences("6.0.0")
    assert library_separates_packed_sequences() == (Version(transformers.__version__).release >= (5, 25, 0))


def library_segments(real: torch.Tensor, rows: list[int]) -> bool:
    """Brute force: lay the sequences out in their rows with their padded-batch positions (empty slots at 0) and ask
    transformers' own `find_packed_sequence_indices` whether its runs are exactly the sequences."""
    lengths = real.sum(1).tolist()
    width = max(sum(n for n, r in zip(lengths, rows) if r == row) for row in set(rows))
    if width == 0:
        return True  # nothing to pack
    positions = torch.zeros(max(rows) + 1, width, dtype=torch.long)
    owner = torch.full((max(rows) + 1, width), -1)
    fill = [0] * (max(rows) + 1)
    for b, row in enumerate(rows):
        cols = real[b].nonzero().squeeze(1)
        positions[row, fill[row] : fill[row] + len(cols)] = cols
        owner[row, fill[row] : fill[row] + len(cols)] = b
        fill[row] += len(cols)
    found = find_packed_sequence_indices(positions)
    found = torch.zeros_like(positions) if found is None else found
    for row in range(positions.shape[0]):
        for i in range(width):
            for j in range(width):
                same_run = bool(found[row, i] == found[row, j])  # j an empty slot: never the same owner
                if owner[row, i] >= 0 and same_run != bool(owner[row, i] == owner[row, j]):
                    return False
    return True


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 6), st.sampled_from(["right", "left", "hole", "empty"])),
        min_size=1,
        max_size=6,
    ),
    st.integers(4, 20),
)
def test_positions_separate_sequences_exactly_when_transformers_finds_them(
    specs: list[tuple[int, int, str]], capacity: int
) -> None:
    """`positions_separate_sequences` says yes exactly when transformers' own segmentation of the packed position
    ids keeps every real token with the tokens of its sequence and away from the others (brute force)."""
    width = 8
    real = torch.zeros(len(specs), width, dtype=torch.bool)
    for b, (n, gap, kind) in enumerate(specs):
        n = min(n, width)
        if kind == "right":
            real[b, :n] = True
        elif kind == "left":
            real[b, width - n :] = True
        elif kind == "hole" and n >= 2:
            real[b, : n // 2] = True
            real[b, min(width - 1, n // 2 + 1 + gap % 3) : min(width, n + 1 + gap % 3)] = True
    rows = pack_rows(real.sum(1).tolist(), max(width, capacity))
    assert positions_separate_sequences(real, rows) == library_segments(real, rows)


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_auto_mode_takes_the_library_path_where_it_can_and_the_block_mask_elsewhere(
    attn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The mask BERT is given: none (transformers finds the sequences) in "auto" on a transformers that separates
    them and for separable batches; the block mask otherwise. Either way, each sequence gets its output alone."""
    import modeling_umgf.text_packing as text_packing

    encoder = tiny_bert(attn)
    masks: list[object] = []
    hook = encoder.register_forward_pre_hook(
        lambda _m, _a, kwargs: masks.append(kwargs.get("attention_mask")), with_kwargs=True
    )
    right = ragged(LENGTHS, width=12)
    mixed = ragged([3, 9], width=12)  # right-padded 3 then left-padded 9: positions 0,1,2 | 3..11 run on
    mixed["attention_mask"][1] = torch.tensor([0] * 3 + [1] * 9)
    mixed["input_ids"][1] = torch.tensor([0] * 3 + list(range(5, 14)))
    mixed["token_type_ids"][1] = torch.tensor([0] * 3 + [1] * 9)
    cases = [(right, True, None), (mixed, True, "block"), (right, False, "block")]
    installed_separates = library_separates_packed_sequences()
    for x, supported, expected in cases:
        monkeypatch.setattr(text_packing, "library_separates_packed_sequences", lambda supported=supported: supported)
        masks.clear()
        with torch.no_grad():
            hidden = encode_packed(encoder, x["attention_mask"], x["input_ids"], token_type_ids=x["token_type_ids"])
        assert hidden is not None
        assert (masks[0] is None) if expected is None else (masks[0] is not None and masks[0].dim() == 4)
        if installed_separates or expected == "block":
            for b in range(x["input_ids"].shape[0]):
                real = x["attention_mask"][b].bool()
                torch.testing.assert_close(hidden[b, real], alone(encoder, x, b), rtol=1e-5, atol=1e-5)
    hook.remove()


def test_the_library_mode_refuses_what_it_cannot_separate(monkeypatch: pytest.MonkeyPatch) -> None:
    import modeling_umgf.text_packing as text_packing

    encoder = tiny_bert()
    holed = ragged([5, 4, 6], width=8)
    holed["attention_mask"][0] = torch.tensor([1, 1, 0, 1, 1, 1, 0, 0])
    with pytest.raises(ValueError, match=r"packing_mode='library' needs transformers >= 5\.25\.0 \(installed: "):
        encode_packed(encoder, holed["attention_mask"], holed["input_ids"], packing_mode="library")
    monkeypatch.setattr(text_packing, "library_separates_packed_sequences", lambda: False)
    x = ragged(LENGTHS, width=12)
    with pytest.raises(ValueError, match=f"installed: {re.escape(transformers.__version__)}"):
        encode_packed(encoder, x["attention_mask"], x["input_ids"], packing_mode="library")
    with torch.no_grad():  # the block mask separates a sequence with a hole: each token sees its sequence's tokens
        hidden = encode_packed(encoder, holed["attention_mask"], holed["input_ids"], packing_mode="auto")
        padded = encoder(input_ids=holed["input_ids"], attention_mask=holed["attention_mask"]).last_hidden_state
    assert hidden is not None
    real = holed["attention_mask"].bool()
    torch.testing.assert_close(hidden[real], padded[real], rtol=1e-5, atol=1e-5)


def test_packing_at_the_edges() -> None:
    """An empty batch has nothing to pack; one token of one sequence packs into one slot; a batch whose packing saves
    exactly MIN_SAVING of the slots is packed (5 x 4 slots, 16 real tokens in one row of 16)."""
    encoder = tiny_bert()
    assert encode_packed(encoder, torch.zeros(0, 4, dtype=torch.long), torch.zeros(0, 4, dtype=torch.long)) is None
    for lengths, width in (([1], 5), ([4, 4, 4, 2, 2], 4)):
        assert sum(lengths) == (1 - MIN_SAVING) * len(lengths) * width or lengths == [1]
        x = ragged(lengths, width)
        with torch.no_grad():
            hidden = encode_packed(encoder, x["attention_mask"], x["input_ids"], token_type_ids=x["token_type_ids"])
            assert hidden is not None
            for b in range(len(lengths)):
                real = x["attention_mask"][b].bool()
                torch.testing.assert_close(hidden[b, real], alone(encoder, x, b), rtol=1e-5, atol=1e-5)


def test_modules_without_a_bert_configuration_are_not_packed() -> None:
    from types import SimpleNamespace

    assert not can_pack(torch.nn.Linear(2, 2))  # no config at all
    assert not can_pack(SimpleNamespace(config=SimpleNamespace()))  # a config without model type or attention
    assert not can_pack(SimpleNamespace(config=SimpleNamespace(model_type="bert")))


@pytest.mark.parametrize("mode", ["block", "library"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_packed_mask_suits_the_encoders_kernel_dtype_and_device(attn: str, mode: str) -> None:
    """Block mode: SDPA gets the boolean block mask; eager attention, which adds the mask to its scores, a mask in
    the encoder's dtype (a float32 mask would turn bfloat16 scores into float32 ones and fail against bfloat16
    values) made on the inputs' device, whatever the default device (here meta: a mask made there could not be
    used). Library mode: no mask, and position ids on the inputs' device under the same default device."""
    if mode == "library" and not library_separates_packed_sequences():
        pytest.skip(f"transformers {transformers.__version__} < {LIBRARY_PACKING_SINCE}: BERT mixes packed sequences")
    encoder = tiny_bert(attn).to(torch.bfloat16)
    x = ragged(LENGTHS, width=12)
    seen: list[dict[str, torch.Tensor]] = []
    hook = encoder.register_forward_pre_hook(lambda _m, _a, kwargs: seen.append(kwargs), with_kwargs=True)
    with torch.no_grad(), torch.device("meta"):
        hidden = encode_packed(
            encoder, x["attention_mask"], x["input_ids"], token_type_ids=x["token_type_ids"], packing_mode=mode
        )
    hook.remove()
    assert hidden is not None and hidden.dtype == torch.bfloat16 and hidden.device.type == "cpu"
    assert seen[0]["position_ids"].device.type == "cpu"
    if mode == "block":
        expected = {"sdpa": torch.bool, "eager": torch.bfloat16}[attn]
        assert seen[0]["attention_mask"].dtype == expected and seen[0]["attention_mask"].device.type == "cpu"
    else:
        assert "attention_mask" not in seen[0]
    with torch.no_grad():
        for b in range(len(LENGTHS)):
            real = x["attention_mask"][b].bool()
            torch.testing.assert_close(hidden[b, real], alone(encoder, x, b), rtol=0.02, atol=0.02)


def test_host_indices_go_to_a_gpu_through_pinned_memory_without_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    """The packing's index tensors reach a CUDA device by a pinned, non-blocking copy (emulated: the copies are
    recorded, not made), and any other device by a plain copy."""
    from modeling_umgf.text_packing import _to_device

    calls: list[object] = []
    monkeypatch.setattr(torch.Tensor, "pin_memory", lambda self: calls.append("pin") or self)
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *args, **kwargs: calls.append((args, kwargs)) or self)
    cuda, meta = torch.device("cuda"), torch.device("meta")
    _to_device(torch.arange(3), cuda)
    _to_device(torch.arange(3), meta)
    assert calls == ["pin", ((cuda,), {"non_blocking": True}), ((meta,), {})]


@pytest.mark.parametrize("supported", [True, False])
@pytest.mark.parametrize("separable", [True, False])
@pytest.mark.parametrize("device_type", ["cpu", "cuda", "xpu"])
def test_the_packing_mode_follows_its_rule(
    supported: bool, separable: bool, device_type: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rule of the module doc, written out: "block" is always taken as asked; "library" is taken when the installed
    transformers separates packed sequences and the batch's position ids can, else refused; "auto" is "library"
    exactly on a CPU where both hold (on an accelerator the library's search for the sequences would read the device
    back once more per pass)."""
    import modeling_umgf.text_packing as text_packing

    monkeypatch.setattr(text_packing, "library_separates_packed_sequences", lambda: supported)
    assert choose_packing_mode("block", separable, device_type) == "block"
    both = supported and separable
    assert choose_packing_mode("auto", separable, device_type) == (
        "library" if both and device_type == "cpu" else "block"
    )
    if both:
        assert choose_packing_mode("library", separable, device_type) == "library"
    else:
        with pytest.raises(ValueError, match="packing_mode='library' needs transformers"):
            choose_packing_mode("library", separable, device_type)
