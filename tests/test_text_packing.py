"""Padding-free text encoding (modeling_umgf/text_packing.py) gives BERT's padded outputs.

The independent reference is BERT run on each sequence alone, with no padding at all: packing must give
every real token that output, whatever the padding side, token types, or attention kernel.
"""

from __future__ import annotations

import pytest
import torch
from conftest import tiny_bert_config, tiny_config
from transformers import BertModel, DataCollatorWithFlattening, RobertaConfig, RobertaModel
from transformers.masking_utils import create_bidirectional_mask, find_packed_sequence_indices

from modeling_umgf import UMGFForTokenClassification
from modeling_umgf.text_packing import MIN_SAVING, can_pack, encode_packed, pack_rows

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


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@pytest.mark.parametrize("left", [False, True])
def test_packed_outputs_equal_each_sequence_encoded_alone(attn: str, left: bool) -> None:
    encoder = tiny_bert(attn)
    x = ragged(LENGTHS, width=12, left=left)
    with torch.no_grad():
        hidden = encode_packed(encoder, x["attention_mask"], x["input_ids"], token_type_ids=x["token_type_ids"])
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


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_transformers_packed_sequences_are_not_separated_for_bert_on_eager_or_sdpa(attn: str) -> None:
    """Why text_packing.py builds its own mask: `DataCollatorWithFlattening` packs sequences into one row with
    restarting ``position_ids`` and no attention mask. transformers finds the sequences in such position ids
    (`find_packed_sequence_indices`) only for causal masks; BERT builds its mask with `create_bidirectional_mask`,
    which does not look at them, so on eager/SDPA attention every token attends to every packed sequence."""
    encoder = tiny_bert(attn)
    x = ragged([7, 5, 9], width=9)
    sequences = [x["input_ids"][b, : int(x["attention_mask"][b].sum())].tolist() for b in range(3)]
    flat = DataCollatorWithFlattening(return_tensors="pt")([{"input_ids": ids} for ids in sequences])
    assert flat["position_ids"].tolist() == [[*range(7), *range(5), *range(9)]]
    assert find_packed_sequence_indices(flat["position_ids"]).tolist() == [[0] * 7 + [1] * 5 + [2] * 9]
    embeds = torch.zeros(1, 21, 32)
    mask = create_bidirectional_mask(config=encoder.config, inputs_embeds=embeds, attention_mask=None)
    assert mask is None or not mask.any()  # no blocking between the sequences
    with torch.no_grad():
        flattened = encoder(input_ids=flat["input_ids"], position_ids=flat["position_ids"]).last_hidden_state[0]
        packed = encode_packed(encoder, x["attention_mask"], x["input_ids"])
        assert packed is not None
        for b, (start, n) in enumerate(zip((0, 7, 12), (7, 5, 9))):
            single = encoder(input_ids=torch.tensor([sequences[b]])).last_hidden_state[0]
            torch.testing.assert_close(packed[b, :n], single, rtol=1e-5, atol=1e-5)
            # float rounding is ~1e-6: these tokens attended to the other sequences
            assert (flattened[start : start + n] - single).abs().max() > 1e-3
        everything = encoder(
            input_ids=flat["input_ids"], position_ids=flat["position_ids"], attention_mask=torch.ones(1, 21)
        ).last_hidden_state[0]
        torch.testing.assert_close(flattened, everything, rtol=1e-5, atol=1e-5)  # = one 21-token sequence


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


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_the_packed_mask_suits_the_encoders_kernel_dtype_and_device(attn: str) -> None:
    """SDPA gets the boolean block mask; eager attention, which adds the mask to its scores, a mask in the
    encoder's dtype (a float32 mask would turn bfloat16 scores into float32 ones and fail against bfloat16 values)
    made on the inputs' device, whatever the default device (here meta: a mask made there could not be used)."""
    encoder = tiny_bert(attn).to(torch.bfloat16)
    x = ragged(LENGTHS, width=12)
    seen: list[torch.Tensor] = []
    hook = encoder.register_forward_pre_hook(
        lambda _m, _a, kwargs: seen.append(kwargs["attention_mask"]), with_kwargs=True
    )
    with torch.no_grad(), torch.device("meta"):
        hidden = encode_packed(encoder, x["attention_mask"], x["input_ids"], token_type_ids=x["token_type_ids"])
    hook.remove()
    assert hidden is not None and hidden.dtype == torch.bfloat16 and hidden.device.type == "cpu"
    expected = {"sdpa": torch.bool, "eager": torch.bfloat16}[attn]
    assert seen[0].dtype == expected and seen[0].device.type == "cpu"
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
