"""The CRF against brute-force enumeration of every tag sequence (eq 9-11)."""

from __future__ import annotations

import itertools

import pytest
import torch

from modeling_umgf.crf import CRF


@torch.no_grad()
def brute_force(crf: CRF, emissions: torch.Tensor, length: int) -> dict[tuple[int, ...], float]:
    """Score of every tag sequence of the given length, computed directly from the definition (eq 9)."""
    scores = {}
    for tags in itertools.product(range(crf.num_tags), repeat=length):
        s = crf.start_transitions[tags[0]] + crf.end_transitions[tags[-1]]
        s = s + sum(emissions[i, t] for i, t in enumerate(tags))
        s = s + sum(crf.transitions[a, b] for a, b in itertools.pairwise(tags))
        scores[tags] = float(s)
    return scores


@pytest.fixture
def case() -> tuple[CRF, torch.Tensor, torch.Tensor, list[int]]:
    torch.manual_seed(3)
    crf = CRF(3)
    for parameter in crf.parameters():
        torch.nn.init.uniform_(parameter, -0.1, 0.1)
    with torch.no_grad():
        for p in crf.parameters():
            p.mul_(10)  # large transitions make Viterbi differ from a per-word argmax
    lengths = [4, 1, 3, 2]
    emissions = torch.randn(len(lengths), 4, 3, dtype=torch.float64)
    mask = torch.arange(4)[None, :] < torch.tensor(lengths)[:, None]
    return crf.double(), emissions, mask, lengths


def test_log_partition_and_likelihood_match_enumeration(case) -> None:
    crf, emissions, mask, lengths = case
    log_z = crf.log_partition(emissions, mask)
    tags = torch.randint(0, 3, mask.shape)
    ll = crf.log_likelihood(emissions, tags, mask)
    for b, n in enumerate(lengths):
        scores = brute_force(crf, emissions[b], n)
        expected_z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
        assert log_z[b].item() == pytest.approx(expected_z.item(), abs=1e-9)
        gold = tuple(tags[b, :n].tolist())
        assert ll[b].item() == pytest.approx(scores[gold] - expected_z.item(), abs=1e-9)


def test_viterbi_matches_enumeration(case) -> None:
    crf, emissions, mask, lengths = case
    path = crf.decode(emissions, mask)
    for b, n in enumerate(lengths):
        scores = brute_force(crf, emissions[b], n)
        assert tuple(path[b, :n].tolist()) == max(scores, key=scores.get)
        assert path[b, n:].tolist() == [-100] * (4 - n)


def test_marginals_match_enumeration(case) -> None:
    crf, emissions, mask, lengths = case
    marginals = crf.marginals(emissions, mask)
    for b, n in enumerate(lengths):
        scores = brute_force(crf, emissions[b], n)
        z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
        expected = torch.zeros(4, 3, dtype=torch.float64)
        for tags, s in scores.items():
            for i, t in enumerate(tags):
                expected[i, t] += torch.exp(torch.tensor(s, dtype=torch.float64) - z)
        torch.testing.assert_close(marginals[b], expected)


def test_empty_sequence_is_refused() -> None:
    crf = CRF(2)
    with pytest.raises(ValueError, match="at least one position"):
        crf.log_partition(torch.zeros(2, 3, 2), torch.tensor([[1, 1, 0], [0, 0, 0]]))
