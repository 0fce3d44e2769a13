"""Online decoding (FittedDSSM.filter, pyro_dssm.online) against one pass, brute force over all paths and the
smoothed marginals of the exact HMM code."""

import itertools

import numpy as np
import pytest
import torch

import pyro_dssm
from pyro_dssm.config import ModelConfig
from pyro_dssm.data.features import Preprocessing
from pyro_dssm.fitted import FittedDSSM
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.online import FilterState

D0 = 2
CHUNKS = [1, 7, 30]  # then the rest


def random_model(K=3, features=("raw",), emission="gaussian", ar_order=1, smooth=1, window=1, seed=0):
    """A FittedDSSM with random networks (every weight ~ N(0, 0.7^2): sticky or not, distinct states) and a feature
    transform of its own, as a checkpoint stores it."""
    D = D0 * len(features)
    torch.manual_seed(seed)
    net = DSSM(ModelConfig(n_states=K, obs_dim=D, emission=emission, ar_order=ar_order, transition_hidden=8,
                           emitter_hidden=8, rnn_hidden=4))
    with torch.no_grad():
        for param in net.parameters():
            param.normal_(0.0, 0.7)
    rng = np.random.default_rng(seed)
    prep = Preprocessing(list(features), rng.normal(size=D), rng.uniform(0.5, 2.0, size=D),
                         [f"x{j}" for j in range(D0)], smooth, window)
    return FittedDSSM(net, {"preprocessing": prep.state_dict()})


def stream(T, seed=1):
    """(T, D0) rows in the user's units, a random walk (so diff and raw differ)."""
    return np.random.default_rng(seed).normal(size=(T, D0)).cumsum(0) * 0.5


def in_chunks(model, x, sizes, lag=0):
    """filter over x cut into chunks of ``sizes`` (then the rest): the outputs concatenated, and the last carry."""
    bounds = np.cumsum([0, *sizes, len(x) - sum(sizes)])
    carry, out = None, []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        probs, carry = model.filter(x[start:stop], carry, lag=lag)
        out.append(probs)
    return np.concatenate(out), carry


def brute_force(log_init, log_trans, log_lik, s, t):
    """p(c_s | x_{1:t}) (0-based s < t) by enumerating all K^t paths of the first t steps, in float64."""
    K = len(log_init)
    paths = np.array(list(itertools.product(range(K), repeat=t)))
    joint = log_init[paths[:, 0]] + log_lik[0, paths[:, 0]]
    for u in range(1, t):
        joint = joint + log_trans[paths[:, u - 1], paths[:, u]] + log_lik[u, paths[:, u]]
    post = np.exp(joint - np.logaddexp.reduce(joint))
    return np.bincount(paths[:, s], weights=post, minlength=K)


def exact_parameters(model, x):
    """log_init (K,), log_trans (K, K), log_lik (T, K) of the whole sequence x (one pass of the exact HMM), float64."""
    u = torch.from_numpy(model.preprocessing.apply(x))[None]
    log_init, log_trans, log_lik = (v.detach().double().numpy() for v in model.model.exact_hmm(u))
    return log_init, log_trans, log_lik[0]


def smoothed(log_init, log_trans, log_lik):
    """(T, K) p(c_t | x_{1:T}) by forward-backward (pyro_dssm.model.hmm) in float64."""
    args = (torch.from_numpy(v) for v in (log_init, log_trans, log_lik[None]))
    return hmm.posterior_marginals(*args)[0].numpy()


