"""Slow: the default configuration, and the autoregressive family on data=switching_ar, reach the oracle on
several seeds; SVI from a k-means start raises the exact log p(X); SVI from random weights reaches the oracle
(run with ``pytest -m slow``)."""

import pytest
import torch
from omegaconf import OmegaConf

from pyro_dssm.model.exact import ExactBaseline
from pyro_dssm.inference.mle import fit_baseline
from pyro_dssm.evaluation.evaluate import oracle_metrics
from pyro_dssm.model.dssm import ModelConfig
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.train import load_data, train
from pyro_dssm.inference.trainer import TrainerConfig

from .helpers import compose_config

BAR = 0.98  # fraction of the oracle accuracy


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_dssm_reaches_the_oracle(tmp_path, seed):
    metrics = train(compose_config([f"seed={seed}"]), tmp_path)
    assert metrics["val_accuracy"] >= BAR * metrics["oracle_accuracy"], metrics


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_default_exact_baseline_reaches_the_oracle(seed):
    cfg = compose_config([f"seed={seed}"])
    data = load_data(cfg.data, seed)
    torch.manual_seed(seed)
    net = ExactBaseline(ModelConfig(**OmegaConf.to_container(cfg.model, resolve=True)))
    baseline = OmegaConf.to_container(cfg.baseline, resolve=True)
    elbo = baseline.pop("elbo")
    trainer_cfg = TrainerConfig(**{**OmegaConf.to_container(cfg.trainer, resolve=True), "device": "cpu", **baseline})
    metrics = fit_baseline(net, data.train, data.val, trainer_cfg, Tracker("unused", enabled=False), seed=seed,
                           elbo=elbo)
    oracle = oracle_metrics(data.params, data.val)["oracle_accuracy"]
    assert metrics["viterbi_accuracy"] >= BAR * oracle, metrics


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_autoregressive_emission_finds_regimes_that_differ_in_dynamics(tmp_path, seed):
    """On data=switching_ar (same mean, different dynamics) the autoregressive family, chosen by the
    data option, reaches 0.98 x oracle; a mean-only Gaussian HMM is near chance there (tests/test_synthetic_families.py)."""
    metrics = train(compose_config(["data=switching_ar", f"seed={seed}"]), tmp_path)
    assert metrics["accuracy_over_oracle"] >= BAR, metrics


@pytest.mark.slow
@pytest.mark.parametrize("objective", [
    "analytic",
    "trace",
    pytest.param("concrete", marks=pytest.mark.xfail(strict=True, reason=(
        "the relaxed densities' log-ratio is not the categorical one and charges the guide for confident "
        "posteriors; it drifts (pyro_dssm/inference/objectives.py, benchmarks/RESULTS.md)"))),
])
def test_svi_from_kmeans_ends_above_its_start(tmp_path, objective):
    """From a k-means start, no guide warm-up, no keep-best, SVI must raise the exact validation
    log p(X) and reach 0.98 x oracle on the default data (seed 0). ``concrete`` (the seed's ``trace``, on
    the relaxed densities) fails it: had ``trace`` reverted to it, this test would fail."""
    metrics = train(compose_config(["seed=0", "trainer.init=kmeans", "trainer.guide_warmup_steps=0",
                                    "trainer.keep_best=false", f"trainer.objective={objective}"]), tmp_path)
    history = metrics["history"]
    assert history[-1]["val_loglik_per_step"] > history[0]["val_loglik_per_step"], history
    assert metrics["accuracy_over_oracle"] >= BAR, metrics


@pytest.mark.slow
def test_svi_learns_from_scratch(tmp_path):
    """From random weights (trainer.init=random, every other setting at its default) SVI
    reaches 0.95 x oracle on the default data, from the best of its random starts by validation ELBO."""
    metrics = train(compose_config(["seed=0", "trainer.init=random"]), tmp_path)
    scores = metrics["random_start_scores"]
    assert len(scores) == 4 and metrics["random_start"] == scores.index(max(scores)), metrics
    assert metrics["accuracy_over_oracle"] >= 0.95, metrics
