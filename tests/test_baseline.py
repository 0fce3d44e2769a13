"""Exact baseline and exact maths against Pyro's enumeration and against hmmlearn on the same numbers."""

import numpy as np
import pytest
import torch

from pyro_dssm.model import hmm
from pyro_dssm.model.exact import ExactBaseline
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.evaluation.evaluate import oracle_metrics
from pyro_dssm.evaluation.metrics import hungarian_accuracy
from pyro_dssm.model.dssm import ModelConfig


@pytest.fixture
def net_and_batch():
    torch.manual_seed(0)
    net = ExactBaseline(ModelConfig(n_states=3, obs_dim=2, noise_std=0.8))
    x = torch.randn(4, 7, 2)
    mask = torch.ones(4, 7, dtype=torch.bool)
    mask[1, 4:] = False
    mask[2, 1:] = False
    return net, x, mask


def test_fast_loss_equals_trace_enum_loss_of_enumerated_model(net_and_batch):
    net, x, mask = net_and_batch
    fast = net.elbo().differentiable_loss(net.model, net.guide, x, mask)
    enum = net.enum_elbo().differentiable_loss(net.enum_model, net.guide, x, mask)
    assert torch.allclose(fast, enum, rtol=1e-5)
    # and both are -sum log p(X) of the exact forward algorithm
    log_init, log_trans, means = net.hmm_parameters()
    ll = hmm.gaussian_log_likelihood(x, means, 0.8)
    assert torch.allclose(fast, -hmm.forward(log_init, log_trans, ll, mask)[1].sum(), rtol=1e-5)
    # gradients agree too
    g_fast = torch.autograd.grad(fast, list(net.parameters()))
    g_enum = torch.autograd.grad(net.enum_elbo().differentiable_loss(net.enum_model, net.guide, x, mask),
                                 list(net.parameters()))
    for a, b in zip(g_fast, g_enum):
        assert torch.allclose(a, b, atol=1e-4)


def test_viterbi_equals_infer_discrete(net_and_batch):
    net, x, mask = net_and_batch
    ours = net.viterbi(x, mask)
    pyro_path = net.viterbi_infer_discrete(x, mask)
    assert torch.equal(ours[mask], pyro_path[mask])


def _true_hmmlearn(params):
    from hmmlearn.hmm import GaussianHMM

    K = params.n_states
    peer = GaussianHMM(n_components=K, covariance_type="spherical", init_params="", params="")
    peer.n_features = params.means.shape[1]
    peer.startprob_ = params.initial.double().numpy()
    peer.transmat_ = params.transition.double().numpy()
    peer.means_ = params.means.double().numpy()
    peer.covars_ = np.full(K, params.noise_std**2)
    return peer


def test_log_likelihood_viterbi_and_oracle_equal_hmmlearn():
    pytest.importorskip("hmmlearn", reason="hmmlearn not installed (pip install -e '.[dev]')")
    data = make_synthetic(n_states=4, obs_dim=3, seq_len=60, n_train=1, n_val=8, transition_bias=0.7, seed=5)
    p, val = data.params, data.val
    peer = _true_hmmlearn(p)
    X = val.x.reshape(-1, 3).double().numpy()
    lengths = [60] * 8
    ll = hmm.gaussian_log_likelihood(val.x.double(), p.means.double(), p.noise_std)
    log_init, log_trans = p.initial.double().log(), p.transition.double().log()
    ours = hmm.log_likelihood(log_init, log_trans, ll).sum().item()
    assert ours == pytest.approx(peer.score(X, lengths), rel=1e-9)
    peer_lp, peer_path = peer.decode(X, lengths, algorithm="viterbi")
    path, log_joint = hmm.viterbi(log_init, log_trans, ll)
    assert np.array_equal(path.reshape(-1).numpy(), peer_path)
    assert log_joint.sum().item() == pytest.approx(peer_lp, rel=1e-9)
    marg = hmm.posterior_marginals(log_init, log_trans, ll)
    assert np.allclose(marg.reshape(-1, 4).numpy(), peer.predict_proba(X, lengths), atol=1e-8)


def test_oracle_accuracy_reproduced_by_hmmlearn_on_default_data_seed_0():
    """The oracle of the default data (seed 0), recomputed from hmmlearn's marginals with the true parameters."""
    pytest.importorskip("hmmlearn", reason="hmmlearn not installed (pip install -e '.[dev]')")
    data = make_synthetic(seed=0)
    peer = _true_hmmlearn(data.params)
    X = data.val.x.reshape(-1, data.params.means.shape[1]).double().numpy()
    peer_pred = peer.predict_proba(X, [data.val.x.shape[1]] * len(data.val)).argmax(1)
    peer_acc = hungarian_accuracy(data.val.states.reshape(-1), peer_pred, data.params.n_states)
    ours = oracle_metrics(data.params, data.val)["oracle_accuracy"]
    assert ours == pytest.approx(peer_acc, abs=1e-9)
    assert 0.97 < ours < 0.995  # the documented ceiling of the default data (0.9857 for seed 0)


