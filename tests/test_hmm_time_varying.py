"""Exact HMM maths with a time-varying (B, T, K, K) transition table, against brute force over all K^T paths.

``log_trans[b, t, i, j] = log p(c_t = j | c_{t-1} = i)`` for sequence b at 0-based step t >= 1;
the oracles below read the table entry by entry along every path, sharing no code with
:mod:`pyro_dssm.model.hmm`.
"""

import itertools
import math
import re

import pytest
import torch

from pyro_dssm.model import hmm

B = 4
SIZES = [(2, 5), (3, 4)]  # (K, T)


def lengths_of(T):
    """Ragged valid lengths of the B sequences: full, one short, two steps, one step."""
    return [T, T - 1, 2, 1]


def make_problem(K, T, seed=0, dtype=torch.float64):
    """log_init (K,), a random time-varying log_trans (B, T, K, K), log_lik (B, T, K) and a ragged (B, T) mask."""
    g = torch.Generator().manual_seed(seed)
    log_init = torch.randn(K, generator=g, dtype=dtype).log_softmax(-1)
    log_trans = (2 * torch.randn(B, T, K, K, generator=g, dtype=dtype)).log_softmax(-1)
    log_lik = torch.randn(B, T, K, generator=g, dtype=dtype)
    mask = torch.arange(T) < torch.tensor(lengths_of(T))[:, None]
    return log_init, log_trans, log_lik, mask


def brute_force(log_init, log_trans, log_lik, b, length):
    """Sequence b's first ``length`` steps: (K^length,) log p(path, X) of each path and the (K^length, length) paths."""
    K = log_init.shape[0]
    paths = list(itertools.product(range(K), repeat=length))
    scores = []
    for path in paths:
        s = log_init[path[0]] + log_lik[b, 0, path[0]]
        for t in range(1, length):
            s = s + log_trans[b, t, path[t - 1], path[t]] + log_lik[b, t, path[t]]
        scores.append(s)
    return torch.stack(scores), torch.tensor(paths)


def brute_force_backward(log_trans, log_lik, b, length):
    r"""(length, K) log beta_t(k) = log sum over c_{t+1:length} of prod_s p(c_s | c_{s-1}) p(x_s | c_s), c_t = k."""
    K = log_lik.shape[-1]
    out = torch.zeros(length, K, dtype=log_lik.dtype)
    for t in range(length - 1):
        for k in range(K):
            scores = []
            for rest in itertools.product(range(K), repeat=length - 1 - t):
                s, prev = 0.0, k
                for i, c in enumerate(rest):
                    s = s + log_trans[b, t + 1 + i, prev, c] + log_lik[b, t + 1 + i, c]
                    prev = c
                scores.append(s)
            out[t, k] = torch.stack(scores).logsumexp(-1)
    return out


@pytest.fixture(params=SIZES, ids=lambda s: f"K{s[0]}-T{s[1]}")
def problem(request):
    return make_problem(*request.param)


def test_log_likelihood_and_forward_equal_brute_force(problem):
    log_init, log_trans, log_lik, mask = problem
    T = log_lik.shape[1]
    expected = torch.stack([brute_force(log_init, log_trans, log_lik, b, n)[0].logsumexp(-1)
                            for b, n in enumerate(lengths_of(T))])
    assert torch.allclose(hmm.log_likelihood(*problem), expected, rtol=1e-12)
    log_alpha, log_px = hmm.forward(*problem)
    assert torch.allclose(log_px, expected, rtol=1e-12)
    # padding repeats the last valid filter
    for b, n in enumerate(lengths_of(T)):
        assert torch.equal(log_alpha[b, n:], log_alpha[b, n - 1].expand(T - n, -1))


def test_backward_equals_brute_force(problem):
    _, log_trans, log_lik, mask = problem
    ours = hmm.backward(log_trans, log_lik, mask)
    for b, n in enumerate(lengths_of(log_lik.shape[1])):
        assert torch.allclose(ours[b, :n], brute_force_backward(log_trans, log_lik, b, n), rtol=1e-12)
        assert (ours[b, n:] == 0).all()


def test_normalised_backward_equals_backward_normalised(problem):
    _, log_trans, log_lik, mask = problem
    K = log_lik.shape[-1]
    ours = hmm.normalised_backward(log_trans, log_lik, mask)
    exact = hmm.backward(log_trans, log_lik, mask).log_softmax(-1)
    assert torch.allclose(ours, exact, atol=1e-10)
    for b, n in enumerate(lengths_of(log_lik.shape[1])):
        expected = brute_force_backward(log_trans, log_lik, b, n).log_softmax(-1)
        assert torch.allclose(ours[b, :n], expected, atol=1e-10)
        assert torch.allclose(ours[b, n:], torch.full_like(ours[b, n:], -math.log(K)))  # uniform after the end


