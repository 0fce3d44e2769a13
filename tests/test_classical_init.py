"""The classical init's two shortcuts: the networks' output layers solved for exactly (no Adam), and Baum-Welch
stopped once converged (``trainer.init_em_tol``). Oracles: numpy's least squares, and Baum-Welch's own
iterations replayed one count at a time."""

import numpy as np
import pytest
import torch

from pyro_dssm.config import TrainerConfig
from pyro_dssm.data.chain import sticky_transition
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.inference import em
from pyro_dssm.model.dssm import ModelConfig
from pyro_dssm.model.exact import ExactBaseline
from pyro_dssm.model.networks import fit_output_layer, mlp
from pyro_dssm.model.transitions.stationary import LOGIT_FLOOR, StationaryTransition


def test_the_output_layer_is_solved_exactly_at_the_one_hot_states():
    torch.manual_seed(0)
    net, eye = mlp(6, 32, 4), torch.eye(6)
    first = net[0].weight.detach().clone()
    targets = 5 * torch.randn(6, 4)
    assert fit_output_layer(net, eye, targets) is None
    assert torch.allclose(net(eye), targets, atol=1e-4)
    assert torch.equal(net[0].weight, first)  # only the last layer moves


def test_too_few_hidden_units_leave_the_least_squares_fit_and_a_loss_to_finish():
    """H = 2 hidden units cannot give 6 states 3 free outputs: the closure is returned, and the last layer is at
    the least-squares optimum over the hidden features, numpy's ``lstsq`` of the same design."""
    torch.manual_seed(1)
    net, eye = mlp(6, 2, 3), torch.eye(6)
    targets = torch.randn(6, 3)
    with torch.no_grad():
        hidden = net[:-1](eye).double().numpy()
    design = np.concatenate([hidden, np.ones((6, 1))], 1)
    best = np.linalg.lstsq(design, targets.double().numpy(), rcond=None)[0]
    loss = fit_output_layer(net, eye, targets)
    assert loss is not None
    expected = float(((design @ best - targets.numpy()) ** 2).mean())
    assert float(loss().detach()) == pytest.approx(expected, rel=1e-4)
    assert expected > 1e-3  # the fit cannot be exact, so the closure is needed


def test_the_transition_rows_are_put_exactly_at_the_matrix_floored_at_1e_6():
    torch.manual_seed(0)
    transition = StationaryTransition(4, 16)
    trans = torch.softmax(3 * torch.randn(4, 4), -1)
    trans[1] = torch.tensor([1e-12, 0.5, 0.5 - 1e-12, 0.0])  # two entries below the floor
    assert transition.fit_to(trans) is None
    floored = trans.clamp_min(LOGIT_FLOOR)
    assert torch.allclose(transition.log_matrix().exp(), floored / floored.sum(-1, keepdim=True), atol=1e-6)


@pytest.mark.parametrize("family", ["gaussian", "gaussian_scale", "gaussian_full", "poisson"])
def test_distill_is_exact_for_the_mlp_families_without_a_gradient_step(family, monkeypatch):
    """The exact baseline's table after distill is the classical HMM's, and no optimiser was built."""
    torch.manual_seed(0)
    data = make_synthetic(n_states=3, obs_dim=2, seq_len=30, n_train=8, n_val=1, seed=0)
    x, mask = data.train.x, data.train.mask.bool()
    if family == "poisson":
        x = torch.poisson(3 * torch.nn.functional.softplus(2 * x) + 0.5, generator=torch.Generator().manual_seed(0))
    net = ExactBaseline(ModelConfig(n_states=3, obs_dim=2, emission=family))
    params, trans, _, _ = em.fit_classical(net.emitter, x, mask, torch.Generator().manual_seed(0), "em", 1, 5)

    def no_adam(*args, **kwargs):
        raise AssertionError("distill built an optimiser although every network maps exactly")

    monkeypatch.setattr(torch.optim, "Adam", no_adam)
    assert em.distill(net, params, trans) == 0.0
    assert torch.allclose(net.emitter.table(x), net.emitter.classical_table(params, x), atol=1e-4)
    assert torch.allclose(net.transition.log_matrix().exp(), trans.clamp_min(LOGIT_FLOOR), atol=1e-6)


def _problem():
    data = make_synthetic(n_states=3, obs_dim=2, seq_len=40, n_train=20, n_val=1, noise_std=1.5, seed=4)
    emitter = ExactBaseline(ModelConfig(n_states=3, obs_dim=2)).emitter
    x, mask = data.train.x, data.train.mask.bool()
    labels, centres = em.start_labels(x, mask, torch.Generator().manual_seed(0), 3, random=False)
    return emitter, emitter.start(x, mask, labels, centres), x, mask


