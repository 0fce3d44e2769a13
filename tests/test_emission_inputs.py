"""Inputs in the emission (``model.emission_inputs``, a GLM-HMM): u_t as regressors of the autoregressive mean.

Oracles: the step density written out from the parameters, summed over all K^T paths (brute force); ordinary
least squares for the M-step; a process whose states only the inputs reveal (each state answers the same
input with an opposite sign, so x alone has the same law in both states), fitted, decoded and sampled.
"""

import itertools

import numpy as np
import pytest
import torch
from torch.distributions import Normal
from torch.nn.functional import softplus

from pyro_dssm.api import fit
from pyro_dssm.config import ModelConfig
from pyro_dssm.evaluation.evaluate import hungarian_accuracy
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.model.emissions.statistics import SCALE_FLOOR

K, D, U, T = 2, 2, 1, 5


def glm_model(emission="autoregressive", order=1):
    torch.manual_seed(0)
    net = DSSM(ModelConfig(n_states=K, obs_dim=D, input_dim=U, emission=emission, emission_inputs=True,
                           ar_order=order, transition_hidden=5, emitter_hidden=6, rnn_hidden=4))
    with torch.no_grad():  # the zero-initialised parts made non-zero
        for p in (net.emitter.weight, net.emitter.net[2].weight, net.emitter.net[2].bias):
            p.normal_(0, 0.5)
    return net


def step_density(net, x, u, t, k):
    """log p(x_t | c_t = k, x_{t-p:t-1}, u_t) of one sequence x (T, D), inputs u (T, U), from the parameters (p <= 1)."""
    em, e_k = net.emitter, torch.eye(K)[k]
    if t < em.order:
        return Normal(em.init_mean[k], softplus(em.init_raw_scale[k]) + SCALE_FLOOR).log_prob(x[0]).sum()
    h = torch.cat([x[t - 1], u[t]]) if em.order else u[t]  # the regressors: the past step (p = 1) and u_t
    corr = em.net(torch.cat([e_k, h]))
    mean = em.weight[k] @ h + em.bias[k] + corr[:D]
    return Normal(mean, softplus(em.raw_scale[k] + corr[D:]) + SCALE_FLOOR).log_prob(x[t]).sum()


@pytest.mark.parametrize("order", [1, 0])  # 0: a Gaussian GLM-HMM, the inputs the only regressors
@torch.no_grad()
def test_exact_log_px_given_the_inputs_equals_brute_force_over_paths(order):
    net = glm_model(order=order)
    gen = torch.Generator().manual_seed(1)
    x, u = torch.randn(2, T, D, generator=gen), 2 * torch.randn(2, T, U, generator=gen)
    ours = hmm.log_likelihood(*net.exact_hmm(torch.cat([x, u], -1)))
    log_trans = net.transition(torch.eye(K)).log_softmax(-1)
    for b in range(2):
        dens = [[float(step_density(net, x[b], u[b], t, k)) for k in range(K)] for t in range(T)]
        paths = [-np.log(K) + sum(float(log_trans[p[t - 1], p[t]]) for t in range(1, T)) + sum(dens[t][p[t]]
                 for t in range(T)) for p in itertools.product(range(K), repeat=T)]
        assert float(ours[b]) == pytest.approx(float(torch.tensor(paths).logsumexp(0)), abs=1e-4)


@torch.no_grad()
def test_a_steps_inputs_move_that_steps_emission_only():
    net = glm_model()
    gen = torch.Generator().manual_seed(2)
    obs = torch.cat([torch.randn(1, T, D, generator=gen), torch.randn(1, T, U, generator=gen)], -1)
    changed = obs.clone()
    changed[0, 2, D:] += 3.0
    before, after = net.exact_hmm(obs)[2], net.exact_hmm(changed)[2]
    assert not torch.allclose(before[0, 2], after[0, 2])
    assert torch.equal(before[0, [0, 1, 3, 4]], after[0, [0, 1, 3, 4]])