def test_posterior_marginals_equal_brute_force(problem):
    log_init, log_trans, log_lik, mask = problem
    K = log_lik.shape[-1]
    marg = hmm.posterior_marginals(*problem)
    for b, n in enumerate(lengths_of(log_lik.shape[1])):
        joint, paths = brute_force(log_init, log_trans, log_lik, b, n)
        post = (joint - joint.logsumexp(-1)).exp()  # (P,)
        onehot = (paths[:, :, None] == torch.arange(K)).double()  # (P, n, K)
        assert torch.allclose(marg[b, :n], torch.einsum("p,ptk->tk", post, onehot), atol=1e-12)


def test_posterior_chain_gives_every_path_its_brute_force_probability(problem):
    log_init, log_trans, log_lik, mask = problem
    B_, T, K = log_lik.shape
    log_chain = hmm.posterior_chain(*problem)  # (B, T, K, K)
    assert torch.allclose(log_chain.exp().sum(-1), torch.ones(B_, T, K, dtype=torch.float64))
    for b, n in enumerate(lengths_of(T)):
        joint, paths = brute_force(log_init, log_trans, log_lik, b, n)
        post = (joint - joint.logsumexp(-1)).exp()
        prev = torch.cat([paths[:, :1], paths[:, :-1]], 1)  # (P, n); any row at t = 0
        steps = log_chain[b, torch.arange(n), prev, paths]  # (P, n)
        assert torch.allclose(steps.sum(-1).exp(), post, atol=1e-12)
        # padding: the prior transition rows of those steps
        assert torch.allclose(log_chain[b, n:], log_trans[b, n:])


def test_viterbi_equals_best_path(problem):
    log_init, log_trans, log_lik, mask = problem
    T = log_lik.shape[1]
    path, log_joint = hmm.viterbi(*problem)
    for b, n in enumerate(lengths_of(T)):
        joint, paths = brute_force(log_init, log_trans, log_lik, b, n)
        assert torch.equal(path[b, :n], paths[joint.argmax()])
        assert torch.allclose(log_joint[b], joint.max(), rtol=1e-12)
        assert (path[b, n:] == path[b, n - 1]).all()  # padding repeats the last state


def test_the_unused_entries_change_nothing(problem):
    """Step 0 of the table and the padded steps are never read."""
    log_init, log_trans, log_lik, mask = problem
    other = log_trans.clone()
    other[:, 0] = torch.randn_like(other[:, 0]).log_softmax(-1)
    other[~mask] = torch.randn_like(other[~mask]).log_softmax(-1)
    assert torch.equal(hmm.log_likelihood(log_init, other, log_lik, mask), hmm.log_likelihood(*problem))
    assert torch.equal(hmm.forward(log_init, other, log_lik, mask)[0], hmm.forward(*problem)[0])
    assert torch.equal(hmm.backward(other, log_lik, mask), hmm.backward(log_trans, log_lik, mask))
    assert torch.equal(hmm.normalised_backward(other, log_lik, mask), hmm.normalised_backward(log_trans, log_lik, mask))
    assert torch.equal(hmm.viterbi(log_init, other, log_lik, mask)[1], hmm.viterbi(*problem)[1])
    assert torch.equal(hmm.posterior_chain(log_init, other, log_lik, mask)[mask],
                       hmm.posterior_chain(*problem)[mask])


@pytest.mark.parametrize("masked", [False, True])
def test_a_repeated_matrix_gives_the_stationary_results(problem, masked):
    log_init, log_trans, log_lik, mask = problem
    mask = mask if masked else None
    B_, T, K = log_lik.shape
    stationary = log_trans[0, 1]
    tiled = stationary.expand(B_, T, K, K)

    def close(a, b):
        return torch.allclose(a, b, rtol=1e-6, atol=1e-6)

    assert close(hmm.log_likelihood(log_init, tiled, log_lik, mask),
                 hmm.log_likelihood(log_init, stationary, log_lik, mask))
    for f in (hmm.forward, hmm.viterbi):
        ours, theirs = f(log_init, tiled, log_lik, mask), f(log_init, stationary, log_lik, mask)
        assert close(ours[1], theirs[1])
        assert close(ours[0], theirs[0]) if f is hmm.forward else torch.equal(ours[0], theirs[0])
    for f in (hmm.posterior_marginals, hmm.posterior_chain):
        assert close(f(log_init, tiled, log_lik, mask), f(log_init, stationary, log_lik, mask))
    for f in (hmm.backward, hmm.normalised_backward):
        assert close(f(tiled, log_lik, mask), f(stationary, log_lik, mask))


