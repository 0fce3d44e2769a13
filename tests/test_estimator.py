"""The estimator pyro_dssm.DSSM: scikit-learn's contract, its defaults against the YAML configs, the
hmmlearn form (X, lengths), scores in the user's units, nothing on disk unless asked, and the same model
as pyro_dssm.fit and the CLI's checkpoint files."""

import dataclasses
import inspect
import math
import tempfile

import numpy as np
import pytest
from omegaconf import OmegaConf
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

import pyro_dssm
from pyro_dssm.api import compose_config
from pyro_dssm.config import ModelConfig, TrainerConfig
from pyro_dssm.data.features import Preprocessing
from pyro_dssm.estimator import OWN, DSSM, config_key
from pyro_dssm.fitted import log_jacobian_per_step

from .helpers import read_scalars

K, D = 3, 2
MEANS = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
LENGTHS = [30, 20, 40, 25, 35]
FAST = dict(n_epochs=2, batch_size=4, init_restarts=1, init_em_iters=5, guide_warmup_steps=5, figure_every=0,
            device="cpu", random_state=0)
# the same settings as the command line's overrides, for pyro_dssm.fit
FAST_OVERRIDES = ["trainer.n_epochs=2", "trainer.batch_size=4", "trainer.init_restarts=1", "trainer.init_em_iters=5",
                  "trainer.guide_warmup_steps=5", "trainer.figure_every=0", "trainer.device=cpu", "seed=0",
                  "data.val_fraction=0"]
NOT_KEYWORDS = {"model.obs_dim", "model.missing_input", "model.known_states", "model.input_dim", "trainer.resume", "trainer.stop_after_epoch", "trainer.distributed"}


def make_sequences(seed=0, lengths=LENGTHS):
    """Ragged 2-d sequences of three sticky, well-separated states, offset and scaled far from standardised."""
    rng = np.random.default_rng(seed)
    xs = []
    for T in lengths:
        z = np.empty(T, dtype=np.int64)
        z[0] = rng.integers(K)
        for t in range(1, T):
            z[t] = z[t - 1] if rng.random() < 0.9 else rng.integers(K)
        xs.append((MEANS[z] + 0.4 * rng.standard_normal((T, D))) * (2.0, 0.5) + (10.0, -5.0))
    return xs


@pytest.fixture(scope="module")
def fitted():
    xs = make_sequences()
    return DSSM(K, **FAST).fit(xs), xs


def test_get_params_set_params_and_clone_round_trip():
    model = DSSM(4, lr=0.01, features=("raw", "diff"), emission="gaussian_scale", random_state=3)
    params = model.get_params()
    assert params["n_states"] == 4 and params["lr"] == 0.01 and params["features"] == ("raw", "diff")
    assert set(params) == set(inspect.signature(DSSM).parameters)
    assert clone(model).get_params() == params and DSSM(**params).get_params() == params
    assert model.set_params(lr=0.02, n_epochs=3) is model and model.get_params()["lr"] == 0.02
    assert "lr=0.02" in repr(model)


def test_every_keyword_default_is_the_composed_configs_default():
    """The signature states each default once more; this keeps it equal to configs/*.yaml (data=npz)."""
    composed = OmegaConf.to_container(compose_config(["data=npz"]), resolve=True)
    checked = set()
    for name, param in inspect.signature(DSSM).parameters.items():
        if name in OWN:
            continue
        group, key = config_key(name).split(".")
        default = param.default
        default = list(default) if isinstance(default, tuple) else default
        default = {} if name == "emission_options" and default is None else default  # None: no mutable default
        assert default == composed[group][key], name
        checked.add(config_key(name))
    # every model and trainer setting is a keyword, but those of the command line's run directories
    settings = {f"{g}.{f.name}" for g, cls in (("model", ModelConfig), ("trainer", TrainerConfig))
                for f in dataclasses.fields(cls)}
    covered = checked | {"model.n_states", "model.noise_std"}  # set through data.*, which the model group follows
    assert settings - covered == NOT_KEYWORDS


