"""Exact HMM maths against brute-force enumeration over all K^T paths."""

import itertools
import math

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


def brute_force_posterior(problem, length=T):
    """p(path | X) of every path, (B, K^length), and the paths (K^length, length)."""
    joint, paths = brute_force(*problem, length)
    return (joint - joint.logsumexp(-1, keepdim=True)).exp(), paths


def test_posterior_chain_gives_every_path_its_brute_force_probability(problem):
    post, paths = brute_force_posterior(problem)
    log_chain = hmm.posterior_chain(*problem)  # (B, T, K, K)
    assert torch.allclose(log_chain.exp().sum(-1), torch.ones(B, T, K, dtype=torch.float64))
    prev = torch.cat([paths[:, :1], paths[:, :-1]], 1)  # (P, T); any row at t = 0
    steps = log_chain[:, torch.arange(T), prev, paths]  # (B, P, T)
    assert torch.allclose(steps.sum(-1).exp(), post)


def test_posterior_chain_conditionals_equal_brute_force_ratios(problem):
    post, paths = brute_force_posterior(problem)
    chain = hmm.posterior_chain(*problem).exp()
    onehot = (paths[:, :, None] == torch.arange(K)).double()  # (P, T, K)
    first = torch.einsum("bp,pk->bk", post, onehot[:, 0])
    assert torch.allclose(chain[:, 0], first[:, None, :].expand(B, K, K))
    for t in range(1, T):
        pair = torch.einsum("bp,pi,pj->bij", post, onehot[:, t - 1], onehot[:, t])  # p(c_{t-1}, c_t | X)
        assert torch.allclose(chain[:, t], pair / pair.sum(-1, keepdim=True))


def test_posterior_chain_of_a_padded_sequence_equals_the_unpadded_one(problem):
    log_init, log_trans, log_lik = problem
    mask = torch.zeros(B, T, dtype=torch.bool)
    mask[:, :3] = True
    padded = hmm.posterior_chain(*problem, mask)
    assert torch.allclose(padded[:, :3], hmm.posterior_chain(log_init, log_trans, log_lik[:, :3]))
    # padding: the prior transition rows
    assert torch.allclose(padded[:, 3:], log_trans.expand(B, T - 3, K, K))


def test_sampled_paths_have_the_brute_force_posterior_frequencies(problem):
    log_init, log_trans, log_lik = problem
    post, paths = brute_force_posterior(problem, 3)
    n = 40000
    log_chain = hmm.posterior_chain(log_init, log_trans, log_lik[:1, :3]).expand(n, 3, K, K)
    sample = hmm.sample_chain(log_chain, torch.Generator().manual_seed(0))  # (n, 3)
    codes = (sample * torch.tensor([K * K, K, 1])).sum(-1)  # itertools.product order
    freq = torch.bincount(codes, minlength=K**3).double() / n
    # 4 binomial standard deviations of every path's frequency
    assert ((freq - post[0]).abs() <= 4 * (post[0] * (1 - post[0]) / n).sqrt() + 1e-3).all()


def extreme_problem(dtype):
    """Transition logits of +-200 (off-diagonal probabilities ~e^-400) and data that force
    the path 0, 0, 1, 2, 2 in sequence 0 (sequence 1 stays in state 0)."""
    logits = 200.0 * (2 * torch.eye(K, dtype=dtype) - 1)
    log_trans = logits.log_softmax(-1)
    log_init = torch.full((K,), 1.0 / K, dtype=dtype).log()
    path = torch.tensor([[0, 0, 1, 2, 2], [0, 0, 0, 0, 0]])
    log_lik = torch.where(torch.nn.functional.one_hot(path, K).bool(), 0.0, -1000.0).to(dtype)
    return log_init, log_trans, log_lik


def test_log_likelihood_finite_where_the_scaled_product_underflows():
    problem32 = extreme_problem(torch.float32)
    joint, _ = brute_force(*extreme_problem(torch.float64))
    expected = joint.logsumexp(-1)  # about 2 * -400 for sequence 0
    log_trans = problem32[1].clone().requires_grad_()
    ours = hmm.log_likelihood(problem32[0], log_trans, problem32[2])
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours.double(), expected, rtol=1e-6)
    # gradients: finite, and those of the log-space forward algorithm
    grad = torch.autograd.grad(ours.sum(), log_trans)[0]
    log_trans_fwd = problem32[1].clone().requires_grad_()
    grad_fwd = torch.autograd.grad(hmm.forward(problem32[0], log_trans_fwd, problem32[2])[1].sum(), log_trans_fwd)[0]
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, grad_fwd)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_masked_extreme_batch_keeps_each_sequence_value(dtype):
    log_init, log_trans, log_lik = extreme_problem(dtype)
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[0, 3:] = False  # the last forced switch (1 -> 2) is padding: only the 0 -> 1 switch counts
    log_trans = log_trans.requires_grad_()
    ours = hmm.log_likelihood(log_init, log_trans, log_lik, mask)
    assert torch.allclose(ours, hmm.forward(log_init, log_trans, log_lik, mask)[1])
    # the padded step's underflow (0/0 there) must not reach the shared gradient
    assert torch.isfinite(torch.autograd.grad(ours.sum(), log_trans)[0]).all()
    alone = hmm.log_likelihood(log_init, log_trans, log_lik[1:])
    assert torch.allclose(ours[1], alone[0])


