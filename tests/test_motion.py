"""Regimes that last longer than the motion inside them: the auto feature window, ``window_speed`` and
the ``model=motion`` preset (composed by Hydra, run through the real CLI)."""

import json

import numpy as np
import pytest

from pyro_dssm.config import FileDataConfig
from pyro_dssm.data.features import AUTO_LEAST, Preprocessing, add_features, auto_window

from .helpers import compose_config, run_cli


def oscillation(period: float, T: int, D: int = 2, noise: float = 0.0, seed: int = 0) -> np.ndarray:
    """(T, D) sinusoids of one period, a random phase per channel, plus white noise of sd ``noise``."""
    rng = np.random.default_rng(seed)
    t = np.arange(T)[:, None]
    return np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi, D)) + noise * rng.normal(size=(T, D))


@pytest.mark.parametrize("period", [12, 40, 100])
def test_auto_window_spans_two_periods_of_a_sinusoid(period):
    """The differences of a sinusoid are a sinusoid of the same period, whose autocorrelation first
    crosses zero at a quarter period: the window is 8 quarters = 2 periods (to the rounding of the lag)."""
    width = auto_window([oscillation(period, 2000)])
    assert abs(width - 2 * period) <= 8, width


def test_auto_window_of_noise_is_the_least_and_of_short_data_at_most_half():
    white = np.random.default_rng(0).normal(size=(500, 3))
    assert auto_window([white]) == AUTO_LEAST  # differences of white noise: correlation -1/2 at lag 1
    assert auto_window([oscillation(100, 60)]) == 30  # 2 periods = 200 steps, capped at half of 60
    with pytest.raises(ValueError, match=r"at least 16 steps, got lengths \[3, 9\]"):
        auto_window([np.zeros((3, 1)), np.zeros((9, 1))])


def test_window_speed_by_hand():
    """Mean |x_t - x_(t-1)| over a centred window of 3 steps (the first difference is 0, the ends repeated)."""
    x = np.array([[1.0], [4.0], [2.0], [2.0]])
    steps = np.array([0.0, 3.0, 2.0, 0.0])
    windows = [steps[[0, 0, 1]], steps[[0, 1, 2]], steps[[1, 2, 3]], steps[[2, 3, 3]]]
    np.testing.assert_allclose(add_features(x, ["window_speed"], window=3)[:, 0], [w.mean() for w in windows])


def test_auto_window_is_resolved_at_fit_and_stored():
    xs = [oscillation(30, 600, seed=s) for s in range(2)]
    prep = Preprocessing.fit(xs, ["window_mean", "window_speed"], ["a", "b"], window="auto")
    assert prep.window == auto_window(xs) and isinstance(prep.window, int)
    back = Preprocessing.from_state_dict(prep.state_dict())
    np.testing.assert_array_equal(back.apply(xs[0]), prep.apply(xs[0]))
    assert Preprocessing.fit(xs, ["raw"], ["a", "b"], window="auto").window == 1  # nothing reads a window


def test_feature_window_setting_is_checked():
    FileDataConfig(path="x.csv", features=["window_std"], feature_window="auto")
    with pytest.raises(ValueError, match=r"data.feature_window must be auto or an integer >= 1, got 'wide'"):
        FileDataConfig(path="x.csv", features=["window_std"], feature_window="wide")


def test_motion_preset_composes_over_a_file_source_and_yields_to_the_command_line():
    cfg = compose_config(["data=csv", "data.path=x.csv", "model=motion", "data.window=300", "trainer.init_restarts=2"])
    assert list(cfg.data.features) == ["window_mean", "window_std", "window_speed"]
    assert cfg.data.feature_window == "auto" and cfg.model.emission == "gaussian_full"
    assert cfg.data.window == 300 and cfg.trainer.init_restarts == 2  # the user's words win
    assert compose_config(["data=npz", "data.path=x.npz", "model=motion"]).trainer.init_restarts == 12
    assert compose_config([]).model.emission == "gaussian"  # the synthetic default keeps the seed's model


def two_paces_csv(path, n_seqs=3, T=480, seed=0):
    """Sequences whose regimes alternate every 120 steps between a slow (period 24) and a fast (period 6)
    oscillation of the same level and amplitude: x_t itself cannot tell them apart, the pace can."""
    rng = np.random.default_rng(seed)
    rows = ["sequence,a,b,label"]
    for s in range(n_seqs):
        labels = (np.arange(T) // 120 + s) % 2
        phase = np.cumsum(np.where(labels == 1, 2 * np.pi / 6, 2 * np.pi / 24))
        x = np.sin(phase[:, None] + rng.uniform(0, 2 * np.pi, 2)) + 0.1 * rng.normal(size=(T, 2))
        rows += [f"s{s},{a:.5f},{b:.5f},{k}" for (a, b), k in zip(x, labels)]
    path.write_text("\n".join(rows) + "\n")


def test_motion_preset_finds_regimes_of_pace_through_the_cli(tmp_path):
    two_paces_csv(tmp_path / "paces.csv")
    run_dir = tmp_path / "run"
    res = run_cli("pyro_dssm.train", ["data=csv", f"data.path={tmp_path / 'paces.csv'}", "data.label_column=label",
                                      "data.val_fraction=0", "data.n_states=2", "model=motion", "trainer.n_epochs=2",
                                      "trainer.guide_warmup_steps=20", "trainer.init_restarts=2",
                                      f"hydra.run.dir={run_dir}"])
    assert res.returncode == 0, res.stderr[-2000:]
    assert "(window " in res.stdout + res.stderr  # the estimated window is reported
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["viterbi_accuracy"] >= 0.9, metrics


def test_motion_preset_on_a_synthetic_source_is_one_clear_line():
    res = run_cli("pyro_dssm.train", ["data=counts", "model=motion"])
    assert res.returncode == 2
    assert res.stderr.strip().splitlines()[-1] == (
        "error: model=motion sets data.features, which CountsDataConfig has not: use model=motion with a data "
        "source that has it (data=csv or data=npz)")