@pytest.mark.parametrize("emission", ["autoregressive", "autoregressive_full"])
def test_the_m_step_regresses_on_the_inputs(emission):
    """All weight on state 0: the coefficients are least squares of x_t on [x_{t-1}, u_t, 1]."""
    net = glm_model(emission)
    gen = torch.Generator().manual_seed(3)
    u = torch.randn(4, 200, U, generator=gen)
    x = torch.zeros(4, 200, D)
    effect = torch.tensor([[1.5], [-0.7]])  # (D, U)
    for t in range(1, 200):
        x[:, t] = 0.5 * x[:, t - 1] + u[:, t] @ effect.T + 0.1 * torch.randn(4, D, generator=gen)
    weights = torch.zeros(4, 200, K)
    weights[..., 0] = 1.0
    coef = net.emitter.m_step(x, torch.ones(4, 200, dtype=torch.bool), weights, inputs=u)["coef"][0]  # (D, D + U + 1)
    design = torch.cat([x[:, :-1], u[:, 1:], torch.ones(4, 199, 1)], -1).reshape(-1, D + U + 1).double()
    ols = torch.linalg.lstsq(design, x[:, 1:].reshape(-1, D).double()).solution.T
    assert torch.allclose(coef.double(), ols, atol=1e-3)
    assert torch.allclose(coef[:, D:D + U], effect, atol=0.03)


def test_emission_inputs_are_checked_by_family_and_data():
    with pytest.raises(ValueError, match="emission 'gaussian' does not read inputs; use model.emission=autoregressive"):
        DSSM(ModelConfig(n_states=K, obs_dim=D, input_dim=U, emission="gaussian", emission_inputs=True))
    with pytest.raises(ValueError, match="needs exogenous inputs, and the data have none"):
        DSSM(ModelConfig(n_states=K, obs_dim=D, emission="autoregressive", emission_inputs=True))
    with pytest.raises(ValueError, match="reads 1 inputs per step"):
        glm_model().emitter.table(torch.randn(1, T, D))


def opposite_responses(n=24, length=120, seed=0):
    """Two states, sticky (stay 0.95); x_t = w_{c_t} u_t + 0.3 eps with w = (+1.5, -1.5) and u_t ~ N(0, 1): x alone
    is N(0, 2.34) in both states, only its relation to u tells them apart."""
    rng = np.random.default_rng(seed)
    xs, us, zs = [], [], []
    for _ in range(n):
        z = np.zeros(length, dtype=int)
        z[0] = rng.integers(2)
        for t in range(1, length):
            z[t] = z[t - 1] if rng.random() < 0.95 else 1 - z[t - 1]
        u = rng.normal(size=(length, 1))
        xs.append(np.where(z[:, None] == 0, 1.5, -1.5) * u + 0.3 * rng.normal(size=(length, 1)))
        us.append(u)
        zs.append(z)
    return xs, us, zs


def test_states_only_the_inputs_reveal_are_found_decoded_and_sampled():
    xs, us, zs = opposite_responses()
    settings = ["model.emission=autoregressive", "trainer.n_epochs=2", "trainer.guide_warmup_steps=10",
                "trainer.figure_every=0"]
    model = fit(xs, n_states=2, inputs=us, overrides=[*settings, "model.emission_inputs=true"])
    truth = np.concatenate(zs)
    paths = model.predict(xs, inputs=us)
    assert hungarian_accuracy(truth, np.concatenate(paths), 2) > 0.95
    # the same features with the inputs negated: each state's response flips, so the decoded states swap
    flipped = np.concatenate(model.predict(xs, inputs=[-u for u in us]))
    assert np.mean(flipped != np.concatenate(paths)) > 0.9
    # without the inputs in the emission the two states are one law: no better than a coin on some steps
    blind = fit(xs, n_states=2, inputs=us, overrides=settings)
    assert hungarian_accuracy(truth, np.concatenate(blind.predict(xs, inputs=us)), 2) < 0.8
    # sampling follows the given inputs: within each drawn state x answers u with that state's slope
    states, x = model.sample(n=8, T=120, seed=0, inputs=us[0])
    slopes = sorted(float(np.polyfit(np.tile(us[0][:, 0], 8)[states.ravel() == k], x[..., 0].ravel()[
        states.ravel() == k], 1)[0]) for k in range(2))
    assert slopes[0] == pytest.approx(-1.5, abs=0.2) and slopes[1] == pytest.approx(1.5, abs=0.2)


def write_csv(path, xs, us, zs):
    with open(path, "w") as f:
        f.write("sequence,t,x,u,label\n")
        for i, (x, u, z) in enumerate(zip(xs, us, zs)):
            f.writelines(f"s{i},{t},{x[t, 0]:.5f},{u[t, 0]:.5f},{z[t]}\n" for t in range(len(x)))