def test_baum_welch_stops_at_the_first_iteration_that_rises_by_less_than_the_tolerance():
    """Replayed by hand: score(k) = log p(X) per step after k iterations is the E-step value of iteration k + 1;
    with ``tol`` the run ends after the first iteration i whose E-step rose by less than tol over iteration
    i - 1's, with exactly the parameters of i plain iterations."""
    emitter, start, x, mask = _problem()
    trans0 = sticky_transition(3, 0.8)
    scores = [em.baum_welch(emitter, start, x, mask, trans0, k)[2] for k in range(21)]
    tol = 1e-3
    stop = next(i for i in range(2, 21) if scores[i - 1] - scores[i - 2] < tol)
    assert 2 < stop < 20  # the tolerance cuts this run short, but not at once
    params, trans, score = em.baum_welch(emitter, start, x, mask, trans0, 20, tol=tol)
    assert score == pytest.approx(scores[stop], abs=1e-6)
    assert torch.allclose(trans, em.baum_welch(emitter, start, x, mask, trans0, stop)[1], atol=1e-6)
    assert scores[20] - score < 10 * tol  # converged: the 20 iterations add little


def test_an_infinite_tolerance_stops_after_two_iterations_and_zero_runs_them_all():
    """The first iteration has no E-step before it to compare with, so any tolerance runs at least two."""
    emitter, start, x, mask = _problem()
    trans0 = sticky_transition(3, 0.8)
    two, all_ = (em.baum_welch(emitter, start, x, mask, trans0, n)[2] for n in (2, 20))
    assert em.baum_welch(emitter, start, x, mask, trans0, 20, tol=float("inf"))[2] == pytest.approx(two, abs=1e-7)
    assert em.baum_welch(emitter, start, x, mask, trans0, 20, tol=0.0)[2] == pytest.approx(all_, abs=1e-7)


def test_a_negative_tolerance_is_refused_by_name():
    with pytest.raises(ValueError, match=r"trainer.init_em_tol must be a number >= 0 .* got -1"):
        TrainerConfig(init_em_tol=-1)


@pytest.mark.parametrize("group_cells", [em.GROUP_MAX_CELLS, 2 * 40 * 20 * 3])  # one group; groups of 2
def test_candidates_sharing_their_e_steps_end_where_each_alone_ends(group_cells, monkeypatch):
    """baum_welch_many against baum_welch one candidate at a time: five starts (k-means and random labels) of the
    sticky gaussian_scale family, a tolerance that stops them after different numbers of iterations."""
    monkeypatch.setattr(em, "GROUP_MAX_CELLS", group_cells)
    data = make_synthetic(n_states=3, obs_dim=2, seq_len=40, n_train=20, n_val=1, noise_std=1.5, seed=4)
    x, mask = data.train.x, data.train.mask.bool()
    emitter = ExactBaseline(ModelConfig(n_states=3, obs_dim=2, emission="gaussian_scale")).emitter
    gen = torch.Generator().manual_seed(0)
    starts = [emitter.start(x, mask, *em.start_labels(x, mask, gen, 3, random=r >= 2)) for r in range(5)]
    transitions = [sticky_transition(3, p) for p in (0.8, 0.8, 0.6, 0.7, 0.9)]
    kappa = emitter.em_stickiness * float(mask.sum()) / 3
    together = em.baum_welch_many(emitter, starts, x, mask, transitions, 20, kappa, tol=1e-4)
    for start, trans0, (params, trans, score) in zip(starts, transitions, together, strict=True):
        alone = em.baum_welch(emitter, start, x, mask, trans0, 20, kappa, tol=1e-4)
        assert score == pytest.approx(alone[2], abs=1e-5)
        assert torch.allclose(trans, alone[1], atol=1e-5)
        for key in params:
            assert torch.allclose(params[key], alone[0][key], atol=1e-4)


def test_candidates_on_a_few_long_sequences_run_one_by_one_on_the_parallel_scan(monkeypatch):
    """Where e_step_log_px picks the scan, baum_welch_many runs the scan per candidate (no grouped E-step), and ends
    where the sequential E-step would (the scan switched off by raising its threshold)."""
    x, mask = torch.randn(1, 300, 2, generator=torch.Generator().manual_seed(0)), torch.ones(1, 300, dtype=torch.bool)
    emitter = ExactBaseline(ModelConfig(n_states=3, obs_dim=2)).emitter
    starts = [emitter.start(x, mask, *em.start_labels(x, mask, torch.Generator().manual_seed(s), 3, False))
              for s in range(2)]

    def refuse(*args, **kwargs):
        raise AssertionError("grouped E-step used on the scan's shapes")

    grouped, grouped_forward = em.grouped_statistics, em.hmm.grouped_log_likelihood
    monkeypatch.setattr(em, "grouped_statistics", refuse)
    monkeypatch.setattr(em.hmm, "grouped_log_likelihood", refuse)  # nor its final scores
    runs = em.baum_welch_many(emitter, starts, x, mask, [sticky_transition(3, 0.8)] * 2, 3)
    monkeypatch.setattr(em, "grouped_statistics", grouped)
    monkeypatch.setattr(em.hmm, "grouped_log_likelihood", grouped_forward)
    monkeypatch.setattr(em, "SCAN_ROUND_COST", 10.0 ** 9)
    sequential = [em.baum_welch(emitter, s, x, mask, sticky_transition(3, 0.8), 3) for s in starts]
    for (_, trans, score), (_, trans_seq, score_seq) in zip(runs, sequential, strict=True):
        assert score == pytest.approx(score_seq, abs=1e-4) and torch.allclose(trans, trans_seq, atol=1e-4)


