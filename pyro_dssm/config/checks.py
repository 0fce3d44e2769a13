"""Checks of settings: each failure is a ``ValueError`` that names the key, the value and what was expected.

The one place of range checks: every settings dataclass of
:mod:`pyro_dssm.config.schema` calls ``raise_first(<group>_checks(self))`` when
built. Hydra has already checked the types of a composed config; the
conditions still test the type first, so a string where a number belongs
(``TrainerConfig(lr="abc")`` from Python) gets the same one-line message as a
number out of range, not a ``TypeError`` from a comparison.
"""

from __future__ import annotations

import math

from collections.abc import Mapping

from pyro_dssm.config.families import EMISSIONS, TRANSITIONS, is_family

# The allowed values of the settings that name a choice; the modules that implement them import these.
OBJECTIVES = ("trace", "analytic", "concrete")  # trainer.objective: pyro_dssm/inference/objectives.py
INITS = ("em", "kmeans", "random", "none")  # trainer.init: pyro_dssm/inference/init.py, random_starts.py
MISSING_POLICIES = ("marginalise", "error")  # data.missing: NaN / empty cells summed out by the model, or refused
FEATURES = ("raw", "diff", "absdiff", "window_mean", "window_std", "window_speed")  # data.features: pyro_dssm/data/features.py
SOURCES = ("csv", "npz")  # data.name of the file readers: pyro_dssm/data/files.py


