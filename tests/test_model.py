"""Model, guide and the objectives against hand computations with torch's own distributions."""

import pyro
import pytest
import torch
from pyro import poutine
from pyro.infer import Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from torch.distributions import Categorical, Normal, kl_divergence
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from pyro_dssm.model.relaxed import exp_relaxed_log_prob
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.inference.objectives import make_elbo

from .helpers import hand_messages

B, T, K, D = 3, 6, 4, 2
TAU = 0.5


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = DSSM(ModelConfig(n_states=K, obs_dim=D, transition_hidden=8, emitter_hidden=8, rnn_hidden=8, noise_std=0.7))
    model.posterior.readout.reset_parameters()  # a residual away from zero, as after training
    x = torch.randn(B, T, D)
    return model, x


def hand_evidence(model, x):
    """The model's terms the guide adds to its logits: per-state log N(x_t; mu_k, 0.7^2) normalised over k
    plus the backward messages log beta_t (:func:`~tests.helpers.hand_messages`), and log A."""
    eye = torch.eye(K, dtype=x.dtype)
    local = Normal(model.emitter(eye), 0.7).log_prob(x[:, :, None, :]).sum(-1).log_softmax(-1).detach()  # (B, T, K)
    log_trans = model.transition(eye).log_softmax(-1).detach()
    return local + hand_messages(local, log_trans), log_trans


def hand_sample_and_q_logits(model, x, seed):
    """Redo the guide's sampling by hand: uniforms (B, T, K) drawn once, Gumbel-max recursion,
    logits = readout + log p(x_t | k) normalised + prev @ log A."""
    torch.manual_seed(seed)
    net = model.posterior
    local, log_trans = hand_evidence(model, x)
    h = net.birnn(x)[0]
    u = torch.rand(x.shape[0], T, K).clamp(torch.finfo(x.dtype).eps, 1 - torch.finfo(x.dtype).eps)
    prev, hidden = torch.zeros(x.shape[0], K), torch.zeros(x.shape[0], net.hidden_dim)
    ys, q_logits = [], []
    for t in range(T):
        hidden = net.cell(torch.cat([h[:, t], prev], -1), hidden)
        logits = net.readout(hidden) + local[:, t] + (prev @ log_trans if t > 0 else 0)
        g = -torch.log(-torch.log(u[:, t]))
        y = torch.log_softmax((logits + g) / TAU, -1)
        ys.append(y)
        q_logits.append(logits)
        prev = y.exp()
    return torch.stack(ys, 1), torch.stack(q_logits, 1)


def hand_prior_logits(model, y):
    logits = [torch.zeros(y.shape[0], K)]
    for t in range(1, T):
        logits.append(model.transition(y[:, t - 1].exp()))
    return torch.stack(logits, 1)


def hand_reconstruction(model, x, y):
    return Normal(model.emitter(y.exp()), 0.7).log_prob(x).sum((-2, -1))


def test_concrete_objective_equals_hand_computation(setup):
    """``concrete``: the relaxed state fed to the emission, ExpConcrete densities for prior and guide."""
    model, x = setup
    torch.manual_seed(7)
    loss = make_elbo("concrete").differentiable_loss(model.model, model.guide, x, None, TAU)
    y, q_logits = hand_sample_and_q_logits(model, x, 7)
    p_logits = hand_prior_logits(model, y)
    tau = torch.tensor(TAU)
    log_q = ExpRelaxedCategorical(tau, logits=q_logits).log_prob(y).sum(-1)
    log_p = ExpRelaxedCategorical(tau, logits=p_logits).log_prob(y).sum(-1)
    expected = -(hand_reconstruction(model, x, y) + log_p - log_q).sum()
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_trace_objective_equals_hand_computation(setup):
    """``trace``: value and gradient against a hand computation. The latent term is
    log p(c_t | c_{t-1}) - log q(c_t | ...) at c_t = argmax of the relaxed sample, with a
    straight-through state (one-hot forward, relaxed backward); the reconstruction is ``analytic``'s."""
    model, x = setup
    torch.manual_seed(7)
    loss = make_elbo("trace").differentiable_loss(model.model, model.guide, x, None, TAU)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    analytic, y = hand_analytic_loss(model, x, 7)
    q_logits = hand_sample_and_q_logits(model, x, 7)[1]
    p_logits = hand_prior_logits(model, y)
    kl = kl_divergence(Categorical(logits=q_logits), Categorical(logits=p_logits)).sum()
    soft = y.exp()
    states = torch.eye(K)[y.argmax(-1)] + soft - soft.detach()
    log_ratio = (states * (p_logits.log_softmax(-1) - q_logits.log_softmax(-1))).sum()
    expected = analytic - kl - log_ratio  # analytic's reconstruction, the sampled log-ratio for the KL
    assert torch.allclose(loss, expected, rtol=1e-5)
    for g, r in zip(grads, torch.autograd.grad(expected, list(model.parameters()))):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6)
    # neither the relaxed densities nor the exact KL
    assert not torch.allclose(loss, analytic, rtol=1e-3)