def extreme_time_varying(dtype):
    """K = 3, T = 5, two sequences, transition logits of +-200 at every step (unlikely moves ~e^-400).

    Sequence 0: sticky at every step, data forcing 0, 0, 1, 2, 2: two unlikely switches, so its
    scaled product underflows in float32 (about -800 nats in all). Sequence 1: the same
    table except at step 2, which moves i -> i + 1 (mod K); data force 0, 0, 1, 1, 1, a likely path
    under its own table (only under a time-varying one), so its row stays on the scaled path.
    """
    K, T = 3, 5
    sticky = 200.0 * (2 * torch.eye(K, dtype=dtype) - 1)
    logits = sticky.expand(2, T, K, K).clone()
    logits[1, 2] = 200.0 * (2 * torch.eye(K, dtype=dtype).roll(1, dims=1) - 1)
    log_trans = logits.log_softmax(-1)
    log_init = torch.full((K,), 1.0 / K, dtype=dtype).log()
    path = torch.tensor([[0, 0, 1, 2, 2], [0, 0, 1, 1, 1]])
    log_lik = torch.where(torch.nn.functional.one_hot(path, K).bool(), 0.0, -1000.0).to(dtype)
    return log_init, log_trans, log_lik


def test_log_likelihood_falls_back_per_row_with_a_time_varying_table():
    log_init, log_trans, log_lik = extreme_time_varying(torch.float32)
    exact = extreme_time_varying(torch.float64)
    expected = torch.stack([brute_force(*exact, b, 5)[0].logsumexp(-1) for b in range(2)])
    assert expected[0] < -700 and expected[1] > -10  # one row needs the fallback, the other does not
    mask = torch.ones(2, 5, dtype=torch.bool)
    # the premise: only sequence 0's scaled product underflows (to 0, then NaN: not above the smallest normal)
    smallest = hmm._scaled_forward(log_init, log_trans, log_lik, mask)[1]
    tiny = torch.finfo(torch.float32).tiny
    assert not smallest[0] >= tiny and smallest[1] >= tiny
    log_trans = log_trans.requires_grad_()
    ours = hmm.log_likelihood(log_init, log_trans, log_lik)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours.double(), expected, rtol=1e-6)
    # gradients: finite, and those of the log-space forward algorithm
    grad = torch.autograd.grad(ours.sum(), log_trans)[0]
    grad_fwd = torch.autograd.grad(hmm.forward(log_init, log_trans, log_lik)[1].sum(), log_trans)[0]
    assert torch.isfinite(grad).all()
    assert torch.allclose(grad, grad_fwd, atol=1e-6)


K_BAD, T_BAD = 3, 4


@pytest.mark.parametrize("shape", [(K_BAD, K_BAD + 1), (K_BAD,), (B, T_BAD, K_BAD), (1, T_BAD, K_BAD, K_BAD),
                                   (B + 1, T_BAD, K_BAD, K_BAD), (B, T_BAD - 1, K_BAD, K_BAD), (T_BAD, K_BAD, K_BAD)])
def test_a_bad_shape_raises_naming_it(shape):
    log_init, _, log_lik, mask = make_problem(K_BAD, T_BAD)
    bad = torch.zeros(shape, dtype=torch.float64)
    message = re.escape(f"actual shape = {shape}")
    with pytest.raises(ValueError, match=message):
        hmm.check_transitions(bad, log_lik)
    for f in (hmm.log_likelihood, hmm.forward, hmm.posterior_marginals, hmm.posterior_chain, hmm.viterbi):
        with pytest.raises(ValueError, match=message):
            f(log_init, bad, log_lik, mask)
    for f in (hmm.backward, hmm.normalised_backward):
        with pytest.raises(ValueError, match=message):
            f(bad, log_lik, mask)


def test_check_transitions_accepts_both_shapes():
    _, log_trans, log_lik, _ = make_problem(K_BAD, T_BAD)
    hmm.check_transitions(log_trans, log_lik)
    hmm.check_transitions(log_trans[0, 1], log_lik)
    with pytest.raises(ValueError, match=re.escape("log_lik of shape (B, T, K), actual shape = (4, 3)")):
        hmm.check_transitions(log_trans[0, 1], log_lik[:, 0])
