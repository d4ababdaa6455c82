"""Inter-modal edges of UMGF's multi-modal graph (paper, "Multi-modal Graph", edge construction).

Words of a noun phrase <-> the objects grounded from that phrase; every word <-> the objects grounded from a
general word (word span -1, -1). Intra-modal edges (all words pairwise, all objects pairwise) are implicit in
the model's self-attention and need no tensor. The model attends over sub-tokens, so each sub-token inherits
its word's edges; special tokens get none, unless the model links them to every object (the authors' graphs).
Every edge rule is here, so the processor, the model and the tests share one definition of the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def word_object_adjacency(word_starts: Sequence[int], word_ends: Sequence[int], num_words: int) -> torch.Tensor:
    """``[num_words, num_objects]`` bool: word ``i`` <-> object ``j``.

    Object ``j`` links to words ``word_starts[j] .. word_ends[j] - 1`` (cut at ``num_words``, for sentences
    truncated after grounding), or to every word when its span is ``-1, -1``.
    """
    adjacency = torch.zeros(num_words, len(word_starts), dtype=torch.bool)
    for j, (start, end) in enumerate(zip(word_starts, word_ends)):
        if (start, end) == (-1, -1):
            adjacency[:, j] = True
        else:
            adjacency[start : min(end, num_words), j] = True
    return adjacency


def token_object_adjacency(word_adjacency: torch.Tensor, word_ids: Sequence[int]) -> torch.Tensor:
    """``[num_tokens, num_objects]`` bool: sub-token ``t`` has the edges of word ``word_ids[t]``; -1 has none."""
    ids = torch.as_tensor(word_ids, dtype=torch.long)
    is_word = ids >= 0
    adjacency = torch.zeros(len(ids), word_adjacency.shape[1], dtype=torch.bool)
    adjacency[is_word] = word_adjacency[ids[is_word]]
    return adjacency


def batch_adjacency(
    token_mask: torch.Tensor,
    object_mask: torch.Tensor,
    inter_modal_adjacency: torch.Tensor | None = None,
    word_ids: torch.Tensor | None = None,
    link_special_tokens: bool = False,
) -> torch.Tensor:
    """``[B, T, O]`` bool: the inter-modal edges the fusion layers use, between real tokens and real objects.

    The edges of ``inter_modal_adjacency`` (every pair when None); with ``link_special_tokens`` and ``word_ids``,
    also each special token (word id -1: [CLS], [SEP]) <-> every object, as in the authors' graphs.
    """
    edges = token_mask.unsqueeze(2) & object_mask.unsqueeze(1)
    if inter_modal_adjacency is None:
        return edges
    given = inter_modal_adjacency.bool()
    if link_special_tokens and word_ids is not None:
        given = given | (word_ids < 0).unsqueeze(2)
    return edges & given