@pytest.mark.parametrize("features, smooth, window", [
    (("raw",), 1, 1), (("raw", "diff"), 1, 1), (("absdiff",), 1, 1),
    (("raw", "window_speed"), 2, 2),  # widths of 2 read one row back and none ahead: causal
])
def test_chunks_equal_one_pass_and_each_step_the_smoothed_marginal_of_its_prefix(features, smooth, window):
    """Filtering in chunks [1, 7, 30, rest] = one pass; step t filtered = p(c_t | x_{1:t}) = the last smoothed
    marginal of the prefix x_{1:t} (forward-backward of pyro_dssm.model.hmm on the whole transformed prefix, in
    float64); the last step = predict_proba's (which runs in float32)."""
    model = random_model(features=features, smooth=smooth, window=window)
    x = stream(50)
    one, _ = model.filter(x)
    chunked, carry = in_chunks(model, x, CHUNKS)
    np.testing.assert_allclose(chunked, one, atol=1e-10)
    prefixes = np.stack([smoothed(*exact_parameters(model, x[:t + 1]))[-1] for t in range(len(x))])
    np.testing.assert_allclose(chunked, prefixes, atol=1e-9)
    np.testing.assert_allclose(chunked[-1], model.predict_proba(x)[-1], atol=1e-5)
    np.testing.assert_allclose(chunked.sum(-1), 1.0, atol=1e-12)
    assert carry.n_steps == 50 and len(carry.raw) == model.preprocessing.reach()[0]


@pytest.mark.parametrize("K, T", [(2, 6), (3, 5)])
def test_filtered_marginals_match_brute_force_over_all_paths(K, T):
    model = random_model(K=K, features=("raw", "diff"), seed=K)
    x = stream(T, seed=K)
    log_init, log_trans, log_lik = exact_parameters(model, x)
    want = np.stack([brute_force(log_init, log_trans, log_lik, t, t + 1) for t in range(T)])
    np.testing.assert_allclose(in_chunks(model, x, [1, 2])[0], want, atol=1e-6)


@pytest.mark.parametrize("sizes", [CHUNKS, [1, 1, 1, 4, 30]])
def test_autoregressive_chunks_equal_one_pass(sizes):
    """order p = 2: the carry holds the last 2 inputs; chunks of 1 step cross the first p steps' own density."""
    model = random_model(emission="autoregressive", ar_order=2, features=("raw", "diff"))
    x = stream(60)
    one, _ = model.filter(x)
    chunked, carry = in_chunks(model, x, sizes)
    np.testing.assert_allclose(chunked, one, atol=1e-6)  # the float32 table's rounding differs with its length
    np.testing.assert_allclose(chunked[-1], model.predict_proba(x)[-1], atol=1e-5)
    assert carry.inputs.shape == (2, 2 * D0)
    np.testing.assert_array_equal(carry.inputs, model.preprocessing.apply(x)[-2:])
    log_init, log_trans, log_lik = exact_parameters(model, x[:5])
    want = np.stack([brute_force(log_init, log_trans, log_lik, t, t + 1) for t in range(5)])
    np.testing.assert_allclose(chunked[:5], want, atol=1e-6)


@pytest.mark.parametrize("emission", ["gaussian", "autoregressive"])
def test_a_lag_of_the_whole_stream_gives_the_smoothed_marginals(emission):
    """lag >= T: no row has its L followers (all NaN), and flush gives p(c_s | x_{1:T}) of every step."""
    model = random_model(emission=emission, ar_order=2, features=("raw", "diff"))
    x = stream(20)
    for lag in (20, 25):
        out, carry = in_chunks(model, x, [1, 7], lag=lag)
        assert out.shape == (20, 3) and np.isnan(out).all()
        np.testing.assert_allclose(model.flush(carry), model.predict_proba(x), atol=1e-5)


def test_fixed_lag_matches_brute_force_and_is_the_same_in_chunks():
    K, T, lag = 3, 6, 2
    model = random_model(K=K, features=("raw", "diff"), seed=5)
    x = stream(T, seed=5)
    log_init, log_trans, log_lik = exact_parameters(model, x)
    out, carry = in_chunks(model, x, [1, 2], lag=lag)
    assert np.isnan(out[:lag]).all()  # steps 1..L have no step t - L
    want = np.stack([brute_force(log_init, log_trans, log_lik, t - lag, t + 1) for t in range(lag, T)])
    np.testing.assert_allclose(out[lag:], want, atol=1e-6)  # p(c_{t-L} | x_{1:t})
    tail = np.stack([brute_force(log_init, log_trans, log_lik, s, T) for s in range(T - lag, T)])
    np.testing.assert_allclose(model.flush(carry), tail, atol=1e-6)  # the last L steps, given all of x
    np.testing.assert_allclose(out, in_chunks(model, x, [], lag=lag)[0], atol=1e-10, equal_nan=True)
    assert model.flush(model.filter(x)[1]).shape == (0, K)  # lag 0: nothing left to give