def test_float64_throughout(problem):
    """Every routine keeps float64 (no float32 constant or eye sneaks in) and matches brute force."""
    x = torch.randn(B, T, 2, dtype=torch.float64)
    means = torch.randn(K, 2, dtype=torch.float64)
    log_lik = hmm.gaussian_log_likelihood(x, means, 0.7)
    log_init = hmm.uniform_log_init(K, log_lik)
    problem = (log_init, problem[1], log_lik)
    joint, paths = brute_force(*problem)
    out = [hmm.log_likelihood(*problem), hmm.forward(*problem)[0], hmm.backward(*problem[1:]),
           hmm.posterior_marginals(*problem), hmm.viterbi(*problem)[1], hmm.posterior_chain(*problem)]
    assert all(t.dtype == torch.float64 for t in [log_lik, log_init] + out)
    assert torch.allclose(out[0], joint.logsumexp(-1), rtol=1e-12)
    assert torch.equal(hmm.viterbi(*problem)[0], paths[joint.argmax(-1)])


def brute_force_backward(log_trans, log_lik, length=T):
    r"""(B, length, K) log beta_t(k) = log sum over every path c_{t+1:length} of p(c_{t+1:} | c_t = k) p(x_{t+1:} | c_{t+1:})."""
    out = torch.zeros(log_lik.shape[0], length, K, dtype=log_lik.dtype)
    for t in range(length - 1):
        for k in range(K):
            scores = []
            for rest in itertools.product(range(K), repeat=length - 1 - t):
                s, prev = 0.0, k
                for i, c in enumerate(rest):
                    s = s + log_trans[prev, c] + log_lik[:, t + 1 + i, c]
                    prev = c
                scores.append(s)
            out[:, t, k] = torch.stack(scores, -1).logsumexp(-1)
    return out


@pytest.mark.parametrize("length", [1, 3, T])
def test_normalised_backward_equals_brute_force(problem, length):
    """The scaled backward recursion (the guide's evidence) against all paths, a padded batch included."""
    _, log_trans, log_lik = problem
    mask = torch.arange(T) < torch.tensor([T, length, T, 1])[:, None]
    ours = hmm.normalised_backward(log_trans, log_lik, mask)
    for b, n in enumerate([T, length, T, 1]):
        expected = brute_force_backward(log_trans, log_lik[b:b + 1], n)[0].log_softmax(-1)
        assert torch.allclose(ours[b, :n], expected, atol=1e-10)
        assert torch.allclose(ours[b, n:], torch.full_like(ours[b, n:], -math.log(K)))  # uniform after the end


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_normalised_backward_finite_where_the_scaled_product_underflows(dtype):
    _, log_trans, log_lik = extreme_problem(dtype)
    ours = hmm.normalised_backward(log_trans, log_lik)
    assert torch.isfinite(ours).all()
    exact = hmm.backward(log_trans, log_lik).log_softmax(-1)
    floor = math.log(torch.finfo(dtype).tiny)
    # where the exact message is not negligible, the same; where it is (~ -400 here), negligible too
    big = exact > -30.0
    assert big.any() and (~big).any()
    assert torch.allclose(ours[big], exact[big])
    assert (ours[~big] < -30.0).all() and (ours >= 2 * floor).all()


def test_grouped_log_likelihood_equals_each_group_alone_values_and_gradients():
    """Three HMMs over the same padded sequences, one of them (group 1) the extreme problem whose scaled product
    underflows: each group's values and gradients are log_likelihood's of that group alone (float32), and group
    1's value is the brute-force one."""
    g = torch.Generator().manual_seed(1)
    log_init, extreme_trans, extreme_lik = extreme_problem(torch.float32)
    log_trans = torch.randn(3, K, K, generator=g).log_softmax(-1)
    log_trans[1] = extreme_trans
    log_lik = torch.randn(3, 2, T, K, generator=g)
    log_lik[1] = extreme_lik
    mask = torch.ones(2, T, dtype=torch.bool)
    mask[1, 4:] = False
    trans, lik = log_trans.clone().requires_grad_(), log_lik.clone().requires_grad_()
    grouped = hmm.grouped_log_likelihood(log_init, trans, lik, mask)
    assert grouped.shape == (3, 2)
    d_trans, d_lik = torch.autograd.grad(grouped.sum(), [trans, lik])
    for k in range(3):
        trans_k, lik_k = log_trans[k].clone().requires_grad_(), log_lik[k].clone().requires_grad_()
        alone = hmm.log_likelihood(log_init, trans_k, lik_k, mask)
        assert torch.allclose(grouped[k], alone, rtol=1e-6)
        for ours, theirs in zip((d_trans[k], d_lik[k]), torch.autograd.grad(alone.sum(), [trans_k, lik_k])):
            assert torch.isfinite(ours).all() and torch.allclose(ours, theirs, atol=1e-6)
    joint, _ = brute_force(*extreme_problem(torch.float64))
    assert float(grouped.detach()[1, 0]) == pytest.approx(float(joint.logsumexp(-1)[0]), rel=1e-6)


def test_grouped_log_likelihood_names_shapes_that_disagree():
    with pytest.raises(ValueError, match=r"expected log_lik \(G, B, T, K\) and log_trans \(G, K, K\)"):
        hmm.grouped_log_likelihood(torch.zeros(K), torch.zeros(2, K, K), torch.zeros(3, B, T, K))
