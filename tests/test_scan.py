"""The parallel-scan and chunked forward algorithms against the sequential one and brute force over all K^T paths."""

import itertools

import pytest
import torch

from pyro_dssm.model import hmm, scan

TOL = {torch.float32: 1e-4, torch.float64: 1e-9}


def random_problem(B, T, K, dtype, seed=0):
    """log_init (K,), log_trans (K, K), log_lik (B, T, K) and a ragged (B, T) mask: lengths 1 .. T, one of each end."""
    g = torch.Generator().manual_seed(seed)
    log_init = torch.randn(K, generator=g, dtype=dtype).log_softmax(-1)
    log_trans = (2 * torch.randn(K, K, generator=g, dtype=dtype)).log_softmax(-1)
    log_lik = 3 * torch.randn(B, T, K, generator=g, dtype=dtype)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0], lengths[-1] = T, 1
    mask = torch.arange(T) < lengths[:, None]
    return log_init, log_trans, log_lik, mask


def brute_force_log_alpha(log_init, log_trans, log_lik, length):
    """(B, length, K) log alpha_t(k): logsumexp of log p(c_{1:t}, x_{1:t}) over every path c_{1:t} with c_t = k."""
    B, _, K = log_lik.shape
    out = torch.full((B, length, K), -torch.inf, dtype=log_lik.dtype)
    for t in range(1, length + 1):
        for path in itertools.product(range(K), repeat=t):
            score = log_init[path[0]] + log_lik[:, 0, path[0]]
            for s in range(1, t):
                score = score + log_trans[path[s - 1], path[s]] + log_lik[:, s, path[s]]
            out[:, t - 1, path[-1]] = torch.logaddexp(out[:, t - 1, path[-1]], score)
    return out


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype
    assert torch.allclose(actual, expected, rtol=0.0, atol=TOL[dtype]), (actual - expected).abs().max()


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("T, K", [(1, 3), (2, 3), (7, 3), (16, 3), (37, 4), (50, 1), (13, 6)])
def test_parallel_equals_sequential_on_ragged_batches(dtype, T, K):
    log_init, log_trans, log_lik, mask = random_problem(5, T, K, dtype, seed=T * 10 + K)
    log_alpha, log_px = hmm.forward(log_init, log_trans, log_lik, mask)
    ours_alpha, ours_px = scan.parallel_forward(log_init, log_trans, log_lik, mask)
    assert_close(ours_alpha, log_alpha, dtype)  # padded steps included: both repeat the last valid value
    assert_close(ours_px, log_px, dtype)
    assert_close(scan.parallel_log_likelihood(log_init, log_trans, log_lik, mask),
                 hmm.log_likelihood(log_init, log_trans, log_lik, mask), dtype)
    # without a mask: every step counts
    unmasked = hmm.forward(log_init, log_trans, log_lik)[1]
    assert_close(scan.parallel_log_likelihood(log_init, log_trans, log_lik), unmasked, dtype)


@pytest.mark.parametrize("T", [1, 2, 3, 4, 5])
def test_parallel_equals_brute_force_over_all_paths(T):
    K = 3
    log_init, log_trans, log_lik, mask = random_problem(4, T, K, torch.float64, seed=T)
    expected = brute_force_log_alpha(log_init, log_trans, log_lik, T)
    log_alpha, log_px = scan.parallel_forward(log_init, log_trans, log_lik)
    assert torch.allclose(log_alpha, expected, rtol=0.0, atol=1e-9)
    assert torch.allclose(log_px, expected[:, -1].logsumexp(-1), rtol=0.0, atol=1e-9)
    # a padded sequence: the value of its valid prefix, whose last alpha repeats through the padding
    lengths = mask.sum(-1)
    masked_alpha, masked_px = scan.parallel_forward(log_init, log_trans, log_lik, mask)
    masked_ll = scan.parallel_log_likelihood(log_init, log_trans, log_lik, mask)
    for b, n in enumerate(lengths.tolist()):
        alone = brute_force_log_alpha(log_init, log_trans, log_lik[b:b + 1], n)[0]
        assert torch.allclose(masked_alpha[b, :n], alone, rtol=0.0, atol=1e-9)
        assert torch.allclose(masked_alpha[b, n:], alone[-1].expand(T - n, K), rtol=0.0, atol=1e-9)
        assert abs(float(masked_px[b]) - float(alone[-1].logsumexp(-1))) < 1e-9
        assert abs(float(masked_ll[b]) - float(alone[-1].logsumexp(-1))) < 1e-9


