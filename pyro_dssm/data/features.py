"""Per-step features of raw sequences, and their standardisation with training-split statistics.

A :class:`Preprocessing` is fitted on the training split, stored in the
checkpoint (:meth:`Preprocessing.state_dict`) and applied unchanged to
validation and to every sequence decoded later.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from pyro_dssm.config import FEATURES  # the names live with the settings that check them


def add_features(x: np.ndarray, features: list[str], window: int = 1) -> np.ndarray:
    """(T, D0) -> (T, D0 * len(features)), the named blocks side by side.

    ``raw`` is x_t; ``diff`` is x_t - x_{t-1}; ``absdiff`` is |x_t - x_{t-1}| (both 0 at the first step).
    With a fixed emission sigma a state differs from another only by its mean,
    so a regime that differs in jitter rather than level needs ``absdiff``.
    ``window_mean`` and ``window_std`` are the mean and standard deviation of x over a centred window
    of ``window`` steps (edges padded with the end values): a regime that lasts much longer than the
    motion inside it (an activity made of steps or swings) is a level and a spread over such a window,
    where x_t itself follows the phase of the motion. ``window_speed`` is the mean of |x_t - x_{t-1}| over
    the window: the pace of the motion (walking and running can share a level and a spread).
    They read ``window // 2`` steps ahead.

    NaN cells are missing: a difference with a missing end is missing, a window's statistics are over
    its observed values (missing where it has none).
    """
    parts = []
    for name in features:
        if name == "raw":
            parts.append(x)
        elif name in ("diff", "absdiff"):
            step = np.diff(x, axis=0, prepend=x[:1])
            parts.append(step if name == "diff" else np.abs(step))
        elif name == "window_mean":
            parts.append(moving_average(x, window))
        elif name == "window_std":
            spread = moving_average(x * x, window) - moving_average(x, window) ** 2
            parts.append(np.sqrt(np.clip(spread, 0.0, None)))
        elif name == "window_speed":
            parts.append(moving_average(np.abs(np.diff(x, axis=0, prepend=x[:1])), window))
        else:
            raise ValueError(f"data.features must be drawn from {FEATURES}, got {name!r}")
    return np.concatenate(parts, axis=-1)


def reads_window(features: list[str]) -> bool:
    """Whether ``features`` include a ``window_*`` block (which needs ``data.feature_window``)."""
    return any(f.startswith("window_") for f in features)


AUTO_PERIODS = 2      # an ``auto`` window spans this many periods of the motion
QUARTERS = 4          # a sinusoid's autocorrelation first crosses zero at a quarter of its period
AUTO_LEAST = 8        # the narrowest ``auto`` window, in steps (when the differences are noise, lag 1)


def auto_window(xs: list[np.ndarray]) -> int:
    """The ``window_*`` width for ``data.feature_window=auto``: two periods of the motion in ``xs``, in steps.

    xs: raw (T_i, D0) training sequences. The period of channel d is estimated as 4 x the first lag
    at which the autocorrelation of its first differences x_t - x_(t-1) drops below zero (a sinusoid's
    autocorrelation crosses zero at a quarter period); the median over channels and sequences is taken,
    the window is ``2 * period`` (the mean and spread over whole periods do not depend on the phase of
    the motion), at least 8 steps and at most half the shortest sequence of 16 steps or more.
    At 120 frames per second (CMU-86 trials) this gives 200-440 steps; on the bee dances, whose
    differences are noise at this scale, the least, 8.
    """
    lags, shortest = [], min((len(x) for x in xs if len(x) >= 16), default=None)
    if shortest is None:
        raise ValueError("data.feature_window=auto needs a training sequence of at least 16 steps, got lengths "
                         f"{sorted(len(x) for x in xs)[-5:]}; set data.feature_window to a number of steps")
    for x in xs:
        if len(x) < 16:
            continue
        step = np.diff(np.asarray(x, dtype=np.float64), axis=0)
        if np.isnan(step).any():  # a missing difference counts as the average one
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # an all-missing channel: no period, skipped below
                step = np.nan_to_num(step - np.nanmean(step, 0), nan=0.0)
        step = step - step.mean(0)
        n = len(step)
        spectrum = np.fft.rfft(step, 2 * n, axis=0)
        acf = np.fft.irfft(spectrum * np.conj(spectrum), axis=0)[:n]  # (n, D0), Wiener-Khinchin
        for d in range(acf.shape[1]):
            if acf[0, d] <= 0:  # a constant channel has no period
                continue
            below = np.flatnonzero(acf[:, d] < 0)
            lags.append(below[0] if len(below) else n)
    if not lags:
        return AUTO_LEAST
    width = int(round(AUTO_PERIODS * QUARTERS * float(np.median(lags))))
    return int(min(max(width, AUTO_LEAST), max(shortest // 2, 2)))


def moving_average(x: np.ndarray, k: int) -> np.ndarray:
    """Centred moving average over k steps of (T, D) ``x``, edges padded with the end values; k = 1 is x.

    NaN cells are missing: the average of a window is over its observed cells, NaN where it has none."""
    if k == 1:
        return x
    padded = np.pad(x, ((k // 2, k - 1 - k // 2), (0, 0)), mode="edge")
    missing = np.isnan(padded)
    if missing.any():
        observed = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(~missing, axis=0)])
        cumsum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(np.where(missing, 0.0, padded), axis=0)])
        counts = observed[k:] - observed[:-k]
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(counts > 0, (cumsum[k:] - cumsum[:-k]) / counts, np.nan)
    cumsum = np.concatenate([np.zeros((1, x.shape[1])), np.cumsum(padded, axis=0)])
    return (cumsum[k:] - cumsum[:-k]) / k


@dataclass
class Preprocessing:
    """Per-step features, a centred moving average, then ``(x - mean) / std`` with training-split statistics.

    Attributes:
        features: transforms applied in order (:func:`add_features`).
        mean: (D,) training-split mean of each feature.
        std: (D,) training-split standard deviation (1 for constant features).
        feature_names: the D0 input columns the transforms read.
        smooth: moving-average width in steps (:func:`moving_average`; 1 = none).
        window: the width in steps of the ``window_*`` features (:func:`add_features`; ``auto`` is
            resolved to a number of steps by :meth:`fit`, :func:`auto_window`).
    """

    features: list[str]
    mean: np.ndarray
    std: np.ndarray
    feature_names: list[str]
    smooth: int = 1
    window: int = 1

    @classmethod
    def fit(cls, xs: list[np.ndarray], features: list[str], feature_names: list[str], smooth: int = 1,
            window: int | str = 1) -> "Preprocessing":
        """Statistics of every step of ``xs`` (raw (T_i, D0) arrays, the training split).

        ``window="auto"`` is estimated from ``xs`` (:func:`auto_window`) when a ``window_*`` feature is asked for.
        """
        if window == "auto":
            window = auto_window(xs) if reads_window(features) else 1
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, naming the feature
            steps = np.concatenate([moving_average(add_features(x, features, window), smooth) for x in xs])
            missing = np.isnan(steps)
            if missing.any():  # NaN cells are missing: statistics of the observed ones
                cls(list(features), None, None, list(feature_names))._check_observed(missing)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean, std, low, high = (np.nanmean(steps, 0), np.nanstd(steps, 0), np.nanmin(steps, 0),
                                            np.nanmax(steps, 0))
            else:
                mean, std, low, high = steps.mean(0), steps.std(0), steps.min(0), steps.max(0)
        prep = cls(list(features), mean, np.where(std > 1e-12, std, 1.0), list(feature_names), smooth, window)
        prep._check_finite(np.stack([low, high, mean, std]), "its training-split statistics (float64)")
        return prep

    def _check_observed(self, missing: np.ndarray) -> None:
        """ValueError naming the first feature whose every training value is missing ((steps, D) bool ``missing``)."""
        empty = missing.all(0)
        if empty.any():
            name = self.output_names()[int(np.argmax(empty))]
            raise ValueError(f"feature {name!r} has no observed value in the training sequences (every cell missing); "
                             "drop its column (data.feature_columns)")

    def reach(self) -> tuple[int, int]:
        """(rows back, rows ahead) of the raw input that one step of :meth:`apply` reads: :func:`add_features`'
        differences read 1 row back, its centred windows of width k (and :func:`moving_average`'s, ``smooth``)
        k // 2 back and (k - 1) // 2 ahead; ``window_speed`` a difference inside the window."""
        def window(k: int) -> tuple[int, int]:
            return k // 2, (k - 1) // 2

        reach = {"raw": (0, 0), "diff": (1, 0), "absdiff": (1, 0), "window_mean": window(self.window),
                 "window_std": window(self.window), "window_speed": (1 + self.window // 2, (self.window - 1) // 2)}
        unknown = [f for f in self.features if f not in reach]
        if unknown:
            raise ValueError(f"the rows the features {unknown} read are unknown; known: {sorted(reach)}")
        back, ahead = window(self.smooth)
        return back + max(reach[f][0] for f in self.features), ahead + max(reach[f][1] for f in self.features)

    def output_names(self) -> list[str]:
        """Names of the D features: ``acc_x`` for raw, ``diff(acc_x)``, ``window_std(acc_x)``, ..., in column order."""
        return [c if f == "raw" else f"{f}({c})" for f in self.features for c in self.feature_names]

    def _check_finite(self, values: np.ndarray, what: str, missing_ok: bool = False) -> None:
        """ValueError naming the first feature (last axis of ``values``) with an infinite value, or NaN unless
        ``missing_ok`` (a missing value)."""
        flat = values.reshape(-1, values.shape[-1])
        bad = (np.isinf(flat) if missing_ok else ~np.isfinite(flat)).any(0)
        if bad.any():
            name = self.output_names()[int(np.argmax(bad))]
            raise ValueError(f"feature {name!r} overflows: {what} are not finite; "
                             "rescale the input column (e.g. to other units)")

    def apply(self, x: np.ndarray) -> np.ndarray:
        """(T, D0) raw -> (T, D) standardised features, float32 (NaN where missing, :func:`add_features`)."""
        if x.shape[-1] != len(self.feature_names):
            raise ValueError(f"expected {len(self.feature_names)} input columns {self.feature_names}, got {x.shape[-1]}")
        with np.errstate(over="ignore", invalid="ignore"):  # overflow is reported below, naming the feature
            features = moving_average(add_features(x, self.features, self.window), self.smooth)
            out = ((features - self.mean) / self.std).astype(np.float32)
        self._check_finite(out, "its standardised values (float32, at most 3.4e38)", missing_ok=True)
        return out

    def state_dict(self) -> dict:
        """Tensors and primitives only, for a ``weights_only`` checkpoint."""
        return {"features": list(self.features), "mean": torch.as_tensor(self.mean, dtype=torch.float64),
                "std": torch.as_tensor(self.std, dtype=torch.float64), "feature_names": list(self.feature_names),
                "smooth": self.smooth, "window": self.window}

    @classmethod
    def from_state_dict(cls, state: dict) -> "Preprocessing":
        return cls(list(state["features"]), state["mean"].numpy(), state["std"].numpy(), list(state["feature_names"]),
                   int(state.get("smooth", 1)), int(state.get("window", 1)))
