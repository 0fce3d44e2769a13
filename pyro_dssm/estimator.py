r"""The DSSM as a scikit-learn estimator: keyword settings, ``fit(X, lengths)`` returning ``self``.

    from pyro_dssm import DSSM
    model = DSSM(n_states=3, n_epochs=10, random_state=0).fit(X, lengths)  # X (N, D), sum(lengths) == N
    model.predict(X, lengths)            # (N,) Viterbi states, the sequences one after another
    model.transmat_, model.means_        # (K, K) p(c_t = j | c_{t-1} = i); (K, D) in the user's units
    model.score(X, lengths)              # log p(X), in the user's units
    clone(model).set_params(lr=1e-2)     # sklearn.base.clone, grid searches

Every keyword but ``random_state``, ``validation``, ``log_dir`` and ``verbose`` is
the setting of the same name in the Hydra configs (``configs/data/npz.yaml``,
``configs/model/dssm.yaml``, ``configs/trainer/default.yaml``; :func:`config_key`
says which group), with the same default: ``fit`` composes those configs with
``data=npz``, sets the keywords and runs :func:`pyro_dssm.train.train_model`, the
code of ``python -m pyro_dssm.train``. The trained networks define an exact HMM
and :class:`~pyro_dssm.fitted.FittedDSSM` (``fitted_``) answers with it.

In memory by default: no files, no figures, every sequence used for training
(``validation=0``: the best epoch (``keep_best``) and ``metrics_`` are judged on
the training sequences). ``validation=f`` holds out that fraction of whole sequences;
``log_dir`` writes the CLI's run directory there (TensorBoard events under ``tb/``,
figures, ``checkpoints/``, ``metrics.json``, ``.hydra/config.yaml``).
"""

from __future__ import annotations

import dataclasses
import logging
import random
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException
from sklearn.base import BaseEstimator
from sklearn.utils import check_random_state
from sklearn.utils.validation import check_is_fitted

from pyro_dssm.api import IN_MEMORY, compose_config, in_memory_sequences, known_codes
from pyro_dssm.config import FileDataConfig, ModelConfig, TrainerConfig
from pyro_dssm.data.arrays import check_sequences, input_arrays
from pyro_dssm.fitted import FittedDSSM
from pyro_dssm.io import tracking
from pyro_dssm.model.known import state_names
from pyro_dssm.train import train_model

OWN = ("random_state", "validation", "log_dir", "verbose")  # the estimator's keywords that are not config keys
GROUPS = (("data", FileDataConfig), ("model", ModelConfig), ("trainer", TrainerConfig))  # searched in this order


def config_key(name: str) -> str:
    """The config key a keyword sets: ``lr`` -> ``trainer.lr``, ``n_states`` / ``noise_std`` -> ``data.*`` (the
    names the model group follows), ``emission`` -> ``model.emission``."""
    for group, schema in GROUPS:
        if name in {f.name for f in dataclasses.fields(schema)}:
            return f"{group}.{name}"
    raise KeyError(name)