def test_baum_welch_step_equals_hmmlearn_em_step():
    """One EM iteration (means and transitions; uniform start and sigma fixed) equals hmmlearn's."""
    pytest.importorskip("hmmlearn", reason="hmmlearn not installed (pip install -e '.[dev]')")
    from pyro_dssm.data.chain import sticky_transition
    from pyro_dssm.inference.em import baum_welch
    from pyro_dssm.model.emissions.gaussian import GaussianEmission

    data = make_synthetic(n_states=3, obs_dim=2, seq_len=40, n_train=6, n_val=1, seed=2)
    x = data.train.x.double()
    g = torch.Generator().manual_seed(0)
    means0 = torch.randn(3, 2, generator=g, dtype=torch.float64)
    trans0 = sticky_transition(3, 0.7).double()
    emitter = GaussianEmission(3, 2, 8, noise_std=1.0).double()
    params, trans, _ = baum_welch(emitter, {"mean": means0}, x, data.train.mask.bool(), trans0, n_iter=2)
    means = params["mean"]

    from hmmlearn.hmm import GaussianHMM

    peer = GaussianHMM(n_components=3, covariance_type="spherical", n_iter=2, tol=0.0, params="tm", init_params="")
    peer.startprob_ = np.full(3, 1 / 3)
    peer.transmat_ = trans0.numpy()
    peer.means_ = means0.numpy()
    peer.covars_ = np.ones(3)
    peer.fit(x.reshape(-1, 2).numpy(), [40] * 6)
    assert np.allclose(means.numpy(), peer.means_, atol=1e-6)
    assert np.allclose(trans.numpy(), peer.transmat_, atol=1e-5)


def test_float64_baseline_end_to_end(net_and_batch):
    """A float64 network gives a float64 HMM, and its fast loss, Viterbi path and marginals agree
    with Pyro's enumeration in float64."""
    net, x, mask = net_and_batch
    net, x = net.double(), x.double()
    assert all(p.dtype == torch.float64 for p in net.hmm_parameters())
    fast = net.elbo().differentiable_loss(net.model, net.guide, x, mask)
    enum = net.enum_elbo().differentiable_loss(net.enum_model, net.guide, x, mask)
    assert fast.dtype == torch.float64
    assert torch.allclose(fast, enum, rtol=1e-12)
    assert torch.equal(net.viterbi(x, mask)[mask], net.viterbi_infer_discrete(x, mask)[mask])
    marg = net.marginals(x, mask)
    assert marg.dtype == torch.float64
    assert torch.allclose(marg.sum(-1), torch.ones_like(marg[..., 0]))


def test_enum_and_forward_training_give_the_same_trajectory():
    """baseline.elbo=enum (TraceEnum_ELBO over one Categorical site per step) and the default forward-algorithm
    factor are the same loss, -log p(X): trained from the same start, every evaluation matches."""
    from pyro_dssm.config import TrainerConfig
    from pyro_dssm.inference.mle import fit_baseline
    from pyro_dssm.io.tracking import Tracker

    data = make_synthetic(n_states=3, obs_dim=2, seq_len=8, n_train=24, n_val=8, seed=3)
    cfg = TrainerConfig(n_epochs=3, batch_size=8, lr=0.05, init="none", device="cpu")
    runs = {}
    for elbo in ("forward", "enum"):
        torch.manual_seed(0)
        net = ExactBaseline(ModelConfig(n_states=3, obs_dim=2, noise_std=1.0))
        runs[elbo] = fit_baseline(net, data.train, data.val, cfg, Tracker("unused", enabled=False), seed=0, elbo=elbo)
    for a, b in zip(runs["forward"]["history"], runs["enum"]["history"], strict=True):
        assert a["val_loglik_per_step"] == pytest.approx(b["val_loglik_per_step"], rel=1e-5)
        assert a["viterbi_accuracy"] == b["viterbi_accuracy"]
    assert runs["forward"]["history"][-1]["val_loglik_per_step"] > runs["forward"]["history"][0]["val_loglik_per_step"]
    assert runs["forward"]["final_loss"] == pytest.approx(runs["enum"]["final_loss"], rel=1e-5)
    with pytest.raises(ValueError, match="baseline.elbo must be one of"):
        fit_baseline(net, data.train, data.val, cfg, Tracker("unused", enabled=False), elbo="sum")


def test_the_screening_round_keeps_the_finalists_and_their_em_path():
    """init_screen_iters: with every candidate a finalist the init is exactly the unscreened one (Baum-Welch is
    deterministic, 3 + 17 iterations = 20); with one finalist it is the screening round's leader after all 20."""
    from pyro_dssm.data.chain import sticky_transition
    from pyro_dssm.inference.em import baum_welch, fit_classical, start_labels

    data = make_synthetic(n_states=3, obs_dim=2, seq_len=40, n_train=20, n_val=2, noise_std=1.5, seed=4)
    x, mask = data.train.x, data.train.mask
    emitter = ExactBaseline(ModelConfig(n_states=3, obs_dim=2, emission="gaussian_scale")).emitter

    def run(**screen):
        return fit_classical(emitter, x, mask, torch.Generator().manual_seed(0), "em", 2, 20, **screen)

    full, screened = run(), run(screen_iters=3, finalists=8)  # 2 k-means + 6 random starts: all finalists
    assert full[3] == screened[3] and full[2] == pytest.approx(screened[2], abs=1e-6)
    assert torch.allclose(full[1], screened[1], atol=1e-6)
    # one finalist: the candidate that led after 3 iterations, run to 20 (replayed by hand with the same draws)
    gen, leader = torch.Generator().manual_seed(0), None
    kappa = emitter.em_stickiness * float(mask.sum()) / 3
    for restart in range(8):
        labels, centres = start_labels(x, mask, gen, 3, random=restart >= 2)
        state = baum_welch(emitter, emitter.start(x, mask, labels, centres), x, mask, sticky_transition(3, 0.8), 3,
                           kappa)
        if leader is None or state[2] > leader[2]:
            leader = (*state, restart)
    one = run(screen_iters=3, finalists=1)
    assert one[3] == leader[3]
    assert one[2] == pytest.approx(baum_welch(emitter, leader[0], x, mask, leader[1], 17, kappa)[2], abs=1e-6)
