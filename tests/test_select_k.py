"""Choosing K: python -m pyro_dssm.select_k (BIC / AIC by hand, the table, the recommendation, bad arguments)."""

import json
import math

import pytest

import pyro_dssm
from pyro_dssm.data.synthetic import make_synthetic
from pyro_dssm.select_k import best_k, markdown

DATA = ["data.n_states=3", "data.obs_dim=4", "data.noise_std=0.3", "data.seq_len=30", "data.n_train=40",
        "data.n_val=20", "seed=2"]
FAST = ["trainer.n_epochs=1", "trainer.init_restarts=1", "trainer.init_em_iters=10", "trainer.guide_warmup_steps=5",
        "trainer.figure_every=0", "trainer.device=cpu"]


def test_markdown_marks_the_least_bic_and_recommends_it():
    rows = [{"K": 2, "bic": 120.0, "aic": 100.0, "heldout_loglik_per_step": -2.5, "train_seconds": 1.0},
            {"K": 3, "bic": 110.25, "aic": 90.0, "heldout_loglik_per_step": -2.0, "train_seconds": 2.0},
            {"K": 4, "bic": 115.0, "aic": 85.0, "heldout_loglik_per_step": -1.9, "train_seconds": 3.0}]
    assert best_k(rows) == 3  # least BIC, although AIC and the held-out likelihood prefer K=4
    text = markdown(rows)
    assert "| 3 | 110.2 **(min)** | 90.0 | -2.0000 | 2.0 |" in text
    assert text.count("(min)") == 1 and "recommended: K = 3 (least BIC)" in text


def test_select_k_cli_picks_the_true_k_with_bic_computed_as_documented(cli, tmp_path):
    out = tmp_path / "sweep"
    proc = cli.run("pyro_dssm.select_k", ["k=2,3", f"out={out}", *DATA, *FAST])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "recommended: K = 3 (least BIC)" in proc.stdout and (out / "select_k.md").read_text() in proc.stdout
    rows = {r["K"]: r for r in json.loads((out / "select_k.json").read_text())}
    train = make_synthetic(n_states=3, obs_dim=4, seq_len=30, n_train=40, n_val=20, noise_std=0.3, seed=2).train
    n = 40 * 30
    for K in (2, 3):
        p = K * (K - 1) + K * 4
        model = pyro_dssm.load(out / f"k{K}")  # each K is a normal run directory
        assert model.n_states == K and rows[K]["n_parameters"] == p
        log_px = model.score(list(train.x.double().numpy()))
        assert rows[K]["bic"] == pytest.approx(-2 * log_px + p * math.log(n), rel=1e-6)
        assert rows[K]["aic"] == pytest.approx(-2 * log_px + 2 * p, rel=1e-6)
        metrics = json.loads((out / f"k{K}" / "metrics.json").read_text())
        assert rows[K]["heldout_loglik_per_step"] == metrics["val_loglik_per_step"]


@pytest.mark.parametrize("args, message", [
    (["k=1,3"], "k must list distinct integers >= 2, got [1, 3]"),
    (["k=2,3", "model.n_states=4"], "select_k sets model.n_states"),
    (["k=2", "trainer.nonsense=1"], "trainer.nonsense"),
    (["k=2,x"], "separated by commas, got '2,x'"),
    (["out=somewhere"], "missing k=... (required)"),
])
def test_bad_arguments_are_one_line_and_exit_2(cli, tmp_path, args, message):
    proc = cli.run("pyro_dssm.select_k", [*args, f"out={tmp_path / 'sweep'}"])
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert not (tmp_path / "sweep").exists()


@pytest.mark.parametrize("emission", ["gaussian", "gaussian_scale", "gaussian_full", "autoregressive", "poisson"])
def test_select_k_ranks_by_the_bic_of_the_fitted_model_for_every_family(tmp_path, emission):
    """select_k's BIC and AIC are FittedDSSM.bic / aic of the run's model on its training data: one parameter
    count, the families' own (gaussian_scale and autoregressive have more than K(K-1) + KD)."""
    from pyro_dssm.select_k import sweep

    data = ["data=counts"] if emission == "poisson" else DATA
    overrides = [*data, *FAST, "data.n_train=10", "data.n_val=5", f"model.emission={emission}"]
    rows = sweep([2], overrides, tmp_path)
    source = dict(o.split("=", 1) for o in data if o.startswith("data.") or o.startswith("seed"))
    if emission == "poisson":
        from pyro_dssm.api import compose_config
        from pyro_dssm.train import load_data

        cfg = compose_config(overrides)
        train = load_data(cfg.data, cfg.seed).train
    else:
        train = make_synthetic(n_states=int(source["data.n_states"]), obs_dim=4, seq_len=30, n_train=10, n_val=5,
                               noise_std=0.3, seed=2).train
    xs = [x[:n].double().numpy() for x, n in zip(train.x, train.lengths.tolist())]
    model = pyro_dssm.load(tmp_path / "k2")
    assert rows[0]["n_parameters"] == model.n_parameters() == model.model.emitter.n_parameters() + 2
    assert rows[0]["bic"] == pytest.approx(model.bic(xs), rel=1e-6)
    assert rows[0]["aic"] == pytest.approx(model.aic(xs), rel=1e-6)