class DSSM(BaseEstimator):
    """A deep state-space model with K discrete states, trained by SVI, decoded as the exact HMM it defines.

    Not the ``nn.Module`` of the same name (:class:`pyro_dssm.model.dssm.DSSM`, the networks): this
    one holds settings and, once fitted, a :class:`~pyro_dssm.fitted.FittedDSSM` around those networks.

    Data: ``X`` a list of (T_i, D) arrays, one per sequence, or one (N, D) array of sequences one after
    another with ``lengths`` (T_i,) summing to N (hmmlearn's form); one (T, D) array without
    ``lengths`` is one sequence.

    Settings (defaults those of the YAML configs; the comments there explain each):
        n_states: K. emission: the family of p(x_t | c_t, past) (``gaussian``, ``gaussian_scale``,
        ``gaussian_full``, ``autoregressive``, ``autoregressive_full``, ``poisson`` or a registered name);
        ``noise_std`` its fixed sigma (standardised units); ``transition``, ``ar_order``, ``emission_inputs`` (the
        emission reads the ``inputs`` too), ``emission_options`` (None: {}), network sizes
        ``transition_hidden``, ``emitter_hidden``, ``rnn_hidden``; the guide's ``guide_evidence``,
        ``guide_messages``. Features: ``features`` (a tuple of ``raw``, ``diff``, ``absdiff``,
        ``window_mean``, ``window_std``, ``window_speed``), ``smooth``, ``feature_window``, ``window`` /
        ``stride`` to cut training sequences, ``standardize`` (False: the features as they are, e.g. counts
        for ``emission="poisson"``). Training: every ``trainer`` setting but ``resume``,
        ``stop_after_epoch`` and ``distributed`` (``n_epochs``, ``lr``, ``objective``, ``init``, ...).
        random_state: None (numpy's global generator draws the seed), an int (the CLI's ``seed``) or a
            ``numpy.random.RandomState``; the seed used is ``seed_``.
        validation: the fraction of whole sequences held out to choose the best epoch and report
            ``metrics_`` (0: the training sequences).
        log_dir: None (nothing written), or the directory of a run as the CLI writes it; it must not
            hold a run already.
        verbose: one line per epoch (epoch, training loss = -ELBO per step, validation ELBO, seconds)
            on stderr.

    Scores (:meth:`score`, :meth:`bic`, :meth:`aic`): with ``features=("raw",)`` and ``smooth=1`` (the
    defaults) densities of X in the user's units, the standardisation's log-Jacobian included (data in
    units c times larger score N D log c less); with other features, not a bijection of X, densities of
    the standardised features.

    Fitted attributes: ``n_features_in_`` (D), ``startprob_`` (K,) (uniform), ``transmat_`` (K, K)
    ``[i, j] = p(c_t = j | c_{t-1} = i)``, ``means_`` (K, D) for families without memory whose states
    have a mean (in the units of the features, the user's for raw features), ``fitted_`` (the
    :class:`~pyro_dssm.fitted.FittedDSSM`), ``metrics_`` (the run's metrics) and ``seed_``.
    """

    def __init__(self, n_states=3, *, emission="gaussian", noise_std=0.5, transition="stationary", ar_order=1,
                 emission_inputs=False, emission_options=None, transition_hidden=32, emitter_hidden=32, rnn_hidden=32,
                 guide_evidence=None, guide_messages=True, features=("raw",), smooth=1, feature_window=1, window=None,
                 stride=None, standardize=True,
                 n_epochs=20, batch_size=64, lr=0.003, guide_lr_factor="auto", lr_final_fraction=0.1,
                 objective="analytic", tau_init=1.0, tau_min=0.1, tau_anneal_fraction=0.5, grad_clip=10.0, init="em",
                 init_restarts=4, random_start_epochs=5, random_start_lr=0.02, init_em_iters=20, init_em_tol=0.0,
                 init_screen_iters=0, init_finalists=4, init_max_sequences=100, init_stay_prob=0.8,
                 init_context_steps=200, guide_warmup_steps=100, keep_best=True, patience=3,
                 patience_tolerance=1e-4, max_consecutive_skips=10, device="auto", num_threads="auto",
                 validate_args=True, figure_every=5, val_every=1, random_state=None, validation=0.0, log_dir=None,
                 init_segments=0, verbose=False):
        # scikit-learn's contract: store the keywords unchanged; fit checks them
        self.n_states, self.emission, self.noise_std, self.transition = n_states, emission, noise_std, transition
        self.ar_order, self.emission_inputs, self.emission_options = ar_order, emission_inputs, emission_options
        self.transition_hidden, self.emitter_hidden, self.rnn_hidden = transition_hidden, emitter_hidden, rnn_hidden
        self.guide_evidence, self.guide_messages = guide_evidence, guide_messages
        self.features, self.smooth, self.feature_window = features, smooth, feature_window
        self.window, self.stride, self.standardize = window, stride, standardize
        self.n_epochs, self.batch_size, self.lr, self.guide_lr_factor = n_epochs, batch_size, lr, guide_lr_factor
        self.lr_final_fraction, self.objective = lr_final_fraction, objective
        self.tau_init, self.tau_min, self.tau_anneal_fraction = tau_init, tau_min, tau_anneal_fraction
        self.grad_clip, self.init, self.init_restarts = grad_clip, init, init_restarts
        self.random_start_epochs, self.random_start_lr = random_start_epochs, random_start_lr
        self.init_em_iters, self.init_em_tol, self.init_max_sequences = init_em_iters, init_em_tol, init_max_sequences
        self.init_screen_iters, self.init_finalists = init_screen_iters, init_finalists
        self.init_stay_prob, self.guide_warmup_steps = init_stay_prob, guide_warmup_steps
        self.init_context_steps, self.init_segments = init_context_steps, init_segments
        self.keep_best, self.patience, self.patience_tolerance = keep_best, patience, patience_tolerance
        self.max_consecutive_skips, self.device, self.num_threads = max_consecutive_skips, device, num_threads
        self.validate_args, self.figure_every, self.val_every = validate_args, figure_every, val_every
        self.random_state, self.validation, self.log_dir, self.verbose = random_state, validation, log_dir, verbose

    def set_params(self, **params) -> "DSSM":
        """scikit-learn's ``set_params``; an unknown name is a ValueError of one line (sklearn's spans the repr)."""
        names = self._get_param_names()
        unknown = [name for name in params if name not in names]
        if unknown:
            raise ValueError(f"Invalid parameter {unknown[0]!r} for DSSM; valid parameters are {names}")
        return super().set_params(**params)

    # --- training ---------------------------------------------------------------------------------------------

    def fit(self, X, lengths=None, known_states=None, inputs=None) -> "DSSM":
        """Train on X (see the class docstring for its forms); returns ``self``, fitted.

        ``known_states``: the state where it is known, in X's form (one (T,) array, a list of (T_i,), or (N,) cut by
        ``lengths``); any labels, None / NaN / "" where not known. They clamp the posterior there (semi-supervised,
        :mod:`pyro_dssm.model.known`); state k is then the k-th class (sorted): ``classes_`` names the states and
        :meth:`predict` returns those names. NaN in X is a missing value, summed out. ``inputs``: exogenous inputs
        u_t in X's form ((T, U) rows per step, finite), conditioned on, not modelled; read by
        ``transition="inputs"`` (:mod:`pyro_dssm.model.inputs`) and, with ``emission_inputs=True``, by the
        emission (a GLM-HMM); give them again to every method that decodes.
        Raises ValueError naming a bad array, ``lengths`` or setting (settings are named by their config key,
        e.g. ``trainer.lr``); nothing is written before the checks.
        """
        xs, _ = sequences_of(X, lengths)
        known, known_names = self._known(known_states, xs, lengths)
        us = input_arrays(self._input_rows(inputs, lengths), xs)
        if isinstance(self.validation, bool) or not isinstance(self.validation, (int, float)) \
                or not 0.0 <= self.validation < 1.0:
            raise ValueError(f"validation must be a fraction in [0, 1), got {self.validation!r}")
        seed = self._seed()
        cfg = self._config(seed)
        with kept_global_random_state(), epoch_lines(self.verbose):
            run = train_model(cfg, self.log_dir,
                              sequences=in_memory_sequences(xs, known=known, known_names=known_names, inputs=us))
        for name in [a for a in vars(self) if a.endswith("_") and not a.startswith("_")]:
            delattr(self, name)  # a refit with another family may have no means_
        self._set_fitted(FittedDSSM(run.model, run.checkpoint, run.metrics,
                                    None if self.log_dir is None else Path(self.log_dir)))
        self.seed_ = seed
        return self

    def _known(self, known_states, xs: list[np.ndarray], lengths, names: list[str] | None = None):
        """``known_states`` in X's form -> (codes per sequence, class names), or (None, None) when not given."""
        if known_states is None:
            return None, None
        if lengths is not None:
            known_states = np.split(np.asarray(known_states, dtype=object), np.cumsum(lengths)[:-1])
        elif not isinstance(known_states, (list, tuple)) or len(xs) == 1 and len(known_states) == len(xs[0]):
            known_states = [known_states]  # one sequence's (T,) values
        return known_codes(known_states, xs, names)

    @staticmethod
    def _input_rows(inputs, lengths):
        """``inputs`` in X's form -> a list of (T_i, U) arrays (cut by ``lengths``), as given otherwise; None for
        None (checked against the sequences by :func:`~pyro_dssm.fitted.input_arrays`)."""
        if inputs is None or lengths is None:
            return inputs
        return sequences_of(inputs, lengths, name="inputs")[0]

    def _seed(self) -> int:
        """The CLI's ``seed``: ``random_state`` if an int, else drawn from it (None: numpy's global generator)."""
        if isinstance(self.random_state, (int, np.integer)) and not isinstance(self.random_state, bool):
            return int(self.random_state)
        return int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))

    def _config(self, seed: int) -> DictConfig:
        """The composed configs (``data=npz``) with this estimator's settings in place of their defaults."""
        cfg = compose_config(["data=npz", f"data.path='{IN_MEMORY}'"])
        for name, value in self.get_params(deep=False).items():
            if name in OWN or (name == "emission_options" and value is None):
                continue
            value = value.item() if isinstance(value, np.generic) else value  # OmegaConf takes Python scalars
            value = list(value) if isinstance(value, tuple) else value
            try:
                OmegaConf.update(cfg, config_key(name), value, merge=False)
            except OmegaConfBaseException as exc:  # a wrong type: Hydra's message, first line
                raise ValueError(f"{name}={value!r}: {str(exc).splitlines()[0]}") from None
        cfg.data.val_fraction = float(self.validation)
        cfg.seed = seed
        return cfg

    def _set_fitted(self, fitted: FittedDSSM) -> None:
        """The attributes with a trailing underscore, from the trained model."""
        self.fitted_, self.metrics_ = fitted, fitted.metrics
        self.n_features_in_ = len(fitted.feature_names)
        with torch.no_grad():
            log_init, log_trans = fitted.model.transition_parameters()
        self.startprob_, self.transmat_ = log_init.double().exp().numpy(), log_trans.double().exp().numpy()
        means = state_means(fitted)
        if means is not None:
            self.means_ = means
        names = state_names(fitted.n_states, fitted.payload.get("known_names"))
        if names is not None:  # fitted with known states: the states are these classes
            self.classes_ = np.array(names, dtype=object)

    # --- the fitted model -------------------------------------------------------------------------------------

    def _inputs(self, X, lengths) -> tuple[list[np.ndarray], str]:
        check_is_fitted(self, "fitted_")
        return sequences_of(X, lengths, self.fitted_.feature_names)

    def predict(self, X, lengths=None, known_states=None, inputs=None):
        """Viterbi states :math:`\\arg\\max_c p(c_{1:T} \\mid x_{1:T})`: (T,) int64 for one array, (N,) for
        ``X, lengths`` (the sequences one after another, as hmmlearn returns them), a list for a list. Fitted with
        known states: their names (``classes_``), the path clamped where ``known_states`` (X's form) gives one.
        Fitted with ``inputs``: give them (X's form) here too."""
        xs, form = self._inputs(X, lengths)
        paths = self.fitted_.predict(xs, self._decode_known(known_states, xs, lengths),
                                     self._input_rows(inputs, lengths))
        if hasattr(self, "classes_"):  # fitted with known states: the states' names
            paths = [self.classes_[path] for path in paths]
        return joined(paths, form)

    def predict_proba(self, X, lengths=None, known_states=None, inputs=None):
        """Posterior marginals :math:`p(c_t = k \\mid x_{1:T})` (forward-backward): (T, K), (N, K) or a list; column
        k is state k (``classes_[k]`` when fitted with known states)."""
        xs, form = self._inputs(X, lengths)
        return joined(self.fitted_.predict_proba(xs, self._decode_known(known_states, xs, lengths),
                                                 self._input_rows(inputs, lengths)), form)

    def _decode_known(self, known_states, xs, lengths):
        """Known states at decoding -> codes per sequence in the training run's classes (None when not given)."""
        if known_states is None:
            return None
        if not hasattr(self, "classes_"):
            raise ValueError("known_states at decoding needs a model fitted with known_states")
        return self._known(known_states, xs, lengths, list(self.fitted_.payload["known_names"]))[0]

    def filter(self, x, carry=None, lag: int = 0, known_states=None, inputs=None):
        """Online decoding of a stream, chunk by chunk: :meth:`pyro_dssm.fitted.FittedDSSM.filter`
        ((T, K) filtered marginals and the carry for the next chunk); ``known_states`` the chunk's (T,) labels
        (None / NaN / "" where not known) for a model fitted with them, ``inputs`` its (T, U) inputs."""
        check_is_fitted(self, "fitted_")
        known = self._decode_known(known_states, [np.asarray(x, dtype=float)], None)  # one (T,) array: one chunk
        return self.fitted_.filter(x, carry, lag, inputs, None if known is None else known[0])

    def score(self, X, lengths=None, inputs=None) -> float:
        """Exact :math:`\\sum_i \\log p(X_i)` (forward algorithm), in the user's units for raw features
        (:meth:`pyro_dssm.fitted.FittedDSSM.score`)."""
        return self.fitted_.score(self._inputs(X, lengths)[0], inputs=self._input_rows(inputs, lengths))

    def bic(self, X, lengths=None, inputs=None) -> float:
        """:math:`-2 \\log p(X) + p \\log n` (:meth:`pyro_dssm.fitted.FittedDSSM.bic`; lower is better)."""
        return self.fitted_.bic(self._inputs(X, lengths)[0], self._input_rows(inputs, lengths))

    def aic(self, X, lengths=None, inputs=None) -> float:
        """:math:`-2 \\log p(X) + 2p` (:meth:`pyro_dssm.fitted.FittedDSSM.aic`; lower is better)."""
        return self.fitted_.aic(self._inputs(X, lengths)[0], self._input_rows(inputs, lengths))

    def sample(self, n: int, T: int, seed: int = 0, inputs=None) -> tuple[np.ndarray, np.ndarray]:
        """n sequences of T steps from the learned HMM: states (n, T) int64 and observations (n, T, D) float64
        in the user's units (:meth:`pyro_dssm.fitted.FittedDSSM.sample`); fitted with inputs, one (T, U) array of
        them that every drawn sequence follows."""
        check_is_fitted(self, "fitted_")
        return self.fitted_.sample(n, T, seed, inputs)

    def save(self, path: str | Path) -> Path:
        """The checkpoint (the CLI's format: ``python -m pyro_dssm.decode checkpoint=PATH`` reads it, and
        :meth:`load`)."""
        check_is_fitted(self, "fitted_")
        return self.fitted_.save(path)

    @classmethod
    def load(cls, path: str | Path) -> "DSSM":
        """A fitted estimator from a ``.pt`` file (:meth:`save`, the CLI) or a run directory, its settings
        those of the run's config (the keywords' defaults where the run's config lacks one)."""
        fitted = FittedDSSM.load(path)
        config = fitted.payload.get("config", {})
        params = {}
        built = fitted.payload.get("model_config", {})  # what the networks were built with
        for name in cls._get_param_names():
            if name in OWN:
                continue
            group, key = config_key(name).split(".")
            if name in built:
                params[name] = built[name]
            elif key in config.get(group, {}):
                params[name] = config[group][key]
        params["features"] = tuple(params.get("features", ("raw",)))
        params["emission_options"] = params.get("emission_options") or None
        estimator = cls(**params, random_state=config.get("seed"),
                        validation=config.get("data", {}).get("val_fraction", 0.0))
        estimator._set_fitted(fitted)
        if isinstance(config.get("seed"), int):
            estimator.seed_ = config["seed"]
        return estimator