def test_a_csv_with_input_columns_read_by_the_emission_trains_and_decodes(tmp_path):
    from tests.helpers import run_cli

    xs, us, zs = opposite_responses(n=12, length=100)
    write_csv(tmp_path / "train.csv", xs, us, zs)
    run_dir = tmp_path / "run"
    proc = run_cli("pyro_dssm.train", ["data=csv", f"data.path={tmp_path / 'train.csv'}", "data.time_column=t",
                                       "data.label_column=label", "data.n_states=2", "data.val_fraction=0",
                                       "data.input_columns=[u]", "model.emission=autoregressive",
                                       "model.emission_inputs=true", "trainer.n_epochs=1",
                                       "trainer.guide_warmup_steps=5", "trainer.figure_every=0",
                                       f"hydra.run.dir={run_dir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "inputs ['u'] (U=1): conditioned on, not modelled; read by the emission and the guide" in proc.stdout
    decoded = []
    for name, sign in (("same", 1), ("flipped", -1)):
        write_csv(tmp_path / f"{name}.csv", xs, [sign * u for u in us], zs)
        out = tmp_path / f"{name}_out.csv"
        proc = run_cli("pyro_dssm.decode", [f"checkpoint={run_dir}", f"input={tmp_path / f'{name}.csv'}",
                                            f"output={out}"])
        assert proc.returncode == 0, proc.stderr[-3000:]
        rows = out.read_text().splitlines()
        assert len(rows) == 1 + 12 * 100
        column = rows[0].split(",").index("viterbi_state")
        decoded.append(np.array([int(r.split(",")[column]) for r in rows[1:]]))
    assert hungarian_accuracy(np.concatenate(zs), decoded[0], 2) > 0.95
    assert np.mean(decoded[0] != decoded[1]) > 0.9  # the inputs reach decoding: negated, the states swap


def test_order_zero_without_inputs_is_a_per_state_gaussian_whose_means_the_estimator_reports():
    """ar_order=0, no inputs: N(b_k, diag s_k^2), no first-step density (its parameters not counted)."""
    from pyro_dssm.estimator import DSSM as Estimator

    net = DSSM(ModelConfig(n_states=K, obs_dim=D, emission="autoregressive", ar_order=0))
    assert net.emitter.n_parameters() == K * 2 * D and net.emitter.order == 0 and net.uses_evidence
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(-3, 0.5, (60, D)), rng.normal(3, 0.5, (60, D))])
    model = Estimator(2, emission="autoregressive", ar_order=0, n_epochs=1, init_restarts=1, figure_every=0,
                      random_state=0).fit(X)
    assert np.allclose(np.sort(model.means_[:, 0]), [-3, 3], atol=0.3)


def poisson_glm(seed=0):
    torch.manual_seed(seed)
    net = DSSM(ModelConfig(n_states=K, obs_dim=D, input_dim=U, emission="poisson", emission_inputs=True,
                           transition_hidden=5, emitter_hidden=6, rnn_hidden=4))
    with torch.no_grad():
        net.emitter.input_weight.normal_(0, 0.8)
    return net


@torch.no_grad()
def test_poisson_log_px_given_the_inputs_equals_brute_force_over_paths():
    """rate_k(u_t) = softplus(f(e_k) + W_k u_t) + floor, written out per step and summed over all K^T paths."""
    from torch.distributions import Poisson

    from pyro_dssm.model.emissions.statistics import RATE_FLOOR
    net = poisson_glm()
    gen = torch.Generator().manual_seed(4)
    x, u = torch.poisson(torch.full((2, T, D), 2.0), generator=gen), torch.randn(2, T, U, generator=gen)
    ours = hmm.log_likelihood(*net.exact_hmm(torch.cat([x, u], -1)))
    em, log_trans = net.emitter, net.transition(torch.eye(K)).log_softmax(-1)
    for b in range(2):
        dens = [[float(Poisson(softplus(em.net(torch.eye(K)[k]) + em.input_weight[k] @ u[b, t]) + RATE_FLOOR)
                       .log_prob(x[b, t]).sum()) for k in range(K)] for t in range(T)]
        paths = [-np.log(K) + sum(float(log_trans[p[t - 1], p[t]]) for t in range(1, T)) + sum(dens[t][p[t]]
                 for t in range(T)) for p in itertools.product(range(K), repeat=T)]
        assert float(ours[b]) == pytest.approx(float(torch.tensor(paths).logsumexp(0)), abs=1e-4)


