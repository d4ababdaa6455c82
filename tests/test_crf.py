"""The CRF against brute-force enumeration of every tag sequence (eq 9-11)."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from sync_counting import SyncCounter

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


def test_empty_sequence_is_refused_unless_the_caller_checked() -> None:
    """Every entry point refuses a sequence without positions; ``checked=True`` (the model's masks always start
    with a position) skips that check and so reads nothing back from the device."""
    crf = CRF(2)
    emissions, tags = torch.zeros(2, 3, 2), torch.zeros(2, 3, dtype=torch.long)
    empty, full = torch.tensor([[1, 1, 0], [0, 0, 0]]), torch.tensor([[1, 1, 0], [1, 0, 0]])
    calls = {
        "score": lambda mask, **kw: crf.score(emissions, tags, mask, **kw),
        "log_partition": lambda mask, **kw: crf.log_partition(emissions, mask, **kw),
        "log_likelihood": lambda mask, **kw: crf.log_likelihood(emissions, tags, mask, **kw),
        "marginals": lambda mask, **kw: crf.marginals(emissions, mask, **kw),
        "decode": lambda mask, **kw: crf.decode(emissions, mask, **kw),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match="at least one position"):
            call(empty)
        with SyncCounter([emissions, tags, full, *crf.parameters()]) as counter:
            checked = call(full, checked=True)
        assert counter.syncs == [], (name, counter.syncs)
        torch.testing.assert_close(checked, call(full))


def test_a_crf_over_one_tag_gives_every_sequence_probability_one() -> None:
    crf = CRF(1)
    with torch.no_grad():
        crf.transitions.fill_(0.7)
    emissions, mask = torch.randn(2, 3, 1), torch.tensor([[1, 1, 0], [1, 0, 0]]).bool()
    tags = torch.tensor([[0, 0, 5], [0, 5, 5]])  # whatever stands at padding
    torch.testing.assert_close(crf.log_likelihood(emissions, tags, mask), torch.zeros(2))
    assert crf.decode(emissions, mask).tolist() == [[0, 0, -100], [0, -100, -100]]
    torch.testing.assert_close(crf.marginals(emissions, mask), mask.unsqueeze(-1).float())
    with pytest.raises(ValueError, match="at least one tag, got num_tags=0"):
        CRF(0)


def test_bfloat16_emissions_are_scored_in_float32(case) -> None:
    """In bfloat16 the sums over a sentence would lose the differences between tag sequences: the CRF computes in
    float32, so bfloat16 emissions score exactly as their float32 values do."""
    crf, emissions, mask, _ = case
    crf = crf.float()
    half = (emissions * 10).bfloat16()
    tags = torch.randint(0, 3, mask.shape, generator=torch.Generator().manual_seed(0))
    for method in (crf.log_likelihood, crf.score):
        torch.testing.assert_close(method(half, tags, mask), method(half.float(), tags, mask), rtol=0, atol=0)
    torch.testing.assert_close(crf.marginals(half, mask), crf.marginals(half.float(), mask), rtol=0, atol=0)
    # the emissions, not the parameters, set the precision: a float64 CRF scores float32 emissions in float32
    single, double = crf, CRF(3).double()
    double.load_state_dict(single.state_dict())
    emissions = half.float() / 3
    for method in ("log_partition", "marginals"):
        expected = getattr(single, method)(emissions, mask)
        torch.testing.assert_close(getattr(double, method)(emissions, mask), expected, rtol=0, atol=0)
    torch.testing.assert_close(double.score(emissions, tags, mask), single.score(emissions, tags, mask), rtol=0, atol=0)


def test_marginals_of_a_batch_longer_than_its_sentences(case) -> None:
    """Five sentences of one position, then three of six: batch size and length differ both ways."""
    crf = case[0]
    for lengths in ([1] * 5, [6, 2, 5]):
        width = max(lengths)
        emissions = torch.randn(len(lengths), width, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
        mask = torch.arange(width)[None, :] < torch.tensor(lengths)[:, None]
        marginals = crf.marginals(emissions, mask)
        for b, n in enumerate(lengths):
            scores = brute_force(crf, emissions[b], n)
            z = torch.logsumexp(torch.tensor(list(scores.values()), dtype=torch.float64), 0)
            expected = torch.zeros(width, 3, dtype=torch.float64)
            for tags, s in scores.items():
                for i, t in enumerate(tags):
                    expected[i, t] += math.exp(s - z)
            torch.testing.assert_close(marginals[b], expected)
            assert crf.log_partition(emissions, mask)[b].item() == pytest.approx(z.item(), abs=1e-9)


def test_bad_shapes_are_named() -> None:
    crf = CRF(3)
    with pytest.raises(ValueError, match=r"emissions must be \[batch, positions, tags\], got shape \(2, 3\)"):
        crf.log_partition(torch.zeros(2, 3), torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"mask shape \(2, 4\) does not match emissions \(2, 3\)"):
        crf.decode(torch.zeros(2, 3, 3), torch.ones(2, 4))
    with pytest.raises(
        ValueError, match=r"^every sequence given to the CRF needs at least one position \(mask\[:, 0\] must be True\)$"
    ):
        crf.marginals(torch.zeros(2, 0, 3), torch.ones(2, 0))