def test_unknown_trace_densities_raise():
    from pyro_dssm.inference.objectives import RelaxedTraceELBO

    with pytest.raises(ValueError, match="'discrete' or 'concrete', got 'relaxed'"):
        RelaxedTraceELBO("relaxed")


def test_trace_latent_term_is_unbiased_for_the_categorical_kl(setup):
    """Over many draws, ``trace``'s loss averages to ``analytic``'s (their latent terms differ by
    log q(c_t) - log p(c_t) - KL, whose mean over c_t ~ q is zero); ``concrete``'s does not, and the
    gap is the relaxed KL's excess over the categorical one (same sequence repeated 4000 times)."""
    model, x = setup
    many = x[:1].expand(4000, T, D)
    per_draw = {}
    for objective in ("trace", "analytic", "concrete"):
        torch.manual_seed(5)  # the same relaxed samples for all three
        with torch.no_grad():
            per_draw[objective] = torch.stack([
                make_elbo(objective).differentiable_loss(model.model, model.guide, many[i::40], None, TAU)
                for i in range(40)])  # 40 batch sums of 100 draws each
    diff = per_draw["trace"] - per_draw["analytic"]
    standard_error = diff.std() / 40 ** 0.5
    assert abs(float(diff.mean())) < 4 * float(standard_error) + 1e-3
    excess = per_draw["concrete"] - per_draw["analytic"]
    assert float(excess.mean()) > 10 * float(excess.std() / 40 ** 0.5)


def hand_analytic_loss(model, x, seed, exact_emission_gradient=False):
    """Per step, the exact expectation over c_t given the relaxed sample of the earlier steps:
    sum_k q_k log N(x_t; mu_k, sigma^2) minus the categorical KL. The emission's gradient: from the
    state drawn by the sample's argmax, or (``exact_emission_gradient``) from every state weighted by q."""
    y, q_logits = hand_sample_and_q_logits(model, x, seed)
    kl = kl_divergence(Categorical(logits=q_logits), Categorical(logits=hand_prior_logits(model, y))).sum(-1)
    eye = torch.eye(K)
    table = Normal(model.emitter(eye), 0.7).log_prob(x[:, :, None, :]).sum(-1)  # (B, T, K), with gradient
    if exact_emission_gradient:
        reconstruction = (q_logits.softmax(-1) * table).sum((-2, -1))
    else:
        drawn = Normal(model.emitter(eye[y.argmax(-1)]), 0.7).log_prob(x).sum(-1)  # (B, T)
        reconstruction = ((q_logits.softmax(-1) * table.detach()).sum(-1) + drawn - drawn.detach()).sum(-1)
    return -(reconstruction - kl).sum(), y


def test_analytic_objective_equals_hand_computation(setup):
    """Value and gradient of the analytic loss against :func:`hand_analytic_loss`."""
    model, x = setup
    torch.manual_seed(7)
    loss = make_elbo("analytic").differentiable_loss(model.model, model.guide, x, None, TAU)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    expected, y = hand_analytic_loss(model, x, 7)
    kl = kl_divergence(Categorical(logits=hand_sample_and_q_logits(model, x, 7)[1]),
                       Categorical(logits=hand_prior_logits(model, y))).sum(-1)
    assert torch.allclose(loss, expected, rtol=1e-5)
    for g, r in zip(grads, torch.autograd.grad(expected, list(model.parameters()))):
        assert torch.allclose(g, r, rtol=1e-4, atol=1e-6)
    # not the relaxed sample's reconstruction any more
    assert not torch.allclose(loss, -(hand_reconstruction(model, x, y) - kl).sum(), rtol=1e-3)