def sequences_of(X, lengths=None, columns: list[str] | None = None, name: str = "X"
                 ) -> tuple[list[np.ndarray], str]:
    """X and ``lengths`` -> (T_i, D) float64 arrays, and the form to answer in: ``one`` (one array, no
    ``lengths``), ``list`` (a list of arrays) or ``concatenated`` (one (N, D) array cut by ``lengths``).

    ``columns``: the D column names the model expects; ``name``: X's in messages (``inputs`` for the exogenous
    inputs, given in X's form). ValueError of one line naming a bad X or lengths.
    """
    if lengths is None:
        xs, single = check_sequences(X, name, columns)
        return xs, "one" if single else "list"
    if isinstance(X, (list, tuple)):
        raise ValueError(f"lengths is for one concatenated (N, D) array {name}; {name} is a list of {len(X)} arrays already "
                         "(give lengths=None)")
    (x,), _ = check_sequences(X, name, columns)
    counts = np.asarray(lengths)
    if counts.ndim != 1 or len(counts) == 0 or not np.issubdtype(counts.dtype, np.integer) or (counts < 1).any():
        raise ValueError(f"lengths must be a non-empty 1-D sequence of integers >= 1, got {lengths!r}")
    if counts.sum() != len(x):
        raise ValueError(f"lengths sum to {int(counts.sum())}, {name} has N={len(x)} rows; expected sum(lengths) == N")
    return np.split(x, np.cumsum(counts)[:-1]), "concatenated"


