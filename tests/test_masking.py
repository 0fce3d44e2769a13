"""Padding never counts: the loss of a padded batch is the sum of the losses of its sequences one by one."""

import pytest
import torch
from pyro import poutine
from torch.distributions import Categorical, Normal, kl_divergence
from torch.distributions.relaxed_categorical import ExpRelaxedCategorical

from pyro_dssm.evaluation.evaluate import evaluate
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.inference.objectives import make_elbo

from .helpers import hand_messages

K, D, SIGMA, TAU = 3, 2, 0.8, 0.6
LENGTHS = [1, 6, 3]  # a length-1 sequence and one of length T_max = 6


@pytest.fixture
def batch():
    torch.manual_seed(0)
    model = DSSM(ModelConfig(n_states=K, obs_dim=D, transition_hidden=8, emitter_hidden=8, rnn_hidden=8,
                             noise_std=SIGMA))
    T = max(LENGTHS)
    x = torch.full((len(LENGTHS), T, D), 100.0)  # padding holds junk that must not matter
    mask = torch.arange(T) < torch.tensor(LENGTHS)[:, None]
    x[mask] = torch.randn(int(mask.sum()), D)
    return model, x, mask


def one_sequence_loss(model, x, y, objective):
    """Negative ELBO of ONE unpadded sequence x (T, D) at the relaxed sample y (T, K), by hand.

    The guide's BiGRU runs over exactly these T steps; its GRU cell and the
    transition network are unrolled step by step with torch's own densities.
    """
    net = model.posterior
    eye = torch.eye(K)
    table = Normal(model.emitter(eye), SIGMA).log_prob(x[:, None, :]).sum(-1)  # (T, K)
    log_trans = model.transition(eye).log_softmax(-1).detach()
    local = table.detach().log_softmax(-1)  # the model's evidence added to the guide's logits
    local = local + hand_messages(local[None], log_trans)[0]  # with the backward messages of these T steps
    h = net.birnn(x[None])[0][0]  # (T, 2H)
    prev, hidden = torch.zeros(1, K), torch.zeros(1, net.hidden_dim)
    q_logits, p_logits = [], [torch.zeros(K)]
    for t in range(len(x)):
        hidden = net.cell(torch.cat([h[t][None], prev], -1), hidden)
        q_logits.append(net.readout(hidden)[0] + local[t] + (prev[0] @ log_trans if t > 0 else 0))
        prev = y[t][None].exp()
        if t + 1 < len(x):
            p_logits.append(model.transition(y[t].exp()))
    q_logits, p_logits = torch.stack(q_logits), torch.stack(p_logits)
    if objective == "concrete":  # the relaxed state fed to the emission, the relaxed densities
        recon = Normal(model.emitter(y.exp()), SIGMA).log_prob(x).sum()
        tau = torch.tensor(TAU)
        latent = (ExpRelaxedCategorical(tau, logits=p_logits).log_prob(y)
                  - ExpRelaxedCategorical(tau, logits=q_logits).log_prob(y)).sum()
        return -(recon + latent)
    recon = (q_logits.softmax(-1) * table).sum()  # averaged exactly over c_t given the earlier steps
    if objective == "trace":  # log p(c_t | c_{t-1}) - log q(c_t | ...) at the sampled state
        c = y.argmax(-1)
        steps = torch.arange(len(x))
        latent = (p_logits.log_softmax(-1)[steps, c] - q_logits.log_softmax(-1)[steps, c]).sum()
    else:
        latent = -kl_divergence(Categorical(logits=q_logits), Categorical(logits=p_logits)).sum()
    return -(recon + latent)


@pytest.mark.parametrize("objective", ["trace", "analytic", "concrete"])
def test_padded_loss_is_the_sum_of_unpadded_losses(batch, objective):
    model, x, mask = batch
    torch.manual_seed(3)
    loss = make_elbo(objective).differentiable_loss(model.model, model.guide, x, mask, TAU)
    torch.manual_seed(3)  # the same uniforms again: the guide's sample inside that loss
    y = poutine.trace(model.guide).get_trace(x, mask, TAU).nodes["c"]["value"]
    expected = sum(one_sequence_loss(model, x[i, :T], y[i, :T], objective) for i, T in enumerate(LENGTHS))
    assert torch.allclose(loss, expected, rtol=1e-5)


def test_guide_states_and_validation_metrics_ignore_padding(batch):
    model, x, mask = batch
    logits = model.guide_logits(x, mask)
    for i, T in enumerate(LENGTHS):
        alone = model.guide_logits(x[i:i + 1, :T])
        assert torch.allclose(logits[i, :T], alone[0], atol=1e-6)
    states = torch.randint(0, K, mask.shape).masked_fill(~mask, -1)
    data = SequenceData(x, torch.tensor(LENGTHS), states)
    padded = evaluate(model, data, seed=0)
    junk = SequenceData(x.masked_fill(~mask[..., None], -7.0), torch.tensor(LENGTHS), states)
    again = evaluate(model, junk, seed=0)
    for key in ("val_loglik_per_step", "val_elbo_per_step", "val_accuracy", "viterbi_accuracy", "val_nmi"):
        assert padded[key] == pytest.approx(again[key], rel=1e-5), key