def _two_dynamics(seed: int, n: int = 4, T: int = 300, run: int = 60):
    """Regimes with the same mean and spread and opposite AR(1) slopes (+0.9 / -0.9), runs of ``run`` steps:
    one step alone says nothing about its regime."""
    gen = torch.Generator().manual_seed(seed)
    states = (torch.arange(T) // run % 2).repeat(n, 1)
    states[1::2] = 1 - states[1::2]
    x = torch.zeros(n, T, 2)
    for t in range(1, T):
        slope = torch.where(states[:, t] == 0, 0.9, -0.9)[:, None]
        x[:, t] = slope * x[:, t - 1] + 0.44 * torch.randn(n, 2, generator=gen)
    return x, states


def test_segment_starts_find_regimes_that_single_steps_cannot():
    """Against the truth: labels from segments of 20 steps recover regimes that differ only in their dynamics, where
    k-means of single steps is at chance; every label is constant between the cuts."""
    from pyro_dssm.evaluation.metrics import hungarian_accuracy

    x, states = _two_dynamics(0)
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    labels = em.segment_labels(x, mask, torch.Generator().manual_seed(0), 2, 20).argmax(-1)
    assert hungarian_accuracy(states, labels, 2) > 0.85
    steps = em.start_labels(x, mask, torch.Generator().manual_seed(0), 2, random=False)[0].argmax(-1)
    assert hungarian_accuracy(states, steps, 2) < 0.6
    for row in labels:  # a label changes only at a cut: the changes lie a multiple of 20 steps apart
        changes = ((row[1:] != row[:-1]).nonzero().squeeze(-1) + 1).tolist()
        assert all((c - changes[0]) % 20 == 0 for c in changes)


def test_segments_are_halved_until_every_state_can_have_one_and_missing_cells_are_skipped():
    x = torch.randn(1, 12, 3, generator=torch.Generator().manual_seed(0))
    x[0, 2:5, 1] = float("nan")
    mask = torch.ones(1, 12, dtype=torch.bool)
    labels = em.segment_labels(x, mask, torch.Generator().manual_seed(0), 4, 25)  # 12 steps: 25 -> 12 -> 6 -> 3
    assert labels.shape == (1, 12, 4) and labels.sum(-1).eq(1).all()
    assert torch.isfinite(em._segment_summary(x[0, :6])).all()


def test_segment_starts_are_candidates_after_the_others():
    """init_segments adds ``restarts`` candidates after the k-means and random ones, whose draws stay as they were.
    Scored at their starts (0 iterations) on regimes of dynamics, a segment start wins by far; after 10
    iterations the best is at least as good as without them."""
    x, _ = _two_dynamics(1)
    mask = torch.ones(x.shape[:2], dtype=torch.bool)
    emitter = ExactBaseline(ModelConfig(n_states=2, obs_dim=2, emission="autoregressive")).emitter
    n_before = 2 + emitter.em_random_starts * 2

    def best(iters, **segments):
        return em.fit_classical(emitter, x, mask, torch.Generator().manual_seed(0), "em", 2, iters, **segments)

    plain, segmented = best(0), best(0, segments=20)
    assert plain[3] < n_before <= segmented[3] < n_before + 2 and segmented[2] > plain[2] + 0.5
    assert best(10, segments=20)[2] >= best(10)[2] - 1e-6
    with pytest.raises(ValueError, match=r"trainer.init_segments must be 0 \(none\) or an integer >= 2 .* got 1"):
        TrainerConfig(init_segments=1)


def test_nearest_centre_is_the_euclidean_argmin():
    gen = torch.Generator().manual_seed(3)
    points, centres = torch.randn(500, 7, generator=gen), torch.randn(6, 7, generator=gen)
    assert torch.equal(em.nearest(points.T.contiguous(), centres), torch.cdist(points, centres).argmin(-1))
