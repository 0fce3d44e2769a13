"""Exact HMM maths against brute-force enumeration over all K^T paths."""

import itertools

import pytest
import torch

from pyro_dssm.model import hmm

K, T, B = 3, 5, 4


@pytest.fixture
def problem():
    g = torch.Generator().manual_seed(0)
    log_init = torch.randn(K, generator=g, dtype=torch.float64).log_softmax(-1)
    log_trans = torch.randn(K, K, generator=g, dtype=torch.float64).log_softmax(-1)
    log_lik = torch.randn(B, T, K, generator=g, dtype=torch.float64)
    return log_init, log_trans, log_lik


def brute_force(log_init, log_trans, log_lik, length=T):
    """log p(path, X) of every path, (B, K^length), and the paths."""
    paths = list(itertools.product(range(K), repeat=length))
    scores = []
    for path in paths:
        s = log_init[path[0]] + log_lik[:, 0, path[0]]
        for t in range(1, length):
            s = s + log_trans[path[t - 1], path[t]] + log_lik[:, t, path[t]]
        scores.append(s)
    return torch.stack(scores, -1), torch.tensor(paths)


def test_log_likelihood_and_forward_equal_brute_force(problem):
    joint, _ = brute_force(*problem)
    expected = joint.logsumexp(-1)
    assert torch.allclose(hmm.log_likelihood(*problem), expected)
    assert torch.allclose(hmm.forward(*problem)[1], expected)


def test_viterbi_equals_best_path(problem):
    joint, paths = brute_force(*problem)
    path, log_joint = hmm.viterbi(*problem)
    assert torch.equal(path, paths[joint.argmax(-1)])
    assert torch.allclose(log_joint, joint.max(-1).values)


def test_marginals_sum_to_one_and_match_brute_force(problem):
    joint, paths = brute_force(*problem)
    post = (joint - joint.logsumexp(-1, keepdim=True)).exp()  # (B, P)
    expected = torch.stack([(post[:, :, None] * (paths[:, t] == torch.arange(K)[:, None]).T.double()).sum(1)
                            for t in range(T)], 1)
    marg = hmm.posterior_marginals(*problem)
    assert torch.allclose(marg.sum(-1), torch.ones(B, T, dtype=torch.float64))
    assert torch.allclose(marg, expected)


@pytest.mark.parametrize("length", [1, 2, 4])
def test_masked_sequences_equal_their_unpadded_versions(problem, length):
    log_init, log_trans, log_lik = problem
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, :length] = True
    joint, paths = brute_force(log_init, log_trans, log_lik, length)
    assert torch.allclose(hmm.log_likelihood(*problem, mask), joint.logsumexp(-1))
    assert torch.allclose(hmm.forward(*problem, mask)[1], joint.logsumexp(-1))
    path, _ = hmm.viterbi(*problem, mask)
    assert torch.equal(path[:, :length], paths[joint.argmax(-1)])
    marg = hmm.posterior_marginals(*problem, mask)[:, :length]
    assert torch.allclose(marg, hmm.posterior_marginals(log_init, log_trans, log_lik[:, :length]))


def test_long_sequence_is_stable():
    g = torch.Generator().manual_seed(1)
    log_lik = 30 * torch.randn(2, 5000, 4, generator=g)
    lt = torch.randn(4, 4, generator=g).log_softmax(-1)
    li = torch.full((4,), -torch.log(torch.tensor(4.0)))
    lp_scan = hmm.log_likelihood(li, lt, log_lik)
    lp_seq = hmm.forward(li, lt, log_lik)[1]
    assert torch.isfinite(lp_scan).all()
    assert torch.allclose(lp_scan, lp_seq, rtol=1e-4)


def test_gaussian_log_likelihood_by_hand():
    x = torch.tensor([[[1.0, 2.0]]])
    means = torch.tensor([[0.0, 0.0], [1.0, 2.0]])
    ll = hmm.gaussian_log_likelihood(x, means, 2.0)
    expected = torch.distributions.Normal(means, 2.0).log_prob(x[0, 0]).sum(-1)
    assert torch.allclose(ll[0, 0], expected)
