"""Transitions that read the observed past (``model.transition=recurrent``) and the track data that needs them.

Oracles: the transition network evaluated step by step at one-hot states (against the per-step table),
brute force over all K^T paths with a time-varying table, the true process's own switch frequencies.
"""

import itertools
import math

import pyro
import pytest
import torch
from pyro.infer import Trace_ELBO

from pyro_dssm.config import RecurrentDataConfig
from pyro_dssm.data.recurrent import make_recurrent
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.model.exact import ExactBaseline
from tests.helpers import compose_config, run_cli

K, D, T = 2, 1, 5


def recurrent_model(cls=DSSM, **kwargs):
    torch.manual_seed(0)
    return cls(ModelConfig(n_states=K, obs_dim=D, emission="autoregressive", transition="recurrent", **kwargs))


def test_the_per_step_table_is_the_network_at_each_one_hot_state_and_last_observation():
    model = recurrent_model()
    x = torch.randn(3, T, D, generator=torch.Generator().manual_seed(1)) * 5
    with torch.no_grad():
        table = model.transition_parameters(x)[1]  # (B, T, K, K)
        assert table.shape == (3, T, K, K) and torch.allclose(table.logsumexp(-1), torch.zeros(3, T, K), atol=1e-6)
        for b, t, i in [(0, 1, 0), (1, 3, 1), (2, 4, 0)]:
            prev = torch.nn.functional.one_hot(torch.tensor(i), K).float()
            by_hand = model.transition(prev, x[b, t - 1]).log_softmax(-1)
            assert torch.allclose(table[b, t, i], by_hand, atol=1e-6)
        changed = x.clone()
        changed[:, 2] += 3.0  # moves the table into step 3 only
        other = model.transition_parameters(changed)[1]
        assert torch.allclose(other[:, :3], table[:, :3]) and not torch.allclose(other[:, 3], table[:, 3])


def test_a_stationary_transition_ignores_x():
    torch.manual_seed(0)
    model = DSSM(ModelConfig(n_states=3, obs_dim=2))
    x = torch.randn(2, 4, 2)
    assert torch.equal(model.transition_parameters(x)[1], model.transition_parameters()[1])


def brute_force_log_px(log_init, log_trans, log_lik):
    """log p(X) of one sequence with a per-step table log_trans (T, K, K), by summing over all K^T paths."""
    total = -math.inf
    for path in itertools.product(range(log_lik.shape[-1]), repeat=log_lik.shape[0]):
        value = float(log_init[path[0]] + log_lik[0, path[0]])
        for t in range(1, len(path)):
            value += float(log_trans[t, path[t - 1], path[t]] + log_lik[t, path[t]])
        total = float(torch.logaddexp(torch.tensor(total), torch.tensor(value)))
    return total


def assert_log_px_is_brute_force(model, x):
    """The forward algorithm's log p(X) of each sequence of x (B, T, ...) under ``model``'s exact HMM with its per-step
    table equals :func:`brute_force_log_px`."""
    with torch.no_grad():
        log_init, log_trans, log_lik = model.exact_hmm(x)
        ours = hmm.log_likelihood(log_init, log_trans, log_lik)
    for b in range(x.shape[0]):
        assert float(ours[b]) == pytest.approx(brute_force_log_px(log_init, log_trans[b], log_lik[b]), abs=1e-4)


def test_exact_log_px_with_recurrent_transitions_equals_brute_force():
    assert_log_px_is_brute_force(recurrent_model(ExactBaseline),
                                 torch.randn(2, T, D, generator=torch.Generator().manual_seed(2)) * 3)


def test_the_svi_loss_with_recurrent_transitions_is_finite_and_reaches_the_transition_network():
    pyro.clear_param_store()
    model = recurrent_model()
    x = torch.randn(4, 20, D, generator=torch.Generator().manual_seed(3)).cumsum(1)
    loss = Trace_ELBO().differentiable_loss(model.model, model.guide, x, None, 0.5)
    loss.backward()
    assert torch.isfinite(loss)
    grads = [p.grad for p in model.transition.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(model.transition.net[0].weight.grad[:, K:].abs().sum()) > 0  # the x_{t-1} inputs get a gradient


def test_the_track_turns_at_its_ends_and_its_oracle_table_is_a_distribution():
    data = make_recurrent(RecurrentDataConfig(n_train=50, n_val=20), seed=0)
    x, states = data.train.x[..., 0], data.train.states
    turned = states[:, 1:] != states[:, :-1]
    heading_out = torch.where(states[:, :-1] == 0, x[:, :-1], -x[:, :-1])  # d_k x_{t-1}
    past_end = heading_out > data.params.half_length + 1
    assert float(turned[past_end].float().mean()) > 0.8 and float(turned[heading_out < 0].float().mean()) < 0.05
    table = data.params.log_transitions(data.val.x)
    assert torch.allclose(table.exp().sum(-1), torch.ones(table.shape[:-1]))


def test_data_recurrent_trains_from_the_cli_with_its_oracle(tmp_path):
    overrides = ["data=recurrent", "data.n_train=64", "data.n_val=32", "data.seq_len=60", "trainer.n_epochs=1",
                 "trainer.batch_size=32", "trainer.guide_warmup_steps=5", "trainer.figure_every=0",
                 f"hydra.run.dir={tmp_path}"]
    assert compose_config(overrides[:1]).model.transition == "recurrent"
    proc = run_cli("pyro_dssm.train", overrides)
    assert proc.returncode == 0, proc.stderr
    assert "oracle (true HMM) validation accuracy" in proc.stdout + proc.stderr