def test_a_long_stream_stays_normalised():
    """No underflow over many steps: the recursion is normalised in log space at every step."""
    model = random_model(features=("raw",))
    x = np.random.default_rng(0).normal(size=(3000, D0)) * 20
    probs, carry = in_chunks(model, x, [1000, 1000], lag=3)
    assert np.isfinite(probs[3:]).all() and np.isfinite(carry.log_probs).all()
    np.testing.assert_allclose(probs[3:].sum(-1), 1.0, atol=1e-9)


def test_a_model_from_fit_filters_its_users_units():
    """The path of a trained model: pyro_dssm.fit with diff features, its checkpoint's feature transform."""
    rng = np.random.default_rng(0)
    xs = [rng.normal(size=(40, D0)) + 3.0 * (np.arange(40)[:, None] > 20) for _ in range(4)]
    model = pyro_dssm.fit(xs, n_states=3, overrides=[
        "trainer.n_epochs=1", "trainer.guide_warmup_steps=2", "data.val_fraction=0", "trainer.init_restarts=1",
        "trainer.init_em_iters=2", "trainer.figure_every=0", "trainer.device=cpu", "data.features=[raw,diff]"])
    chunked, _ = in_chunks(model, xs[0], CHUNKS)
    np.testing.assert_allclose(chunked, model.filter(xs[0])[0], atol=1e-10)
    np.testing.assert_allclose(chunked[-1], model.predict_proba(xs[0])[-1], atol=1e-5)


@pytest.mark.parametrize("features, smooth, window, match", [
    (("raw", "window_mean"), 1, 5, r"window_mean \(data.feature_window=5\) reads a centred window, 2 rows ahead"),
    (("raw",), 3, 1, r"data.smooth=3 reads a centred window, 1 rows ahead"),
    (("window_std", "window_speed"), 1, 4, r"window_std .*, window_speed .* read a centred window"),
])
def test_features_that_read_ahead_are_refused(features, smooth, window, match):
    model = random_model(features=features, smooth=smooth, window=window)
    with pytest.raises(ValueError, match="filter needs causal features .*" + match):
        model.filter(stream(10))
    model.predict_proba(stream(10))  # the whole sequence is fine


def test_bad_chunks_carries_and_lags_are_value_errors_naming_them():
    model = random_model(K=3, features=("raw", "diff"))
    x = stream(10)
    _, carry = model.filter(x, lag=2)
    bad_x = x.copy()
    bad_x[4, 1] = np.inf
    cases = [
        (lambda: model.filter(np.zeros((4, 3))), r"x has D=3 columns; the model expects D=2 \(\['x0', 'x1'\]\)"),
        (lambda: model.filter(bad_x), r"x holds inf at time step 4 \(column 1\)"),
        (lambda: model.filter([x, x]), "filter takes one .* got a list of 2"),
        (lambda: model.filter(x, random_model(K=4).filter(x)[1]),
         "carry comes from a model with K=4; this model has K=3"),
        (lambda: model.filter(x, random_model(features=("raw",)).filter(x)[1]), "carry comes from a model with D=2; "
         "this model has D=4"),
        (lambda: model.filter(x, carry, lag=1), "carry was filtered with lag=2, got lag=1"),
        (lambda: model.filter(x, carry.log_probs), "carry must be None .* got ndarray"),
        (lambda: model.filter(x, lag=-1), "lag must be an integer >= 0 .* got -1"),
        (lambda: model.filter(x, lag=1.5), "lag must be an integer >= 0 .* got 1.5"),
        (lambda: model.flush(None), "flush takes the FilterState .* got NoneType"),
        (lambda: random_model(K=2).flush(carry), "carry comes from a model with K=3; this model has K=2"),
    ]
    for call, match in cases:
        with pytest.raises(ValueError, match=match):
            call()
    assert isinstance(carry, FilterState) and carry.n_steps == 10  # a failed call changes no carry
