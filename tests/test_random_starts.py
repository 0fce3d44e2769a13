"""trainer.init=random: several random starts, each trained briefly by the learning method itself, the best by a
label-free validation score kept (pyro_dssm/inference/random_starts.py), for the DSSM and the exact baseline."""

import logging
import re

import torch

from pyro_dssm.config import ModelConfig, TrainerConfig
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.evaluation.evaluate import evaluate_hmm
from pyro_dssm.inference.mle import fit_baseline
from pyro_dssm.inference.trainer import fit
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.model.dssm import DSSM
from pyro_dssm.model.exact import ExactBaseline

DATA = dict(n_states=3, obs_dim=2, seq_len=12, n_train=24, n_val=12)
SCORE = re.compile(r"random start (\d+)/(\d+): validation score (-?[\d.]+)")


def run(net_class, fit_fn, tmp_path, caplog, **cfg):
    torch.manual_seed(0)
    data = make_synthetic(**DATA, seed=0)
    net = net_class(ModelConfig(n_states=3, obs_dim=2))
    config = TrainerConfig(**{"n_epochs": 1, "batch_size": 8, "init": "random", "init_restarts": 3,
                              "random_start_epochs": 2, "guide_warmup_steps": 0, "figure_every": 0,
                              "keep_best": False, "device": "cpu", **cfg})
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="pyro_dssm.inference.random_starts"):
        metrics = fit_fn(net, data.train, data.val, config, Tracker(tmp_path, enabled=False))
    logged = [float(m.group(3)) for m in map(SCORE.search, caplog.messages) if m]
    scores = metrics.get("random_start_scores", [])
    assert logged == [round(s, 4) for s in scores]  # a progress line per start
    return net, data, metrics, scores


def test_the_dssm_starts_from_the_start_with_the_best_validation_elbo(tmp_path, caplog):
    net, data, metrics, scores = run(DSSM, fit, tmp_path, caplog)
    assert len(scores) == 3 and len(set(scores)) == 3, scores  # three different starts, each scored
    # epoch 0 of the run is the kept start: its discrete validation ELBO is the best of the three
    assert metrics["history"][0]["val_elbo_per_step"] == max(scores)
    assert metrics["random_start"] == scores.index(max(scores))
    assert f"kept start {scores.index(max(scores)) + 1}" in caplog.text


def test_the_exact_baseline_starts_from_the_start_with_the_best_log_likelihood(tmp_path, caplog):
    net, data, metrics, scores = run(ExactBaseline, fit_baseline, tmp_path, caplog, lr=0.02)
    assert len(scores) == 3 and len(set(scores)) == 3, scores
    assert metrics["history"][0]["val_loglik_per_step"] == max(scores)


def test_one_start_or_init_none_keeps_the_given_weights(tmp_path, caplog):
    """init_restarts=1 and init=none: no stage, epoch 0 is the model as constructed."""
    for cfg in ({"init_restarts": 1}, {"init": "none"}):
        torch.manual_seed(0)
        untouched = DSSM(ModelConfig(n_states=3, obs_dim=2))
        net, data, metrics, scores = run(DSSM, fit, tmp_path, caplog, **cfg)
        assert scores == []
        assert metrics["history"][0]["val_loglik_per_step"] == evaluate_hmm(untouched, data.val)["val_loglik_per_step"]


def test_the_first_start_is_the_given_model_and_the_others_the_same_for_every_method(tmp_path, caplog):
    """Start 1 trains the weights given; starts 2, 3 are drawn from the run's generator before any training,
    so a DSSM and an exact baseline of one seed start from the same generative networks."""
    import pyro_dssm.inference.random_starts as rs

    starts = {}
    original = rs.best_random_start

    def spy(net, *args, **kwargs):
        seen = []
        real_load = net.load_state_dict

        def load(state, *a, **k):
            seen.append({k_: v.clone() for k_, v in state.items() if not k_.startswith("posterior.")})
            return real_load(state, *a, **k)
        net.load_state_dict = load
        first = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("posterior.")}
        info = original(net, *args, **kwargs)
        del net.load_state_dict
        starts[type(net).__name__] = [first, *seen[:2]]  # the three starts (the last load is the kept one)
        return info

    for module in ("pyro_dssm.inference.trainer", "pyro_dssm.inference.mle"):
        __import__(module)
    import pyro_dssm.inference.mle as mle
    import pyro_dssm.inference.trainer as trainer
    trainer.best_random_start, mle.best_random_start = spy, spy
    try:
        run(DSSM, fit, tmp_path, caplog)
        run(ExactBaseline, fit_baseline, tmp_path, caplog)
    finally:
        trainer.best_random_start, mle.best_random_start = original, original
    for a, b in zip(starts["DSSM"], starts["ExactBaseline"]):
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(starts["DSSM"][1]["emitter.net.0.weight"], starts["DSSM"][2]["emitter.net.0.weight"])


def test_a_resumed_run_reports_the_random_starts_of_its_first_part(tmp_path):
    """The random starts run once, before epoch 0; their record travels in the checkpoint."""
    from dataclasses import replace

    from pyro_dssm.io.checkpoint import load_checkpoint

    torch.manual_seed(0)
    data = make_synthetic(**DATA, seed=0)
    net = DSSM(ModelConfig(n_states=3, obs_dim=2))
    config = TrainerConfig(n_epochs=2, batch_size=8, init="random", init_restarts=2, random_start_epochs=1,
                           guide_warmup_steps=0, figure_every=0, device="cpu", stop_after_epoch=1)
    first = fit(net, data.train, data.val, config, Tracker(tmp_path, enabled=False), checkpoint_dir=tmp_path)
    resume = load_checkpoint(tmp_path / "last.pt")
    second = fit(net, data.train, data.val, replace(config, stop_after_epoch=None), Tracker(tmp_path, enabled=False),
                 checkpoint_dir=tmp_path, resume=resume)
    assert second["epochs"] == 2
    assert second["random_start_scores"] == first["random_start_scores"] and len(first["random_start_scores"]) == 2
    assert second["random_start"] == first["random_start"]


def test_the_kept_start_is_the_best_scored_not_the_last():
    """best_random_start itself, with a score that ranks the middle start first: the net ends with the weights
    that start had when it was scored."""
    from pyro_dssm.inference.random_starts import best_random_start

    torch.manual_seed(0)
    data = make_synthetic(**DATA, seed=0)
    net = ExactBaseline(ModelConfig(n_states=3, obs_dim=2))
    cfg = TrainerConfig(batch_size=8, init="random", init_restarts=3, random_start_epochs=1, device="cpu")
    elbo = net.elbo()

    def nll(x, mask, step):
        return elbo.differentiable_loss(net.model, net.guide, x, mask) / x.shape[0] / x.shape[1], {}

    seen, ranks = [], iter([-1.0, 5.0, 2.0])

    def score():
        seen.append({k: v.clone() for k, v in net.state_dict().items()})
        return next(ranks)

    info = best_random_start(net, cfg, torch.Generator().manual_seed(0), data.train.x, None, nll,
                             lambda lr: torch.optim.Adam(net.parameters(), lr=lr), score)
    assert info["random_start"] == 1 and info["random_start_scores"] == [-1.0, 5.0, 2.0]
    assert all(torch.equal(v, seen[1][k]) for k, v in net.state_dict().items())
    assert not all(torch.equal(v, seen[2][k]) for k, v in net.state_dict().items())