def joined(out: list[np.ndarray], form: str):
    """Per-sequence answers in the form the input came in (:func:`sequences_of`)."""
    if form == "one":
        return out[0]
    return np.concatenate(out) if form == "concatenated" else out


@torch.no_grad()
def state_means(fitted: FittedDSSM) -> np.ndarray | None:
    """(K, D) the mean of x_t in each hard state, in the units of the features (the standardisation undone),
    for an emission family without memory whose distribution has a mean; else None."""
    emitter = fitted.model.emitter
    if emitter.order > 0 or emitter.input_dim:  # the mean depends on the past or on the inputs
        return None
    eye = torch.eye(fitted.n_states)
    context = emitter.context(eye.new_zeros(1, 1, fitted.model.config.obs_dim))[0, 0]  # memoryless: no past read
    try:
        mean = emitter.distribution(eye, context.expand(len(eye), -1)).mean
    except NotImplementedError:  # a distribution without a mean (torch's default)
        return None
    return mean.double().numpy() * fitted.preprocessing.std + fitted.preprocessing.mean


@contextmanager
def epoch_lines(verbose: bool):
    """With ``verbose``: the training's progress line (:meth:`pyro_dssm.io.tracking.Tracker.epoch_line`) on
    stderr; without, nothing is added (the library logs, the application decides what it shows)."""
    if not verbose:
        yield
        return
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    level = tracking.log.level
    tracking.log.addHandler(handler)
    tracking.log.setLevel(logging.INFO)
    try:
        yield
    finally:
        tracking.log.removeHandler(handler)
        tracking.log.setLevel(level)


@contextmanager
def kept_global_random_state():
    """Training seeds Python's, numpy's and torch's global generators (:func:`pyro_dssm.train.seed_everything`);
    an estimator leaves the caller's as they were."""
    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])
