"""Baum-Welch's E-step statistics (pyro_dssm.model.expected_counts) against brute-force enumeration over all K^T
paths, and against autograd on the scaled forward (the E-step they replace), padding and underflow included."""

import itertools

import pytest
import torch

from pyro_dssm.model import hmm
from pyro_dssm.model.expected_counts import grouped_statistics

from tests.test_hmm import extreme_problem

K, T = 3, 5


def enumerate_statistics(log_init, log_trans, log_lik, length):
    """log p(X), posterior marginals (length, K) and expected transition counts (K, K) of one sequence's first
    ``length`` steps, by summing over all K^length paths."""
    joints, gamma, counts = [], torch.zeros(length, K, dtype=torch.float64), torch.zeros(K, K, dtype=torch.float64)
    paths = list(itertools.product(range(K), repeat=length))
    for path in paths:
        s = log_init[path[0]] + log_lik[0, path[0]]
        for t in range(1, length):
            s = s + log_trans[path[t - 1], path[t]] + log_lik[t, path[t]]
        joints.append(s)
    log_px = torch.stack(joints).logsumexp(0)
    for path, joint in zip(paths, joints):
        w = (joint - log_px).exp()
        for t, k in enumerate(path):
            gamma[t, k] += w
        for i, j in zip(path, path[1:]):
            counts[i, j] += w
    return log_px, gamma, counts


def test_statistics_equal_brute_force_on_ragged_sequences_of_several_groups():
    g = torch.Generator().manual_seed(0)
    G, B = 2, 3
    log_init = torch.randn(K, generator=g, dtype=torch.float64).log_softmax(-1)
    log_trans = torch.randn(G, K, K, generator=g, dtype=torch.float64).log_softmax(-1)
    log_lik = 2 * torch.randn(G, B, T, K, generator=g, dtype=torch.float64)
    lengths = [5, 3, 1]
    mask = torch.arange(T) < torch.tensor(lengths)[:, None]
    log_px, counts, gamma = grouped_statistics(log_init, log_trans, log_lik, mask)
    assert log_px.shape == (G, B) and counts.shape == (G, K, K) and gamma.shape == (G, B, T, K)
    for grp in range(G):
        total = torch.zeros(K, K, dtype=torch.float64)
        for b, n in enumerate(lengths):
            want_px, want_gamma, want_counts = enumerate_statistics(log_init, log_trans[grp], log_lik[grp, b], n)
            assert log_px[grp, b] == pytest.approx(float(want_px), abs=1e-10)
            assert torch.allclose(gamma[grp, b, :n], want_gamma, atol=1e-10)
            assert (gamma[grp, b, n:] == 0).all()  # padding holds no state
            total += want_counts
        assert torch.allclose(counts[grp], total, atol=1e-10)


def test_statistics_are_the_gradients_of_the_grouped_forward_in_float32():
    g = torch.Generator().manual_seed(1)
    G, B, n_steps, k = 4, 6, 40, 5
    log_trans = torch.randn(G, k, k, generator=g).log_softmax(-1)
    log_lik = 3 * torch.randn(G, B, n_steps, k, generator=g)
    mask = torch.arange(n_steps) < torch.randint(1, n_steps + 1, (B,), generator=g)[:, None]
    log_init = hmm.uniform_log_init(k, log_lik)
    log_px, counts, gamma = grouped_statistics(log_init, log_trans, log_lik, mask)
    log_trans_g, log_lik_g = log_trans.clone().requires_grad_(), log_lik.clone().requires_grad_()
    want = hmm.grouped_log_likelihood(log_init, log_trans_g, log_lik_g, mask)
    want_counts, want_gamma = torch.autograd.grad(want.sum(), [log_trans_g, log_lik_g])
    assert torch.allclose(log_px, want.detach(), atol=1e-4)
    assert torch.allclose(counts, want_counts, atol=1e-4, rtol=1e-5)
    assert torch.allclose(gamma, want_gamma, atol=1e-5)


def test_a_group_whose_product_underflows_takes_the_log_space_gradients():
    """Transition probabilities ~e^-400 forced by the data underflow float32's scaled product: that group's
    statistics are the log-space forward's gradients (finite, the forced switches counted), the other group's stay
    the recursions'."""
    log_init, log_trans, log_lik = extreme_problem(torch.float32)
    calm = torch.randn(K, K, generator=torch.Generator().manual_seed(2)).log_softmax(-1)
    trans = torch.stack([log_trans, calm])
    tables = torch.stack([log_lik, torch.zeros_like(log_lik)])
    log_px, counts, gamma = grouped_statistics(log_init, trans, tables)
    assert torch.isfinite(log_px).all() and torch.isfinite(counts).all() and torch.isfinite(gamma).all()
    log_trans_g = log_trans.clone().requires_grad_()
    want = hmm.forward(log_init, log_trans_g, log_lik)[1]
    assert torch.allclose(log_px[0], want.detach(), rtol=1e-6)
    assert torch.allclose(counts[0], torch.autograd.grad(want.sum(), log_trans_g)[0], atol=1e-4)
    assert counts[0, 0, 1] == pytest.approx(1.0, abs=1e-4) and counts[0, 1, 2] == pytest.approx(1.0, abs=1e-4)
    log_px_alone, counts_alone, _ = grouped_statistics(log_init, trans[1:], tables[1:])
    assert torch.allclose(log_px[1], log_px_alone[0]) and torch.allclose(counts[1], counts_alone[0])
