"""The one-site chain model against a one-site-per-step reference Pyro model.

The reference is the textbook way to write the DSSM in Pyro: a ``pyro.markov``
loop with one ``c_t`` site per step, each torch's own ``ExpRelaxedCategorical``.
The package draws the whole chain as one site ``c`` (B, T, K) to pay Pyro's
per-site costs once (see ``benchmarks/speed.py``); on the same sampled chain
both must give the same log-joint, the same guide density and the same loss,
for both objectives, ragged sequences included.
"""

import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro import poutine
from pyro.distributions.torch_distribution import TorchDistributionMixin
from torch.distributions import Categorical, kl_divergence
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical as TorchExpRelaxedCategorical

from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.inference.objectives import make_elbo

from .helpers import hand_messages

B, T, K, D = 4, 7, 3, 2
TAU = 0.4
SIGMA = 0.8


class ExpRelaxedCategorical(TorchExpRelaxedCategorical, TorchDistributionMixin):
    """torch's ExpRelaxedCategorical as a Pyro distribution (how ``pyro.distributions`` wraps torch's)."""


def reference_model(model: DSSM, x, mask, tau):
    # p(x_{1:T} | c_{1:T}) p(c_{1:T}), one site per step
    tau = torch.tensor(tau)
    logits = x.new_zeros(x.shape[0], K)  # uniform p(c_1)
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(x.shape[1])):
            with poutine.mask(mask=mask[:, t]):
                y = pyro.sample(f"c_{t}", ExpRelaxedCategorical(tau, logits=logits))
                mean = model.emitter(y.exp())
                pyro.sample(f"x_{t}", dist.Normal(mean, SIGMA).to_event(1), obs=x[:, t])
            logits = model.transition(y.exp())


def hand_table(model: DSSM, x):
    """(B, T, K) log N(x_t; mu_k, SIGMA^2 I) of every state and the (K, K) log transition matrix."""
    eye = torch.eye(K)
    table = dist.Normal(model.emitter(eye), SIGMA).log_prob(x[:, :, None, :]).sum(-1)
    return table, model.transition(eye).log_softmax(-1)


def reference_guide(model: DSSM, x, mask, tau):
    # q(c_{1:T} | x_{1:T}), one site per step
    tau = torch.tensor(tau)
    net = model.posterior
    table, log_trans = hand_table(model, x)
    local, log_trans = table.detach().log_softmax(-1), log_trans.detach()  # the model's evidence, an input
    local = local + hand_messages(local, log_trans, mask.sum(-1))  # with the backward messages
    features = net.encode(x, mask.sum(-1))
    prev, hidden = net.initial(features)
    with pyro.plate("sequences", x.shape[0]):
        for t in pyro.markov(range(x.shape[1])):
            logits, hidden = net.step(features[:, t], prev, hidden)
            logits = logits + local[:, t] + (prev @ log_trans if t > 0 else 0)
            with poutine.mask(mask=mask[:, t]):
                y = pyro.sample(f"c_{t}", ExpRelaxedCategorical(tau, logits=logits))
            prev = y.exp()


@pytest.fixture
def setup():
    torch.manual_seed(0)
    model = DSSM(ModelConfig(n_states=K, obs_dim=D, transition_hidden=8, emitter_hidden=8, rnn_hidden=8,
                             noise_std=SIGMA))
    x = torch.randn(B, T, D)
    lengths = torch.tensor([T, 5, T, 2])
    mask = torch.arange(T) < lengths[:, None]
    return model, x, mask


def package_traces(model, x, mask, seed):
    """Guide trace (the sampled chain) and the model replayed on it, as Trace_ELBO builds them."""
    pyro.set_rng_seed(seed)
    guide_tr = poutine.trace(model.guide).get_trace(x, mask, TAU)
    model_tr = poutine.trace(poutine.replay(model.model, trace=guide_tr)).get_trace(x, mask, TAU)
    return model_tr, guide_tr


def reference_traces(model, x, mask, chain):
    """Reference model and guide, each step's site conditioned on the package's chain (B, T, K)."""
    values = {f"c_{t}": chain[:, t] for t in range(T)}
    guide_tr = poutine.trace(poutine.condition(reference_guide, data=values)).get_trace(model, x, mask, TAU)
    model_tr = poutine.trace(poutine.condition(reference_model, data=values)).get_trace(model, x, mask, TAU)
    return model_tr, guide_tr


def test_same_log_joint_and_guide_density_on_the_same_chain(setup):
    model, x, mask = setup
    model_tr, guide_tr = package_traces(model, x, mask, seed=3)
    chain = guide_tr.nodes["c"]["value"]
    ref_model_tr, ref_guide_tr = reference_traces(model, x, mask, chain)
    assert torch.allclose(model_tr.log_prob_sum(), ref_model_tr.log_prob_sum(), rtol=1e-5)
    assert torch.allclose(guide_tr.log_prob_sum(), ref_guide_tr.log_prob_sum(), rtol=1e-5)


def test_concrete_elbo_loss_equals_reference(setup):
    """``concrete`` is Trace_ELBO on the relaxed densities of the reference's per-step sites."""
    model, x, mask = setup
    pyro.set_rng_seed(3)
    loss = make_elbo("concrete").differentiable_loss(model.model, model.guide, x, mask, TAU)
    _, guide_tr = package_traces(model, x, mask, seed=3)  # same seed -> the chain that loss used
    ref_model_tr, ref_guide_tr = reference_traces(model, x, mask, guide_tr.nodes["c"]["value"])
    expected = -(ref_model_tr.log_prob_sum() - ref_guide_tr.log_prob_sum())
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_analytic_loss_equals_reference(setup):
    """sum_t sum_k q(c_t = k | .) log p(x_t | k) minus sum_t KL(q(c_t | .) || p(c_t | c_{t-1})) over valid steps."""
    model, x, mask = setup
    pyro.set_rng_seed(3)
    loss = make_elbo("analytic").differentiable_loss(model.model, model.guide, x, mask, TAU)
    _, guide_tr = package_traces(model, x, mask, seed=3)
    ref_model_tr, ref_guide_tr = reference_traces(model, x, mask, guide_tr.nodes["c"]["value"])
    table = hand_table(model, x)[0]
    reconstruction = sum(((ref_guide_tr.nodes[f"c_{t}"]["fn"].logits.softmax(-1) * table[:, t]).sum(-1)
                          * mask[:, t]).sum() for t in range(T))
    kl = sum((kl_divergence(Categorical(logits=ref_guide_tr.nodes[f"c_{t}"]["fn"].logits),
                            Categorical(logits=ref_model_tr.nodes[f"c_{t}"]["fn"].logits)) * mask[:, t]).sum()
             for t in range(T))
    assert torch.allclose(loss, -(reconstruction - kl), rtol=1e-5)


def test_reference_model_runs_under_trace_elbo(setup):
    """The reference is itself a valid Pyro model/guide pair (sites match, validation on)."""
    model, x, mask = setup
    loss = pyro.infer.Trace_ELBO().differentiable_loss(reference_model, reference_guide, model, x, mask, TAU)
    assert torch.isfinite(loss)