def test_analytic_emission_gradient_is_unbiased_for_the_exact_expectation(setup):
    """Over many draws of the states, the emission's gradient from the drawn state averages to the gradient of
    sum_k q_k log p(x_t | k) (same guide, same earlier steps: the sequence repeated 4000 times)."""
    model, x = setup
    many = x[:1].expand(4000, T, D)
    emission = list(model.emitter.parameters())
    torch.manual_seed(5)
    loss = make_elbo("analytic").differentiable_loss(model.model, model.guide, many, None, TAU)
    ours = torch.cat([g.flatten() for g in torch.autograd.grad(loss, emission)])
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(
        hand_analytic_loss(model, many, 5, exact_emission_gradient=True)[0], emission)])
    assert float((ours - exact).norm() / exact.norm()) < 0.05


def test_model_and_guide_site_names_agree(setup):
    model, x = setup
    guide_tr = poutine.trace(model.guide).get_trace(x, None, TAU)
    model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(x, None, TAU)
    def latent(tr):
        return {n for n, site in tr.nodes.items()
                if site["type"] == "sample" and not site["is_observed"] and not site_is_subsample(site)}

    assert latent(model_tr) == latent(guide_tr) == {"c"}
    # the model also runs on its own (ancestral sampling from the prior)
    assert latent(poutine.trace(model.model).get_trace(x, None, TAU)) == {"c"}
    assert model_tr.observation_nodes == ["x"]
    assert guide_tr.nodes["c"]["value"].shape == (B, T, K)


@pytest.mark.parametrize("objective", ["trace", "analytic", "concrete"])
def test_objectives_finite_and_differentiable(setup, objective):
    model, x = setup
    loss = make_elbo(objective).differentiable_loss(model.model, model.guide, x, None, TAU)
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        # every network receives gradient (transition through the latent term, posterior through both)
        assert p.grad.abs().sum() > 0, name


def test_exp_relaxed_log_prob_matches_torch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(5, 4, generator=g)
    tau = torch.tensor(0.3)
    value = ExpRelaxedCategorical(tau, logits=logits).sample()
    expected = ExpRelaxedCategorical(tau, logits=logits).log_prob(value)
    assert torch.allclose(exp_relaxed_log_prob(value, logits, tau), expected, atol=1e-5)


@pytest.mark.parametrize("objective", ["trace", "analytic", "concrete"])
def test_training_at_tau_005_stays_finite(setup, objective):
    """Simplex densities overflow in float32 below tau ~ 0.2; the log-space chain must not."""
    model, x = setup
    x = torch.randn(16, 30, D) * 3
    elbo = make_elbo(objective)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    with pyro.validation_enabled(True):
        for _ in range(30):
            loss = elbo.differentiable_loss(model.model, model.guide, x, None, 0.05)
            opt.zero_grad()
            loss.backward()
            assert torch.isfinite(loss)
            assert all(torch.isfinite(p.grad).all() for p in model.parameters())
            opt.step()


def test_guide_density_of_a_foreign_value_recomputes(setup):
    """log_prob of a value the guide did not just sample runs the recursion teacher-forced."""
    model, x = setup
    tr1 = poutine.trace(model.guide).get_trace(x, None, TAU)
    tr2 = poutine.trace(model.guide).get_trace(x, None, TAU)
    y1 = tr1.nodes["c"]["value"]
    d2 = tr2.nodes["c"]["fn"]
    assert torch.allclose(d2.log_prob(y1.clone()), tr1.nodes["c"]["fn"].log_prob(y1), rtol=1e-5)


def test_bad_shapes_raise(setup):
    model, _ = setup
    with pytest.raises(ValueError, match=r"\(B, T, 2\)"):
        model.model(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="n_states"):
        ModelConfig(n_states=1)


