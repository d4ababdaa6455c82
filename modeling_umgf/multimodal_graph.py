"""Inter-modal edges of UMGF's multi-modal graph (paper, "Multi-modal Graph", edge construction).

Words of a noun phrase <-> the objects grounded from that phrase; every word <-> the objects grounded from a
general word (word span -1, -1). Intra-modal edges (all words pairwise, all objects pairwise) are implicit in
the model's self-attention and need no tensor. The model attends over sub-tokens, so each sub-token inherits
its word's edges and special tokens get none. A few lines of indexing, kept here so the processor and the
tests share one definition of the graph.
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