def test_fit_returns_self_with_the_fitted_attributes(fitted):
    model, xs = fitted
    assert isinstance(model, DSSM) and model.n_features_in_ == D and model.seed_ == 0
    assert model.transmat_.shape == (K, K) and np.allclose(model.transmat_.sum(1), 1.0)
    np.testing.assert_allclose(model.startprob_, np.full(K, 1 / K))
    # means in the user's units: near the three true means, offset and scaled
    truth = MEANS * (2.0, 0.5) + (10.0, -5.0)
    nearest = np.abs(model.means_[:, None] - truth[None]).sum(-1).min(0)
    assert model.means_.shape == (K, D) and nearest.max() < 0.5, model.means_
    assert model.metrics_["epochs"] == 2 and model.fitted_.n_states == K


def test_fit_with_lengths_is_fit_on_the_list(fitted):
    model, xs = fitted
    X, lengths = np.concatenate(xs), [len(x) for x in xs]
    other = clone(model).fit(X, lengths)
    states = other.predict(X, lengths)
    assert states.shape == (len(X),)  # hmmlearn's form: one array, the sequences one after another
    np.testing.assert_array_equal(states, np.concatenate(model.predict(xs)))
    np.testing.assert_array_equal(other.transmat_, model.transmat_)
    assert other.predict_proba(X, lengths).shape == (len(X), K)
    assert other.score(X, lengths) == model.score(xs)
    assert other.bic(X, lengths) == model.bic(xs) and other.aic(X, lengths) == model.aic(xs)


def test_units_a_thousand_times_larger_shift_the_score_by_n_d_log_1000(fitted):
    """log p(x) = log p(z) - T sum_j log std_j: the standardised data, and so the model, are the same."""
    model, xs = fitted
    big = [1000.0 * x for x in xs]
    other = clone(model).fit(big)
    N = sum(LENGTHS)
    shift = model.score(xs) - other.score(big)
    assert shift == pytest.approx(N * D * math.log(1000), rel=1e-4)
    for a, b in zip(other.predict(big), model.predict(xs)):
        np.testing.assert_array_equal(a, b)
    p = model.fitted_.n_parameters()
    assert model.bic(xs) == pytest.approx(-2 * model.score(xs) + p * math.log(N))
    assert other.bic(big) - model.bic(xs) == pytest.approx(2 * shift, rel=1e-6)


def test_log_jacobian_only_for_an_invertible_feature_transform():
    std = np.array([2.0, 0.5, 10.0])
    prep = Preprocessing(["raw"], np.zeros(3), std, ["a", "b", "c"])
    assert log_jacobian_per_step(prep) == pytest.approx(-math.log(2.0 * 0.5 * 10.0))
    assert log_jacobian_per_step(dataclasses.replace(prep, features=["raw", "diff"], std=np.tile(std, 2))) is None
    assert log_jacobian_per_step(dataclasses.replace(prep, smooth=3)) is None


def test_fit_writes_no_file(tmp_path, monkeypatch):
    cwd, tmp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir(), tmp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # where a temporary directory would go
    model = DSSM(K, **{**FAST, "figure_every": 1}).fit(make_sequences(seed=1))
    assert list(cwd.iterdir()) == [] and list(tmp.iterdir()) == []
    assert model.fitted_.run_dir is None


def test_the_same_model_as_pyro_dssm_fit_and_its_checkpoint_files(fitted, tmp_path):
    """In memory (the estimator) == pyro_dssm.fit on the same settings, which writes a run directory whose
    checkpoints/best.pt loads to the same model."""
    model, xs = fitted
    other = pyro_dssm.fit(xs, n_states=K, overrides=FAST_OVERRIDES, run_dir=tmp_path / "run")
    loaded = pyro_dssm.load(tmp_path / "run")
    for a, b, c in zip(model.predict(xs), other.predict(xs), loaded.predict(xs)):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)
    assert model.score(xs) == other.score(xs) == loaded.score(xs)
    assert model.metrics_["val_elbo_per_step"] == other.metrics["val_elbo_per_step"]