def test_the_order_of_the_steps_matters():
    """Reversed time gives another value: a scan that multiplied in the wrong order would be caught."""
    log_init, log_trans, log_lik, _ = random_problem(3, 9, 3, torch.float64)
    forwards = scan.parallel_log_likelihood(log_init, log_trans, log_lik)
    backwards = scan.parallel_log_likelihood(log_init, log_trans, log_lik.flip(1))
    assert (forwards - backwards).abs().min() > 1e-3
    assert torch.allclose(backwards, hmm.log_likelihood(log_init, log_trans, log_lik.flip(1)), rtol=0.0, atol=1e-9)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("chunk", [1, 2, 3, 5, 16, 23, 24, 100])
def test_chunked_equals_sequential(dtype, chunk):
    T = 23
    log_init, log_trans, log_lik, _ = random_problem(3, T, 4, dtype, seed=chunk)
    calls = []

    def log_lik_fn(start, stop):
        calls.append((start, stop))
        return log_lik[:, start:stop]

    with torch.no_grad():
        ours = scan.chunked_log_likelihood(log_init, log_trans, log_lik_fn, T, chunk=chunk)
    assert_close(ours, hmm.log_likelihood(log_init, log_trans, log_lik), dtype)
    # one call per chunk, in order, covering 0 .. T - 1 exactly once
    assert calls == [(s, min(s + chunk, T)) for s in range(0, T, chunk)]


def test_chunked_long_sequence_stays_finite_and_matches_float64():
    """10^4 steps of large log-likelihoods: the carry is renormalised, so nothing overflows in float32."""
    g = torch.Generator().manual_seed(1)
    log_lik = 30 * torch.randn(1, 10_000, 4, generator=g)
    log_trans = torch.randn(4, 4, generator=g).log_softmax(-1)
    log_init = torch.full((4,), 0.25).log()
    expected = hmm.log_likelihood(log_init.double(), log_trans.double(), log_lik.double())
    with torch.no_grad():
        ours = scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[:, a:b], 10_000, chunk=999)
    assert torch.isfinite(ours).all()
    assert torch.allclose(ours.double(), expected, rtol=1e-6)
    assert torch.allclose(scan.parallel_log_likelihood(log_init, log_trans, log_lik).double(), expected, rtol=1e-6)


def extreme_problem(dtype):
    """Transition logits of +-200 (off-diagonal probabilities ~e^-400, below float32's smallest normal number) and
    data that force the path 0, 0, 1, 2, 2 in sequence 0 (sequence 1 stays in state 0), as in tests/test_hmm.py."""
    K = 3
    log_trans = (200.0 * (2 * torch.eye(K, dtype=dtype) - 1)).log_softmax(-1)
    log_init = torch.full((K,), 1.0 / K, dtype=dtype).log()
    path = torch.tensor([[0, 0, 1, 2, 2], [0, 0, 0, 0, 0]])
    log_lik = torch.where(torch.nn.functional.one_hot(path, K).bool(), 0.0, -1000.0).to(dtype)
    return log_init, log_trans, log_lik


