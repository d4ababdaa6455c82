"""Linear-chain conditional random field (UMGF paper, eq 9-11), over words or, for the authors' network, sub-tokens.

Written here because ``pytorch-crf`` is unmaintained and has no marginals, and transformers has no CRF layer; its
parameters and ``score`` / ``log_partition`` / ``log_likelihood`` are pytorch-crf's, so the authors' CRF loads as
it is. It computes in float32 (or float64) whatever the model's dtype: bfloat16 sums lose the tag sequences' gaps.
"""

from __future__ import annotations

import torch
from torch import nn


class CRF(nn.Module):
    """Linear-chain CRF with start, end and transition scores (zero at construction; a UMGF model initialises
    them uniformly in [-0.1, 0.1], as pytorch-crf does).

    ``S_i(y_{i-1}, y_i, X) = exp(emission[i, y_i] + transition[y_{i-1}, y_i])`` (eq 9); the first position
    uses ``start_transitions`` in place of a previous tag and the last adds ``end_transitions``. Masks are
    left-aligned (``mask[b, :n_b]`` True) with ``n_b >= 1``, checked unless the caller passes ``checked=True``.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if num_tags < 1:
            raise ValueError(f"CRF needs at least one tag, got num_tags={num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.zeros(num_tags))
        self.end_transitions = nn.Parameter(torch.zeros(num_tags))
        self.transitions = nn.Parameter(torch.zeros(num_tags, num_tags))

    def _transition_scores(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.start_transitions.to(dtype), self.end_transitions.to(dtype), self.transitions.to(dtype)

    @staticmethod
    def _check(emissions: torch.Tensor, mask: torch.Tensor, checked: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Emissions in float32 (or float64, when given so) and the mask as bool, after the shape checks and, unless
        the caller has ``checked`` that no sequence is empty, the check of the first position (a device sync)."""
        if emissions.dim() != 3:
            raise ValueError(f"emissions must be [batch, positions, tags], got shape {tuple(emissions.shape)}")
        if mask.shape != emissions.shape[:2]:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match emissions {tuple(emissions.shape[:2])}")
        mask = mask.bool()
        empty = emissions.shape[1] == 0 or (not checked and not bool(mask[:, 0].all()))
        if empty:
            raise ValueError("every sequence given to the CRF needs at least one position (mask[:, 0] must be True)")
        return emissions.to(torch.promote_types(emissions.dtype, torch.float32)), mask

    def score(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, checked: bool = False
    ) -> torch.Tensor:
        """Unnormalised log-score of ``tags`` (the numerator of eq 9, in log space): [batch]."""
        emissions, mask = self._check(emissions, mask, checked)
        start, end, transitions = self._transition_scores(emissions.dtype)
        tags = tags.masked_fill(~mask, 0)
        maskf = mask.to(emissions.dtype)
        emit = emissions.gather(2, tags.unsqueeze(-1)).squeeze(-1)  # [B, W]
        trans = transitions[tags[:, :-1], tags[:, 1:]]  # [B, W-1]
        total = start[tags[:, 0]] + (emit * maskf).sum(1) + (trans * maskf[:, 1:]).sum(1)
        last = tags.gather(1, (mask.sum(1) - 1).unsqueeze(1)).squeeze(1)
        return total + end[last]

    def _forward_alphas(self, emissions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Forward variables log alpha_i(y): [batch, positions, tags]; frozen after a sequence ends."""
        start, _, transitions = self._transition_scores(emissions.dtype)
        alpha = start + emissions[:, 0]
        alphas = [alpha]
        for i in range(1, emissions.shape[1]):
            nxt = torch.logsumexp(alpha.unsqueeze(2) + transitions, dim=1) + emissions[:, i]
            alpha = torch.where(mask[:, i : i + 1], nxt, alpha)
            alphas.append(alpha)
        return torch.stack(alphas, 1)

    def log_partition(self, emissions: torch.Tensor, mask: torch.Tensor, checked: bool = False) -> torch.Tensor:
        """log Z(X): the log of the denominator of eq 9, by the forward algorithm: [batch]."""
        emissions, mask = self._check(emissions, mask, checked)
        alpha_last = self._forward_alphas(emissions, mask)[:, -1]
        return torch.logsumexp(alpha_last + self._transition_scores(emissions.dtype)[1], dim=1)

    def log_likelihood(
        self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor, checked: bool = False
    ) -> torch.Tensor:
        """log p(y | X) of each sequence (eq 9-10): [batch]."""
        return self.score(emissions, tags, mask, checked) - self.log_partition(emissions, mask, checked)

    def marginals(self, emissions: torch.Tensor, mask: torch.Tensor, checked: bool = False) -> torch.Tensor:
        """p(y_i = k | X) at every position, by forward-backward: [batch, positions, tags] (0 at padding)."""
        emissions, mask = self._check(emissions, mask, checked)
        _, end, transitions = self._transition_scores(emissions.dtype)
        alphas = self._forward_alphas(emissions, mask)
        lengths = mask.sum(1)
        # Backward variables, computed right to left; positions past a sequence's end stay at the end score.
        beta = end.expand(emissions.shape[0], -1)
        betas = [beta]
        for i in range(emissions.shape[1] - 2, -1, -1):
            prev = torch.logsumexp(transitions + (emissions[:, i + 1] + beta).unsqueeze(1), dim=2)
            beta = torch.where(mask[:, i + 1 : i + 2], prev, beta)
            betas.append(beta)
        backward = torch.stack(betas[::-1], 1)
        last_alpha = alphas.gather(1, (lengths - 1).view(-1, 1, 1).expand(-1, 1, self.num_tags)).squeeze(1)
        log_z = torch.logsumexp(last_alpha + end, dim=1)
        probs = torch.exp(alphas + backward - log_z.view(-1, 1, 1))
        return probs * mask.unsqueeze(-1).to(probs.dtype)

    @torch.no_grad()
    def decode(
        self, emissions: torch.Tensor, mask: torch.Tensor, pad_value: int = -100, checked: bool = False
    ) -> torch.Tensor:
        """Viterbi best tag sequence (eq 11): [batch, positions] long, ``pad_value`` after each sequence."""
        emissions, mask = self._check(emissions, mask, checked)
        start, end, transitions = self._transition_scores(emissions.dtype)
        batch, positions, _ = emissions.shape
        score = start + emissions[:, 0]
        history = []
        for i in range(1, positions):
            best, idx = (score.unsqueeze(2) + transitions).max(dim=1)
            history.append(idx)
            score = torch.where(mask[:, i : i + 1], best + emissions[:, i], score)
        score = score + end
        lengths = mask.sum(1)
        best_last = score.argmax(1)
        path = torch.full((batch, positions), pad_value, dtype=torch.long, device=emissions.device)
        tag = best_last
        for i in range(positions - 1, -1, -1):
            # A sequence whose last position is i takes its best final tag here; shorter ones are still padding.
            tag = torch.where(lengths - 1 == i, best_last, tag)
            path[:, i] = torch.where(i < lengths, tag, path[:, i])
            if i > 0:
                tag = history[i - 1].gather(1, tag.unsqueeze(1)).squeeze(1)
        return path