def test_log_dir_holds_a_run_whose_events_read_back(tmp_path):
    xs = make_sequences(seed=2)
    model = DSSM(K, **FAST, log_dir=tmp_path / "run").fit(xs)
    scalars = read_scalars(tmp_path / "run" / "tb")
    assert [step for step, _ in scalars["val/val_elbo_per_step"]] == [1, 2]
    assert (tmp_path / "run" / "checkpoints" / "best.pt").is_file() and (tmp_path / "run" / "metrics.json").is_file()
    assert model.fitted_.run_dir == tmp_path / "run"
    again = DSSM.load(tmp_path / "run")
    assert again.get_params() == {**model.get_params(), "log_dir": None}
    np.testing.assert_array_equal(np.concatenate(again.predict(xs)), np.concatenate(model.predict(xs)))


def test_save_and_load_round_trip(fitted, tmp_path):
    model, xs = fitted
    again = DSSM.load(model.save(tmp_path / "model.pt"))
    assert again.get_params() == model.get_params()
    np.testing.assert_array_equal(again.transmat_, model.transmat_)
    assert again.score(xs) == model.score(xs)
    states, x = again.sample(2, 7, seed=1)
    assert states.shape == (2, 7) and x.shape == (2, 7, D)


def test_verbose_prints_one_line_per_epoch_and_quiet_prints_nothing(capfd):
    xs = make_sequences(seed=3, lengths=[20, 20])
    DSSM(K, **FAST).fit(xs)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    DSSM(K, **FAST, verbose=True).fit(xs)
    lines = capfd.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("epoch   1/2") and "val_elbo_per_step=" in lines[0], lines
    assert "seconds=" in lines[1]


@pytest.mark.parametrize("call, error, match", [
    (lambda m, xs: m.predict(np.zeros((5, D + 1))), ValueError, r"X has D=3 columns; the model expects D=2"),
    (lambda m, xs: m.score(np.concatenate(xs), [30, 20]), ValueError,
     r"lengths sum to 50, X has N=90 rows; expected sum\(lengths\) == N"),
    (lambda m, xs: m.predict(xs, [30, 20]), ValueError, "lengths is for one concatenated"),
    (lambda m, xs: m.predict(np.zeros((5, D)), [5.0]), ValueError, "lengths must be a non-empty 1-D sequence"),
    (lambda m, xs: DSSM(K).predict(xs), NotFittedError, "not fitted yet"),
    (lambda m, xs: DSSM(K, learning_rate=0.1), TypeError, "unexpected keyword argument 'learning_rate'"),
    (lambda m, xs: clone(m).set_params(learning_rate=0.1), ValueError, "Invalid parameter 'learning_rate'"),
    (lambda m, xs: DSSM(K, lr=-1.0).fit(xs), ValueError, r"trainer.lr"),
    (lambda m, xs: DSSM(K, n_epochs="many").fit(xs), ValueError, r"n_epochs='many': "),
    (lambda m, xs: DSSM(K, validation=1.0).fit(xs), ValueError, r"validation must be a fraction in \[0, 1\)"),
    (lambda m, xs: DSSM(K).fit(np.zeros((10, D)), [4, 4]), ValueError, "lengths sum to 8, X has N=10 rows"),
])
def test_bad_inputs_are_one_line_errors(fitted, call, error, match):
    model, xs = fitted
    with pytest.raises(error, match=match) as info:
        call(model, xs[:3])
    assert len(str(info.value).strip().splitlines()) == 1, str(info.value)


def test_filter_in_chunks_ends_at_the_smoothed_marginal_of_the_last_step(fitted):
    model, xs = fitted
    x = xs[2]
    first, carry = model.filter(x[:11])
    rest, carry = model.filter(x[11:], carry)
    probs = np.concatenate([first, rest])
    assert probs.shape == (len(x), K) and np.allclose(probs.sum(-1), 1.0)
    assert np.allclose(probs[-1], model.predict_proba(x)[-1], atol=1e-5)
    assert np.allclose(probs, model.fitted_.filter(x)[0], atol=1e-5)