def test_underflowing_products_are_recomputed_exactly():
    """The shifted matrix product underflows here in float32 (sequence 0 would read -inf); the value must be brute
    force's (about -800), with finite gradients, and the padded case must keep each sequence's own value."""
    log_init, log_trans, log_lik = extreme_problem(torch.float32)
    expected = brute_force_log_alpha(*extreme_problem(torch.float64), 5)
    log_trans = log_trans.requires_grad_()
    log_alpha, log_px = scan.parallel_forward(log_init, log_trans, log_lik)
    assert torch.allclose(log_px.double(), expected[:, -1].logsumexp(-1), rtol=1e-6)
    ll = scan.parallel_log_likelihood(log_init, log_trans, log_lik)
    assert torch.allclose(ll.double(), expected[:, -1].logsumexp(-1), rtol=1e-6)
    assert torch.isfinite(torch.autograd.grad(ll.sum(), log_trans)[0]).all()
    finite = torch.isfinite(expected)  # entries of ~e^-1200 are -inf in float32 for every method
    assert torch.allclose(log_alpha.detach().double()[finite], expected[finite], rtol=1e-6)
    with torch.no_grad():
        chunked = scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[:, a:b], 5, chunk=2)
    assert torch.allclose(chunked.double(), expected[:, -1].logsumexp(-1), rtol=1e-6)
    mask = torch.ones(2, 5, dtype=torch.bool)
    mask[0, 3:] = False
    padded = scan.parallel_log_likelihood(log_init, log_trans, log_lik, mask)
    expected_padded = hmm.forward(log_init, log_trans.detach(), log_lik, mask)[1]
    assert torch.allclose(padded.double(), expected_padded.double(), rtol=1e-6)


def test_exact_products_run_only_where_the_fast_ones_underflow(monkeypatch):
    """Padding's -inf (exact zeros) is no underflow: a ragged random batch never pays for the K^3-memory product."""
    calls = []
    exact = scan._exact_log_matmul_exp
    monkeypatch.setattr(scan, "_exact_log_matmul_exp", lambda x, y: calls.append(x.shape[0]) or exact(x, y))
    log_init, log_trans, log_lik, mask = random_problem(6, 40, 4, torch.float32)
    scan.parallel_forward(log_init, log_trans, log_lik, mask)
    scan.parallel_log_likelihood(log_init, log_trans, log_lik, mask)
    assert calls == []
    scan.parallel_log_likelihood(*extreme_problem(torch.float32))
    assert calls and set(calls) <= {1, 2}  # only the rows that underflowed, not a wider batch


def test_gradients_equal_the_sequential_ones():
    log_init, log_trans, log_lik, mask = random_problem(4, 11, 3, torch.float64)
    grads = []
    for f in (hmm.log_likelihood, scan.parallel_log_likelihood, lambda *a: scan.parallel_forward(*a)[1]):
        lt, ll = log_trans.clone().requires_grad_(), log_lik.clone().requires_grad_()
        grads.append(torch.autograd.grad(f(log_init, lt, ll, mask).sum(), (lt, ll)))
    for lt_grad, ll_grad in grads[1:]:
        assert torch.allclose(lt_grad, grads[0][0], atol=1e-9) and torch.allclose(ll_grad, grads[0][1], atol=1e-9)


@pytest.mark.parametrize("chunk", [0, -3, 2.5, True])
def test_chunked_refuses_a_bad_chunk(chunk):
    log_init, log_trans, log_lik, _ = random_problem(1, 5, 2, torch.float32)
    with pytest.raises(ValueError, match=f"chunk={chunk!r}"):
        scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[:, a:b], 5, chunk=chunk)


def test_chunked_refuses_bad_lengths_and_chunks_of_the_wrong_shape():
    log_init, log_trans, log_lik, _ = random_problem(2, 6, 2, torch.float32)
    with pytest.raises(ValueError, match="n_steps=0"):
        scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[:, a:b], 0)
    # n_steps longer than the data: the last chunk comes back short
    with pytest.raises(ValueError, match=r"log_lik_fn\(4, 8\) must return shape \(2, 4, K\).*\(2, 2, 2\)"):
        scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[:, a:b], 8, chunk=4)
    # B changes between chunks
    with pytest.raises(ValueError, match=r"log_lik_fn\(3, 6\) must return shape \(2, 3, K\), .* = \(1, 3, 2\)"):
        scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[a // 3:, a:b], 6, chunk=3)
    with pytest.raises(ValueError, match=r"must return shape \(B, 3, K\), actual shape = \(2, 3\)"):
        scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[:, a:b, 0], 6, chunk=3)
    with pytest.raises(ValueError, match=r"log_trans of shape \(K, K\) = \(2, 2\).*\(3, 3\)"):
        scan.chunked_log_likelihood(log_init, torch.zeros(3, 3), lambda a, b: log_lik[:, a:b], 6, chunk=3)


