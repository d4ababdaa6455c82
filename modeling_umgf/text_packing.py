"""Padding-free ("packed") text encoding for BERT encoders.

Tweets are short and uneven: on Twitter-2017 a batch of 16 holds about 20 real sub-tokens per tweet but is
padded to its longest tweet (about 35), so nearly half of BERT's work is spent on padding. Packing lays the
real tokens of several sequences side by side in a few rows, gives each token the position id it has in the
padded batch, and masks attention block-diagonally, so that every token attends to exactly the tokens it
attends to in the padded batch. The outputs at real tokens are the padded outputs up to float rounding, and
no linear layer runs on padding (BERT forward + backward on 16 real tweets: 1.4x faster on 2 CPU cores).

Why by hand (checked on transformers 5.24): transformers' padding-free format, `DataCollatorWithFlattening`,
concatenates a batch into one row whose ``position_ids`` restart at every sequence, with no attention mask.
Only two places keep such packed sequences apart: the flash-attention kernels (``_flash_attention_forward``
derives the sequence boundaries from the position ids, or takes the collator's ``cu_seq_lens``), which need a
GPU, and the causal masks: `masking_utils.create_causal_mask` calls `find_packed_sequence_indices` on the
position ids when no attention mask is given. BERT is bidirectional: `BertModel` builds its mask with
`create_bidirectional_mask`, which is not given the position ids, so on eager and SDPA attention every token of
the row attends to every packed sequence and the outputs differ from encoding each sequence alone (the position
ids only pick the position embeddings; tests/test_text_packing.py shows it). Speed is then moot on these
kernels, and the flattened batch would not fit the rest of UMGF either, which needs the padded batch (word ids,
objects, edges). So only the text encoder sees packed rows here, through a prepared 4D block-diagonal mask, which
`create_bidirectional_mask` passes on as it is to BERT's eager and SDPA attention.

Fallback (documented in ``UMGFConfig.text_packing``): an encoder that is not a BERT (other encoders
compute position ids their own way, e.g. RoBERTa offsets them past the padding index), that uses another
attention kernel, or a batch where packing would save less than ``MIN_SAVING`` of the token slots, is
encoded padded, as usual.
"""

from __future__ import annotations

import torch
from torch import nn

#: Encoders whose position ids are the column index 0..T-1 and which take a prepared 4D additive mask.
PACKABLE_MODEL_TYPES = frozenset({"bert"})
PACKABLE_ATTENTION = frozenset({"sdpa", "eager"})
#: Rows are filled up to this many tokens (or the padded length, if longer). Attention inside a row costs
#: O(row length) per token, and training keeps O(row length^2) attention probabilities per row for the
#: backward pass: rows of 512 made a batch-16 training step 0.09 GiB heavier than the padded batch, rows
#: of 128 as light (BENCHMARKS.md), for still about a third fewer token slots.
ROW_CAPACITY = 128
#: Pack only when it removes at least this share of the padded batch's token slots.
MIN_SAVING = 0.2


def can_pack(encoder: nn.Module) -> bool:
    """Whether ``encoder`` reads positions from ``position_ids`` as column indices and accepts a 4D mask."""
    config = getattr(encoder, "config", None)
    return (
        getattr(config, "model_type", None) in PACKABLE_MODEL_TYPES
        and getattr(config, "_attn_implementation", None) in PACKABLE_ATTENTION
    )


def pack_rows(lengths: list[int], capacity: int) -> list[int]:
    """Row of each sequence when sequences are laid out in order, a new row starting when one is full."""
    rows, row, used = [], 0, 0
    for length in lengths:
        if used and used + length > capacity:
            row, used = row + 1, 0
        rows.append(row)
        used += length
    return rows


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``: through pinned memory on CUDA, so the copy does not wait for the device."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def encode_packed(
    encoder: nn.Module,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """BERT's last hidden state [B, T, H] for a padded batch, computed on packed rows (zeros at padding).

    Returns None when packing would not save at least ``MIN_SAVING`` of the token slots: the caller then
    encodes the padded batch.
    """
    # The layout is decided on the host: the mask is read back once (the one device sync of the packing), and the
    # index tensors go back as pinned, asynchronous copies.
    real = attention_mask.detach().to("cpu").bool()
    batch, length = real.shape
    lengths = real.sum(dim=1).tolist()
    capacity = max(length, ROW_CAPACITY)
    rows = pack_rows(lengths, capacity)
    num_rows = rows[-1] + 1 if rows else 0
    fill, offsets = [0] * num_rows, []  # offset: tokens of earlier sequences in the same row
    for row, n in zip(rows, lengths):
        offsets.append(fill[row])
        fill[row] += n
    width = max(fill, default=0)
    if width == 0 or num_rows * width > (1 - MIN_SAVING) * batch * length:
        return None

    # Where each real token goes: (row, slot), its source (sequence, column), and its segment for the mask.
    seq_index, column = real.nonzero(as_tuple=True)  # row-major: tokens of a sequence in column order
    host = real.device  # explicit: the index arithmetic stays on the host under any default-device context
    lengths_t = torch.tensor(lengths, device=host)
    starts = torch.cumsum(lengths_t, 0) - lengths_t  # index of each sequence's first token in seq_index
    rank = torch.arange(seq_index.numel(), device=host) - starts[seq_index]  # token's rank in its sequence
    row_of = torch.tensor(rows, device=host)[seq_index]
    slot_of = torch.tensor(offsets, device=host)[seq_index] + rank
    device = attention_mask.device
    seq_index, column, row_of, slot_of = (_to_device(t, device) for t in (seq_index, column, row_of, slot_of))

    segment = torch.full((num_rows, width), -1, dtype=torch.long, device=device)
    segment[row_of, slot_of] = seq_index
    position_ids = torch.zeros(num_rows, width, dtype=torch.long, device=device)
    position_ids[row_of, slot_of] = column  # the position id the token has in the padded batch
    kwargs: dict[str, torch.Tensor] = {"position_ids": position_ids}
    if input_ids is not None:
        packed_ids = input_ids.new_zeros(num_rows, width)
        packed_ids[row_of, slot_of] = input_ids[seq_index, column]
        kwargs["input_ids"] = packed_ids
    else:
        assert inputs_embeds is not None, "give input_ids or inputs_embeds"
        packed_embeds = inputs_embeds.new_zeros(num_rows, width, inputs_embeds.shape[-1])
        packed_embeds[row_of, slot_of] = inputs_embeds[seq_index, column]
        kwargs["inputs_embeds"] = packed_embeds
    if token_type_ids is not None:
        packed_types = token_type_ids.new_zeros(num_rows, width)
        packed_types[row_of, slot_of] = token_type_ids[seq_index, column]
        kwargs["token_type_ids"] = packed_types
    # A token attends to the tokens of its own sequence; empty slots (segment -1) only to each other, so no
    # attention row is fully masked (that would give NaNs) and no real token sees them. SDPA takes the boolean
    # mask as it is, whatever dtype its queries have (under autocast too); eager attention adds it to its scores.
    allowed = segment[:, None, :, None] == segment[:, None, None, :]
    mask = allowed
    if getattr(encoder.config, "_attn_implementation", None) != "sdpa":
        dtype = next(encoder.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, torch.finfo(dtype).min)
    packed = encoder(attention_mask=mask, **kwargs).last_hidden_state
    hidden = packed.new_zeros(batch, length, packed.shape[-1])
    hidden[seq_index, column] = packed[row_of, slot_of]
    return hidden


__all__ = ["MIN_SAVING", "PACKABLE_MODEL_TYPES", "ROW_CAPACITY", "can_pack", "encode_packed", "pack_rows"]
