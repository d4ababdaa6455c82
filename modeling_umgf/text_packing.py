"""Padding-free ("packed") text encoding for BERT encoders.

Tweets are short and uneven, so a padded batch spends much of BERT's work on padding. Packing lays the real tokens
of several sequences side by side in a few rows, with the position ids they have in the padded batch, and keeps
the sequences apart in attention: the outputs at real tokens are the padded ones up to float rounding. Encoders
other than BERT on eager or SDPA attention, and batches where packing saves under ``MIN_SAVING`` of the token
slots, are encoded padded (``UMGFConfig.text_packing``).
"""

from __future__ import annotations

from typing import Literal

import torch
import transformers
from packaging.version import Version
from torch import nn

#: Encoders whose position ids are the column index 0..T-1 and which take a prepared 4D additive mask.
PACKABLE_MODEL_TYPES = frozenset({"bert"})
PACKABLE_ATTENTION = frozenset({"sdpa", "eager"})
#: The first transformers whose BERT keeps packed sequences apart by their position ids on eager/SDPA attention.
LIBRARY_PACKING_SINCE = Version("5.25.0")
#: Rows are filled up to this many tokens (or the padded length, if longer). Attention inside a row costs
#: O(row length) per token, and training keeps O(row length^2) attention probabilities per row for the
#: backward pass, so long rows cost memory (BENCHMARKS.md).
ROW_CAPACITY = 128
#: Pack only when it removes at least this share of the padded batch's token slots.
MIN_SAVING = 0.2

PackingMode = Literal["auto", "library", "block"]


def library_separates_packed_sequences(version: str = transformers.__version__) -> bool:
    """Whether this transformers' BERT keeps packed sequences apart by their position ids (given no attention
    mask, `masking_utils.create_bidirectional_mask` masks attention between runs of position ids)."""
    return Version(version).release >= LIBRARY_PACKING_SINCE.release


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


def positions_separate_sequences(real: torch.Tensor, rows: list[int]) -> bool:
    """Whether position ids alone tell the packed sequences apart.

    ``real``: the padded batch's host mask [B, T]; ``rows``: the row of each sequence. True when every sequence's
    real tokens are contiguous and, within a row, no sequence starts at the position after the previous one's last.
    """
    lengths = real.sum(dim=1)
    first = real.to(torch.int8).argmax(dim=1)
    runs = real.long().diff(dim=1, prepend=torch.zeros_like(real[:, :1], dtype=torch.long)).eq(1).sum(dim=1)
    if bool((runs > 1).any()):  # a sequence with a hole: its position ids would split it in two
        return False
    previous_end: dict[int, int] = {}  # row -> position after the last token placed there
    for row, start, n in zip(rows, first.tolist(), lengths.tolist()):
        if n == 0:
            continue
        if previous_end.get(row) == start:
            return False
        previous_end[row] = start + n
    return True


def choose_packing_mode(requested: PackingMode, separable: bool, device_type: str) -> Literal["library", "block"]:
    """How the packed sequences are kept apart: "library" (transformers' padding-free format, position ids only) on
    a CPU where the installed transformers separates packed BERT sequences and the position ids tell the batch's
    sequences apart; "block" (a 4D block-diagonal mask) otherwise, as older BERTs ignore the position ids and on an
    accelerator finding the runs costs a device sync. An explicit "library" that cannot hold is a ValueError."""
    if requested == "block":
        return "block"
    supported = library_separates_packed_sequences()
    if requested == "library":
        if not (supported and separable):
            raise ValueError(
                f"packing_mode='library' needs transformers >= {LIBRARY_PACKING_SINCE} (installed: "
                f"{transformers.__version__}) and sequences that position ids can separate (contiguous real tokens, "
                f"no mixed left/right padding): use 'block' or 'auto'"
            )
        return "library"
    return "library" if supported and separable and device_type == "cpu" else "block"


def _to_device(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """A host tensor on ``device``: through pinned memory on CUDA, so the copy does not wait for the device."""
    if device.type == "cuda":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)


def _block_mask(encoder: nn.Module, segment: torch.Tensor) -> torch.Tensor:
    """The 4D mask [rows, 1, W, W] letting a token attend to its own segment only, in the form the kernel takes.

    Empty slots (segment -1) attend only to each other, so no attention row is fully masked (that would give NaNs)
    and no real token sees them. SDPA takes the boolean mask as it is, whatever dtype its queries have (under
    autocast too); eager attention adds it to its scores, so it gets an additive mask in the encoder's dtype.
    """
    allowed = segment[:, None, :, None] == segment[:, None, None, :]
    if getattr(encoder.config, "_attn_implementation", None) == "sdpa":
        return allowed
    dtype = next(encoder.parameters()).dtype
    mask = torch.zeros(allowed.shape, dtype=dtype, device=segment.device)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)


def encode_packed(
    encoder: nn.Module,
    attention_mask: torch.Tensor,
    input_ids: torch.Tensor | None = None,
    inputs_embeds: torch.Tensor | None = None,
    token_type_ids: torch.Tensor | None = None,
    packing_mode: PackingMode = "auto",
) -> torch.Tensor | None:
    """BERT's last hidden state [B, T, H] for a padded batch, computed on packed rows (zeros at padding).

    ``packing_mode``: how the packed sequences are kept apart (`choose_packing_mode`). Returns None when packing
    would not save at least ``MIN_SAVING`` of the token slots: the caller then encodes the padded batch.
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
    if packing_mode != "block":
        separable = positions_separate_sequences(real, rows)
        packing_mode = choose_packing_mode(packing_mode, separable, attention_mask.device.type)

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
    if packing_mode == "block":
        segment = torch.full((num_rows, width), -1, dtype=torch.long, device=device)
        segment[row_of, slot_of] = seq_index
        kwargs["attention_mask"] = _block_mask(encoder, segment)
    # "library": no mask; BERT's mask keeps apart the runs of position ids (each empty slot, at position 0 after a
    # sequence or another empty slot, is a run of its own, seen by no real token).
    packed = encoder(**kwargs).last_hidden_state
    hidden = packed.new_zeros(batch, length, packed.shape[-1])
    hidden[seq_index, column] = packed[row_of, slot_of]
    return hidden


__all__ = [
    "LIBRARY_PACKING_SINCE",
    "MIN_SAVING",
    "PACKABLE_MODEL_TYPES",
    "ROW_CAPACITY",
    "can_pack",
    "choose_packing_mode",
    "encode_packed",
    "library_separates_packed_sequences",
    "pack_rows",
    "positions_separate_sequences",
]