@pytest.mark.parametrize("f", [scan.parallel_forward, scan.parallel_log_likelihood])
def test_parallel_refuses_shapes_that_disagree(f):
    log_init, log_trans, log_lik, mask = random_problem(2, 6, 3, torch.float32)
    with pytest.raises(ValueError, match=r"log_init of shape \(K,\) = \(3,\).*actual shape = \(4,\)"):
        f(torch.zeros(4), log_trans, log_lik)
    with pytest.raises(ValueError, match=r"must return shape \(B, 3, K\), actual shape = \(2, 3\)"):
        scan.chunked_log_likelihood(log_init, log_trans, lambda a, b: log_lik[:, a:b, 0], 6, chunk=3)
    with pytest.raises(ValueError, match=r"log_trans of shape \(K, K\) = \(3, 3\).*actual shape = \(3, 2\)"):
        f(log_init, log_trans[:, :2], log_lik)
    with pytest.raises(ValueError, match=r"log_lik of shape \(B, T, K\).*actual shape = \(6, 3\)"):
        f(log_init, log_trans, log_lik[0])
    with pytest.raises(ValueError, match=r"actual shape = \(2, 0, 3\)"):
        f(log_init, log_trans, log_lik[:, :0])
    with pytest.raises(ValueError, match=r"mask of shape \(B, T\) = \(2, 6\).*actual shape = \(2, 5\)"):
        f(log_init, log_trans, log_lik, mask[:, :5])
    late = mask.clone()
    late[1, 0] = False
    with pytest.raises(ValueError, match=r"False at step 1 of sequence\(s\) \[1\]"):
        f(log_init, log_trans, log_lik, late)


def test_em_takes_the_scan_for_few_long_sequences_and_both_e_steps_fit_the_same_hmm(monkeypatch):
    from pyro_dssm.data.synthetic import make_hmm_params, sample_hmm
    from pyro_dssm.inference import em
    from pyro_dssm.model.emissions.gaussian import GaussianEmission

    assert em.e_step_log_px(3, 730, 3) is scan.parallel_log_likelihood  # bee-sized: a few long dances
    assert em.e_step_log_px(3, 730, 3, group=16) is hmm.log_likelihood  # ... but 16 candidates share one pass
    assert em.e_step_log_px(100, 100, 5) is hmm.log_likelihood  # the default data: many short sequences
    gen = torch.Generator().manual_seed(0)
    data = sample_hmm(make_hmm_params(3, 2, 0.9, 0.7, gen), 2, 400, gen)
    mask = data.mask.clone()
    mask[1, 300:] = False  # ragged
    emitter = GaussianEmission(3, 2, 8, noise_std=0.7)
    labels = torch.nn.functional.one_hot(data.states, 3).float()
    start = emitter.m_step(data.x, mask, labels.roll(5, 1))  # a start off the truth
    trans = torch.full((3, 3), 1 / 3)
    fits = {}
    for name, log_px in (("scan", scan.parallel_log_likelihood), ("sequential", hmm.log_likelihood)):
        monkeypatch.setattr(em, "e_step_log_px", lambda *_, f=log_px: f)
        fits[name] = em.baum_welch(emitter, start, data.x, mask, trans, n_iter=10)
    (p_scan, t_scan, s_scan), (p_seq, t_seq, s_seq) = fits["scan"], fits["sequential"]
    assert torch.allclose(t_scan, t_seq, atol=1e-4) and s_scan == pytest.approx(s_seq, abs=1e-5)
    assert all(torch.allclose(p_scan[k], p_seq[k], atol=1e-4) for k in p_seq)