def test_the_poisson_m_step_is_the_weighted_poisson_regression():
    """All weight on state 0 of counts drawn with rate softplus(0.5 + W u): the fit recovers W (to sampling error)
    and is a stationary point of the weighted log-likelihood (its gradient vanishes)."""
    net = poisson_glm()
    gen = torch.Generator().manual_seed(5)
    u = torch.randn(8, 400, U, generator=gen)
    effect = torch.tensor([[1.2], [-0.8]])  # (D, U)
    x = torch.poisson(softplus(0.5 + u @ effect.T), generator=gen)
    weights = torch.zeros(8, 400, K)
    weights[..., 0] = 1.0
    params = net.emitter.m_step(x, torch.ones(8, 400, dtype=torch.bool), weights, inputs=u)
    assert torch.allclose(params["weight"][0], effect, atol=0.1)
    assert torch.allclose(params["bias"][0], torch.full((D,), 0.5), atol=0.1)
    b, W = params["bias"][0].double().requires_grad_(), params["weight"][0].double().requires_grad_()
    rate = softplus(b + u.double() @ W.T) + 1e-4
    ll = (x.double() * rate.log() - rate).sum()
    assert all(float(g.abs().max()) < 1e-3 * x.numel() ** 0.5 for g in torch.autograd.grad(ll, [b, W]))


def test_counts_whose_states_only_the_inputs_reveal():
    """Counts with rate softplus(1 + w_k u_t), w = (+2, -2), fitted as given (data.standardize=false): with the inputs
    in the emission (EM with the Poisson regression, then SVI) the states are found; without, they cannot be; the
    relaxed objective's gradient reaches W."""
    import pyro
    from pyro.infer import Trace_ELBO

    rng = np.random.default_rng(1)
    z = np.zeros((24, 120), dtype=int)
    for t in range(1, 120):
        z[:, t] = np.where(rng.random(24) < 0.95, z[:, t - 1], 1 - z[:, t - 1])
    us = list(rng.normal(size=(24, 120, 1)))
    xs = [rng.poisson(np.log1p(np.exp(1.0 + np.where(zi == 0, 2.0, -2.0)[:, None] * u))).astype(float)
          for zi, u in zip(z, us)]
    settings = ["model.emission=poisson", "data.standardize=false", "trainer.n_epochs=2", "trainer.figure_every=0"]
    model = fit(xs, n_states=2, inputs=us, overrides=[*settings, "model.emission_inputs=true"])
    assert hungarian_accuracy(z.ravel(), np.concatenate(model.predict(xs, inputs=us)), 2) > 0.9
    assert model.sample(n=2, T=30, seed=0, inputs=us[0][:30])[1].min() >= 0  # counts, drawn given the inputs
    blind = fit(xs, n_states=2, inputs=us, overrides=settings)
    assert hungarian_accuracy(z.ravel(), np.concatenate(blind.predict(xs, inputs=us)), 2) < 0.75
    pyro.clear_param_store()
    net = model.model
    obs = torch.as_tensor(np.concatenate([np.stack(xs[:4]), np.stack(us[:4])], -1), dtype=torch.float32)
    loss = Trace_ELBO().differentiable_loss(net.model, net.guide, obs, None, 0.5)
    loss.backward()
    assert torch.isfinite(loss) and float(net.emitter.input_weight.grad.abs().sum()) > 0


@pytest.mark.parametrize("emission", ["autoregressive", "poisson"])
@torch.no_grad()
def test_a_padded_batch_gives_each_sequence_its_own_log_px_given_its_inputs(emission):
    """Ragged sequences with inputs read by the emission: padding (garbage features and inputs) changes nothing."""
    net = glm_model() if emission == "autoregressive" else poisson_glm()
    gen = torch.Generator().manual_seed(6)
    x = torch.poisson(torch.full((2, 7, D), 2.0), generator=gen)
    obs = torch.cat([x, torch.randn(2, 7, U, generator=gen)], -1)
    mask = torch.arange(7) < torch.tensor([7, 4])[:, None]
    garbage = obs.clone()
    garbage[1, 4:] = 50.0
    padded = hmm.log_likelihood(*net.exact_hmm(garbage), mask)
    alone = hmm.log_likelihood(*net.exact_hmm(obs[1:, :4]))
    assert float(padded[1]) == pytest.approx(float(alone[0]), abs=1e-4)
    assert float(padded[0]) == pytest.approx(float(hmm.log_likelihood(*net.exact_hmm(obs[:1]))[0]), abs=1e-4)