def is_number(value) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def is_int(value, least: int) -> bool:
    """An int (not a bool) >= ``least``."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= least


def raise_first(checks: list[tuple[bool, str]]) -> None:
    """Raise ValueError with the message of the first failed ``(ok, message)`` check."""
    for ok, message in checks:
        if not ok:
            raise ValueError(message)


def seed_checks(seed) -> list[tuple[bool, str]]:
    """The root key ``seed``."""
    return [(isinstance(seed, int) and not isinstance(seed, bool), f"seed must be an integer, got {seed!r}")]


def model_checks(c) -> list[tuple[bool, str]]:
    """Group ``model`` (:class:`~pyro_dssm.config.schema.ModelConfig`): K >= 2, sizes >= 1, sigma > 0, a known family."""
    sizes = [(name, 2 if name == "n_states" else 1)
             for name in ("n_states", "obs_dim", "transition_hidden", "emitter_hidden", "rnn_hidden")]
    return [*((is_int(getattr(c, name), least), f"model.{name} must be an integer >= {least}, got {getattr(c, name)!r}")
              for name, least in sizes),
            (is_number(c.noise_std) and c.noise_std > 0, f"model.noise_std must be a number > 0, got {c.noise_std!r}"),
            (is_family("emission", c.emission), f"model.emission must be one of {tuple(EMISSIONS)} or a 'module:Class' "
                                                f"path that imports, got {c.emission!r}"),
            (is_family("transition", c.transition), f"model.transition must be one of {tuple(TRANSITIONS)} or a "
                                                    f"'module:Class' path that imports, got {c.transition!r}"),
            (isinstance(c.emission_options, Mapping) and all(isinstance(k, str) for k in c.emission_options),
             f"model.emission_options must be a mapping of option names to values, got {c.emission_options!r}"),
            (is_int(c.ar_order, 0), f"model.ar_order must be an integer >= 0 (0: no past, e.g. a GLM-HMM on the "
                                    f"inputs alone), got {c.ar_order!r}"),
            (c.guide_evidence in (None, True, False),
             f"model.guide_evidence must be true, false or null (by family), got {c.guide_evidence!r}"),
            (isinstance(c.guide_messages, bool),
             f"model.guide_messages must be true or false, got {c.guide_messages!r}"),
            (isinstance(c.known_states, bool), f"model.known_states must be true or false, got {c.known_states!r}"),
            (is_int(c.input_dim, 0), f"model.input_dim must be an integer >= 0 (the exogenous inputs; set by train "
                                     f"from the data), got {c.input_dim!r}"),
            (isinstance(c.emission_inputs, bool),
             f"model.emission_inputs must be true or false, got {c.emission_inputs!r}"),
            (c.missing_input in (None, True, False),
             f"model.missing_input must be true, false or null (when the data have missing cells), got "
             f"{c.missing_input!r}")]


def trainer_checks(c) -> list[tuple[bool, str]]:
    """Group ``trainer`` (:class:`~pyro_dssm.config.schema.TrainerConfig`)."""
    return [
        (is_int(c.n_epochs, 1), f"trainer.n_epochs must be an integer >= 1, got {c.n_epochs!r}"),
        (is_int(c.batch_size, 1), f"trainer.batch_size must be an integer >= 1, got {c.batch_size!r}"),
        (is_number(c.lr) and c.lr > 0, f"trainer.lr must be a number > 0, got {c.lr!r}"),
        (c.guide_lr_factor == "auto" or (is_number(c.guide_lr_factor) and c.guide_lr_factor > 0),
         f"trainer.guide_lr_factor must be auto or a number > 0, got {c.guide_lr_factor!r}"),
        (is_number(c.lr_final_fraction) and 0 < c.lr_final_fraction <= 1,
         f"trainer.lr_final_fraction must be a number in (0, 1], got {c.lr_final_fraction!r}"),
        (c.objective in OBJECTIVES, f"trainer.objective must be one of {OBJECTIVES}, got {c.objective!r}"),
        (is_number(c.tau_init) and c.tau_init > 0, f"trainer.tau_init must be a number > 0, got {c.tau_init!r}"),
        (is_number(c.tau_min) and 0 < c.tau_min <= c.tau_init,
         f"trainer.tau_min must be in (0, tau_init={c.tau_init}], got {c.tau_min!r}"),
        (is_number(c.tau_anneal_fraction) and 0 <= c.tau_anneal_fraction <= 1,
         f"trainer.tau_anneal_fraction must be in [0, 1], got {c.tau_anneal_fraction!r}"),
        (is_number(c.grad_clip) and c.grad_clip > 0, f"trainer.grad_clip must be a number > 0, got {c.grad_clip!r}"),
        (is_number(c.init_stay_prob) and 0 < c.init_stay_prob < 1,
         f"trainer.init_stay_prob must be in (0, 1), got {c.init_stay_prob!r}"),
        (is_int(c.guide_warmup_steps, 0),
         f"trainer.guide_warmup_steps must be an integer >= 0, got {c.guide_warmup_steps!r}"),
        (is_int(c.init_restarts, 1), f"trainer.init_restarts must be an integer >= 1, got {c.init_restarts!r}"),
        (is_int(c.random_start_epochs, 1),
         f"trainer.random_start_epochs must be an integer >= 1, got {c.random_start_epochs!r}"),
        (is_number(c.random_start_lr) and c.random_start_lr > 0,
         f"trainer.random_start_lr must be a number > 0, got {c.random_start_lr!r}"),
        (is_int(c.init_max_sequences, 1),
         f"trainer.init_max_sequences must be an integer >= 1, got {c.init_max_sequences!r}"),
        (is_int(c.init_em_iters, 0), f"trainer.init_em_iters must be an integer >= 0, got {c.init_em_iters!r}"),
        (is_number(c.init_em_tol) and c.init_em_tol >= 0,
         f"trainer.init_em_tol must be a number >= 0 (0 = run every iteration), got {c.init_em_tol!r}"),
        (is_int(c.init_segments, 0) and c.init_segments != 1,
         f"trainer.init_segments must be 0 (none) or an integer >= 2 (steps per segment), got {c.init_segments!r}"),
        (is_int(c.init_screen_iters, 0), f"trainer.init_screen_iters must be an integer >= 0 (0 = every candidate runs "
                                         f"init_em_iters), got {c.init_screen_iters!r}"),
        (is_int(c.init_finalists, 1), f"trainer.init_finalists must be an integer >= 1, got {c.init_finalists!r}"),
        (is_int(c.init_context_steps, 0),
         f"trainer.init_context_steps must be an integer >= 0, got {c.init_context_steps!r}"),
        (c.init in INITS, f"trainer.init must be one of {INITS}, got {c.init!r}"),
        (is_int(c.figure_every, 0), f"trainer.figure_every must be an integer >= 0, got {c.figure_every!r}"),
        (is_int(c.val_every, 1), f"trainer.val_every must be an integer >= 1, got {c.val_every!r}"),
        (isinstance(c.keep_best, bool), f"trainer.keep_best must be true or false, got {c.keep_best!r}"),
        (isinstance(c.distributed, bool), f"trainer.distributed must be true or false, got {c.distributed!r}"),
        (c.stop_after_epoch is None or is_int(c.stop_after_epoch, 1),
         f"trainer.stop_after_epoch must be null or an integer >= 1, got {c.stop_after_epoch!r}"),
        (c.patience is None or is_int(c.patience, 1), f"trainer.patience must be null or an integer >= 1, got {c.patience!r}"),
        (is_number(c.patience_tolerance) and c.patience_tolerance >= 0,
         f"trainer.patience_tolerance must be a number >= 0, got {c.patience_tolerance!r}"),
        (is_int(c.max_consecutive_skips, 1),
         f"trainer.max_consecutive_skips must be an integer >= 1, got {c.max_consecutive_skips!r}"),
        (c.resume is None or isinstance(c.resume, str), f"trainer.resume must be null or a path, got {c.resume!r}"),
        (isinstance(c.validate_args, bool), f"trainer.validate_args must be true or false, got {c.validate_args!r}"),
        (c.num_threads == "auto" or is_int(c.num_threads, 1),
         f"trainer.num_threads must be auto or an integer >= 1, got {c.num_threads!r}"),
        (c.device in ("auto", "cpu", "cuda") or (isinstance(c.device, str) and c.device.startswith("cuda:")),
         f"trainer.device must be auto, cpu, cuda or cuda:N, got {c.device!r}"),
    ]


BASELINE_ELBOS = ("forward", "enum")  # how the exact baseline sums the states out


def baseline_checks(c) -> list[tuple[bool, str]]:
    """Group ``baseline`` (:class:`~pyro_dssm.config.schema.BaselineConfig`)."""
    return [(is_int(c.n_epochs, 1), f"baseline.n_epochs must be an integer >= 1, got {c.n_epochs!r}"),
            (c.elbo in BASELINE_ELBOS, f"baseline.elbo must be one of {BASELINE_ELBOS}, got {c.elbo!r}")]


def _shared_data_checks(c, obs_dim_optional: bool) -> list[tuple[bool, str]]:
    """The keys every data source has: K, D (null = follows a file's features) and the emission sigma."""
    null_ok = obs_dim_optional and c.obs_dim is None
    return [
        (is_int(c.n_states, 2), f"data.n_states must be an integer >= 2, got {c.n_states!r}"),
        (null_ok or is_int(c.obs_dim, 1),
         f"data.obs_dim must be {'null or ' if obs_dim_optional else ''}an integer >= 1, got {c.obs_dim!r}"),
        (is_number(c.noise_std) and c.noise_std > 0.0, f"data.noise_std must be a number > 0, got {c.noise_std!r}"),
    ]


def _drawn_data_checks(c, name: str, what: str) -> list[tuple[bool, str]]:
    """The keys of every source drawn from a known HMM: its name, K, D, T, the sizes and sigma."""
    shared = _shared_data_checks(c, obs_dim_optional=False)
    return [
        (c.name == name, f"data.name must be {name!r} for {what}, got {c.name!r}"),
        *shared[:2],
        (is_int(c.seq_len, 2), f"data.seq_len must be an integer >= 2, got {c.seq_len!r}"),
        (is_int(c.n_train, 1), f"data.n_train must be an integer >= 1, got {c.n_train!r}"),
        (is_int(c.n_val, 1), f"data.n_val must be an integer >= 1, got {c.n_val!r}"),
        shared[2],
    ]


def _generated_data_checks(c, name: str, what: str) -> list[tuple[bool, str]]:
    """:func:`_drawn_data_checks` and the stickiness ``transition_bias`` (before sigma)."""
    *sizes, sigma = _drawn_data_checks(c, name, what)
    return [*sizes, (is_number(c.transition_bias) and 0.0 < c.transition_bias < 1.0,
                     f"data.transition_bias must be in (0, 1), got {c.transition_bias!r}"), sigma]


def synthetic_checks(c) -> list[tuple[bool, str]]:
    """Group ``data=synthetic`` / ``data=hard`` (:class:`~pyro_dssm.config.schema.SyntheticDataConfig`)."""
    return [*_generated_data_checks(c, "synthetic", "synthetic data"),
            (is_number(c.missing_fraction) and 0.0 <= c.missing_fraction < 1.0,
             f"data.missing_fraction must be a number in [0, 1), got {c.missing_fraction!r}")]


def driven_checks(c) -> list[tuple[bool, str]]:
    """Group ``data=driven`` (:class:`~pyro_dssm.config.schema.DrivenDataConfig`): K = 3, D = 2, rho in [0, 1)."""
    return [
        *_drawn_data_checks(c, "driven", "the input-driven data"),
        (c.n_states == 3, f"data.n_states must be 3 for data=driven (low, middle, high input), got {c.n_states!r}"),
        (c.obs_dim == 2, f"data.obs_dim must be 2 for data=driven (the states' means on a circle), got {c.obs_dim!r}"),
        *((is_number(getattr(c, k)) and getattr(c, k) >= 0, f"data.{k} must be a number >= 0, got {getattr(c, k)!r}")
          for k in ("stickiness", "gain", "level")),
        (is_number(c.persistence) and 0.0 <= c.persistence < 1.0,
         f"data.persistence must be in [0, 1), got {c.persistence!r}"),
    ]


def recurrent_checks(c) -> list[tuple[bool, str]]:
    """Group ``data=recurrent`` (:class:`~pyro_dssm.config.schema.RecurrentDataConfig`): K = 2, D = 1, speeds > 0."""
    return [
        *_drawn_data_checks(c, "recurrent", "the track data"),
        (c.n_states == 2, f"data.n_states must be 2 for data=recurrent (right and left), got {c.n_states!r}"),
        (c.obs_dim == 1, f"data.obs_dim must be 1 for data=recurrent (the position), got {c.obs_dim!r}"),
        *((is_number(getattr(c, k)) and getattr(c, k) > 0, f"data.{k} must be a number > 0, got {getattr(c, k)!r}")
          for k in ("speed", "half_length", "sharpness")),
        (is_number(c.floor) and 0.0 < c.floor < 0.5, f"data.floor must be in (0, 0.5), got {c.floor!r}"),
    ]


def switching_ar_checks(c) -> list[tuple[bool, str]]:
    """Group ``data=switching_ar`` (:class:`~pyro_dssm.config.schema.SwitchingARDataConfig`)."""
    return [
        *_generated_data_checks(c, "switching_ar", "switching AR data"),
        (is_int(c.obs_dim, 2), f"data.obs_dim must be an integer >= 2 for data=switching_ar (the states differ by "
                               f"a rotation), got {c.obs_dim!r}"),
        (is_number(c.damping) and 0.0 < c.damping < 1.0, f"data.damping must be in (0, 1), got {c.damping!r}"),
        (is_number(c.max_angle) and 0.0 < c.max_angle <= math.pi,
         f"data.max_angle must be in (0, pi], got {c.max_angle!r}"),
        (is_number(c.noise_spread) and c.noise_spread >= 1.0,
         f"data.noise_spread must be a number >= 1, got {c.noise_spread!r}"),
        (is_family("emission", c.emission), f"data.emission must be one of {tuple(EMISSIONS)}, got {c.emission!r}"),
    ]


def counts_checks(c) -> list[tuple[bool, str]]:
    """Group ``data=counts`` (:class:`~pyro_dssm.config.schema.CountsDataConfig`)."""
    return [
        *_generated_data_checks(c, "counts", "count data"),
        (is_number(c.mean_rate) and c.mean_rate > 0.0, f"data.mean_rate must be a number > 0, got {c.mean_rate!r}"),
        (is_number(c.rate_spread) and c.rate_spread >= 0.0,
         f"data.rate_spread must be a number >= 0, got {c.rate_spread!r}"),
        (is_family("emission", c.emission), f"data.emission must be one of {tuple(EMISSIONS)}, got {c.emission!r}"),
    ]


def periodic_checks(c) -> list[tuple[bool, str]]:
    """Group ``data=periodic`` (:class:`~pyro_dssm.config.schema.PeriodicDataConfig`)."""
    low = c.min_period if is_number(c.min_period) else 2.0
    return [
        *_drawn_data_checks(c, "periodic", "periodic data"),
        (is_number(c.mean_duration) and c.mean_duration > 1.0,
         f"data.mean_duration must be a number > 1 (steps per regime), got {c.mean_duration!r}"),
        (is_number(c.damping) and 0.0 < c.damping < 1.0, f"data.damping must be in (0, 1), got {c.damping!r}"),
        (is_number(c.min_period) and c.min_period > 2.0,
         f"data.min_period must be a number > 2 (steps per cycle), got {c.min_period!r}"),
        (is_number(c.max_period) and c.max_period >= low,
         f"data.max_period must be a number >= data.min_period={c.min_period!r}, got {c.max_period!r}"),
        (is_number(c.amplitude_spread) and c.amplitude_spread >= 1.0,
         f"data.amplitude_spread must be a number >= 1, got {c.amplitude_spread!r}"),
        (is_family("emission", c.emission), f"data.emission must be one of {tuple(EMISSIONS)}, got {c.emission!r}"),
    ]


def file_data_checks(c) -> list[tuple[bool, str]]:
    """Groups ``data=csv`` / ``data=npz`` (:class:`~pyro_dssm.config.schema.FileDataConfig`)."""
    features = c.features
    return [
        (c.name in SOURCES, f"data.name must be one of {SOURCES}, got {c.name!r}"),
        (isinstance(c.standardize, bool), f"data.standardize must be true or false, got {c.standardize!r}"),
        (c.path is not None, f"data.path is required for data={c.name} (the file to read)"),
        (isinstance(c.path, str), f"data.path must be a file path, got {c.path!r}"),
        (c.val_path is None or isinstance(c.val_path, str),
         f"data.val_path must be null or a file path, got {c.val_path!r}"),
        (len(features) >= 1 and all(f in FEATURES for f in features) and len(set(features)) == len(features),
         f"data.features must be a non-empty list of distinct {FEATURES}, got {c.features}"),
        (is_int(c.smooth, 1), f"data.smooth must be an integer >= 1, got {c.smooth!r}"),
        (c.feature_window == "auto" or is_int(c.feature_window, 1),
         f"data.feature_window must be auto or an integer >= 1, got {c.feature_window!r}"),
        (c.feature_window == "auto" or not is_int(c.feature_window, 1) or c.feature_window >= 2
         or not any(f.startswith("window_") for f in features),
         f"data.features {list(features)} need data.feature_window >= 2 (the window's width in steps), "
         f"got {c.feature_window}"),
        (c.window is None or is_int(c.window, 2), f"data.window must be null or an integer >= 2, got {c.window!r}"),
        (c.stride is None or is_int(c.stride, 1), f"data.stride must be null or an integer >= 1, got {c.stride!r}"),
        (c.stride is None or c.window is not None, f"data.stride={c.stride} needs data.window"),
        (is_number(c.val_fraction) and 0.0 <= c.val_fraction < 1.0,
         f"data.val_fraction must be in [0, 1), got {c.val_fraction!r}"),
        (c.missing in MISSING_POLICIES, f"data.missing must be one of {MISSING_POLICIES}, got {c.missing!r}"),
        (c.known_states_column is None or c.name == "csv",
         f"data.known_states_column is read from a CSV (data=csv), got data={c.name}"),
        (c.input_columns is None or c.name == "csv",
         f"data.input_columns are read from a CSV (data=csv), got data={c.name}; from Python give inputs="),
        (c.input_columns is None or (isinstance(c.input_columns, (list, tuple)) and len(c.input_columns) > 0
                                     and all(isinstance(n, str) for n in c.input_columns)),
         f"data.input_columns must be a non-empty list of column names, got {c.input_columns!r}"),
        *_shared_data_checks(c, obs_dim_optional=True),
    ]


def npy_data_checks(c) -> list[tuple[bool, str]]:
    """Group ``data=npy`` (:class:`~pyro_dssm.config.schema.NpyDataConfig`)."""
    return [
        (c.name == "npy", f"data.name must be 'npy' for a streamed .npy file, got {c.name!r}"),
        (c.path is not None, "data.path is required for data=npy (an (N, T, D) .npy file)"),
        (isinstance(c.path, str), f"data.path must be a file path, got {c.path!r}"),
        (c.val_path is None or isinstance(c.val_path, str),
         f"data.val_path must be null or a file path, got {c.val_path!r}"),
        (is_int(c.n_val, 1), f"data.n_val must be an integer >= 1, got {c.n_val!r}"),
        (isinstance(c.standardize, bool), f"data.standardize must be true or false, got {c.standardize!r}"),
        *_shared_data_checks(c, obs_dim_optional=True),
    ]