@pytest.mark.parametrize("objective, reference", [("concrete", Trace_ELBO), ("analytic", TraceMeanField_ELBO)])
@pytest.mark.parametrize("masked", [False, True])
def test_objectives_equal_pyros_own_elbos(setup, objective, reference, masked, monkeypatch):
    """The device-side losses are Pyro's Trace_ELBO / TraceMeanField_ELBO: same value, same gradient.

    Pyro's mean-field class reads the observed site's log-density; ours averages the reconstruction
    exactly over c_t (tested above), so for this comparison that average is switched off. Pyro's class
    takes the latent term from a registered KL, which has no argument for the sample: for this
    comparison one is registered that reads the sample the guide drew (ours passes it explicitly)."""
    from torch.distributions import kl as torch_kl

    from pyro_dssm.inference import objectives
    from pyro_dssm.model.relaxed import RelaxedChainPosterior, RelaxedChainPrior, chain_kl

    monkeypatch.setattr(objectives, "_averaged", lambda site: False)  # every observed site by its log-density
    monkeypatch.setitem(torch_kl._KL_REGISTRY, (RelaxedChainPosterior, RelaxedChainPrior),
                        lambda q, p: chain_kl(q, p, q._drawn[0]))  # the memo: the drawn sample
    monkeypatch.setattr(torch_kl, "_KL_MEMOIZE", {})
    model, x = setup
    mask = None
    if masked:
        mask = torch.ones(B, T, dtype=torch.bool)
        mask[0, T - 2:] = False
    results = []
    for elbo in (make_elbo(objective), reference()):
        model.zero_grad()
        torch.manual_seed(11)  # the same Gumbel noise for both
        loss = elbo.differentiable_loss(model.model, model.guide, x, mask, TAU)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    (loss, grads), (ref_loss, ref_grads) = results
    assert isinstance(make_elbo(objective), reference)
    assert torch.allclose(loss, ref_loss, rtol=1e-6), (loss, ref_loss)
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-5, atol=1e-6)


def hand_unroll(model, x, choose):
    """The guide's recursion by hand; ``choose(logits)`` gives the index of the state fed next."""
    net = model.posterior
    local, log_trans = hand_evidence(model, x)
    h = net.birnn(x)[0]
    prev, hidden = torch.zeros(B, K, dtype=x.dtype), torch.zeros(B, net.hidden_dim, dtype=x.dtype)
    q_logits, states = [], []
    for t in range(T):
        hidden = net.cell(torch.cat([h[:, t], prev], -1), hidden)
        logits = net.readout(hidden) + local[:, t] + (prev @ log_trans if t > 0 else 0)
        state = choose(logits)
        prev = torch.eye(K, dtype=x.dtype)[state]
        q_logits.append(logits)
        states.append(state)
    return torch.stack(q_logits, 1), torch.stack(states, 1)


def test_greedy_decoding_feeds_the_argmax(setup):
    model, x = setup
    expected, _ = hand_unroll(model, x, lambda logits: logits.argmax(-1))
    assert torch.allclose(model.guide_logits(x), expected, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_discrete_elbo_equals_hand_computation(setup, dtype):
    """One hard path from the guide (same generator draws); per step sum_k q_k log N(x_t; mu_k) at the path's
    earlier steps minus the categorical KL."""
    from pyro_dssm.evaluation.evaluate import discrete_elbo

    model, x = setup
    model, x = model.to(dtype), x.to(dtype)
    gen = torch.Generator().manual_seed(4)
    q_logits, path = hand_unroll(model, x, lambda logits: torch.multinomial(logits.softmax(-1), 1, generator=gen)[:, 0])
    eye = torch.eye(K, dtype=dtype)
    p_logits = torch.cat([torch.zeros(B, 1, K, dtype=dtype), model.transition(eye[path[:, :-1]])], 1)
    table = Normal(model.emitter(eye), 0.7).log_prob(x[:, :, None, :]).sum(-1)  # (B, T, K)
    expected = ((q_logits.softmax(-1) * table).sum(-1)
                - kl_divergence(Categorical(logits=q_logits), Categorical(logits=p_logits))).sum(-1)
    mask = torch.ones(B, T, dtype=torch.bool)
    with torch.no_grad():
        ours = discrete_elbo(model, x, mask, torch.Generator().manual_seed(4))
    assert ours.dtype == dtype
    assert torch.allclose(ours, expected.detach(), rtol=1e-5)


def test_float64_model_guide_and_objectives(setup):
    model, x = setup
    model, x = model.double(), x.double()
    log_init, log_trans, means = model.hmm_parameters()
    assert {log_init.dtype, log_trans.dtype, means.dtype} == {torch.float64}
    assert model.guide_logits(x).dtype == torch.float64
    for objective in ("trace", "analytic", "concrete"):
        loss = make_elbo(objective).differentiable_loss(model.model, model.guide, x, None, TAU)
        assert loss.dtype == torch.float64 and torch.isfinite(loss)
