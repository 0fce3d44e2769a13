"""The schema of the Hydra configs: one dataclass per config group, registered with Hydra's ConfigStore.

Hydra composes ``configs/config.yaml`` on top of these dataclasses, so a key
that a group's dataclass lacks (``trainer.nonsense=3``) or a value of the
wrong type (``trainer.lr=abc``, ``data.n_states=2.5``) fails before the
program runs; the YAML files hold only values. The root config starts from
``schema/config`` and each data source from ``schema/data/<source>``::

    config.yaml        defaults: [schema/config@_here_, data: synthetic, model: dssm, trainer: default, ...]  -> Config
    data/csv.yaml      defaults: [/schema/data/file@_here_]     -> FileDataConfig
    data/npz.yaml      defaults: [/schema/data/file@_here_]     -> FileDataConfig
    data/npy.yaml      defaults: [/schema/data/npy@_here_]      -> NpyDataConfig
    data/synthetic.yaml, data/hard.yaml  -> /schema/data/synthetic -> SyntheticDataConfig
    data/switching_ar.yaml -> /schema/data/switching_ar -> SwitchingARDataConfig
    data/recurrent.yaml    -> /schema/data/recurrent    -> RecurrentDataConfig
    data/driven.yaml       -> /schema/data/driven       -> DrivenDataConfig
    data/counts.yaml       -> /schema/data/counts       -> CountsDataConfig
    data/periodic.yaml     -> /schema/data/periodic     -> PeriodicDataConfig
    model/*.yaml -> ModelConfig, trainer/*.yaml -> TrainerConfig, baseline/*.yaml -> BaselineConfig (typed fields of Config)

Each group maps one to one onto its dataclass: ``train()`` builds the
dataclass from the group's keys (:func:`settings`), which runs the group's
range checks (:mod:`pyro_dssm.config.checks`) and passes it down; library code
never reads the composed config. Every data source also has ``n_states``,
``obs_dim`` and ``noise_std``, the user-facing names the model group
interpolates (``model.n_states: ${data.n_states}``).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from pyro_dssm.config.checks import (baseline_checks, counts_checks, driven_checks, file_data_checks, model_checks,
                                     npy_data_checks, periodic_checks, raise_first, recurrent_checks,
                                     switching_ar_checks, synthetic_checks, trainer_checks)


@dataclass
class ModelConfig:
    """Group ``model``: sizes of the networks. ``noise_std`` is the fixed emission sigma.

    ``emission`` names the family of p(x_t | c_t, past) and ``transition`` that of p(c_t | c_{t-1})
    (the registry :mod:`pyro_dssm.config.families`); ``ar_order`` is p of ``emission=autoregressive``;
    ``emission_options`` more keyword options of the emission family (a family of your own).
    ``guide_evidence``: the guide's logits add the model's own terms (emission table and
    transition matrix, :class:`~pyro_dssm.model.networks.Evidence`) to its networks' output;
    None (the default) = on for families without memory, off for those with memory
    (``autoregressive``), whose BiGRU reads the emission table instead. ``guide_messages``:
    with the evidence on, it includes the backward messages, so that the model's part of the
    guide is its exact posterior conditional and the networks learn a residual.
    ``missing_input``: the guide's BiGRU reads, beside x (missing cells as 0), which cells are
    observed (D more inputs); None = on when the training data have a missing cell (set by ``train``).
    ``known_states``: the observations carry a known state per step after the D features (a label
    observed without noise, :mod:`pyro_dssm.model.known`); set by ``train`` from ``data.known_states_column``.
    ``input_dim``: U, the exogenous inputs the observations carry after the D features (conditioned on,
    not modelled, :mod:`pyro_dssm.model.inputs`); set by ``train`` from the data (``data.input_columns``).
    ``emission_inputs``: the emission reads the inputs too (a GLM-HMM's regressors; families with
    ``accepts_inputs``: ``autoregressive``, ``autoregressive_full``, ``poisson``); the transition reads them by
    ``transition``.

    In the config ``obs_dim: null`` means "the loaded data's feature count";
    ``train()`` fills it in before building this, which needs an integer.
    """

    n_states: int = 5
    obs_dim: int | None = 10
    transition_hidden: int = 32
    emitter_hidden: int = 32
    rnn_hidden: int = 32
    noise_std: float = 1.0
    emission: str = "gaussian"
    ar_order: int = 1
    emission_options: dict[str, Any] = field(default_factory=dict)
    transition: str = "stationary"
    guide_evidence: bool | None = None
    guide_messages: bool = True
    missing_input: bool | None = None
    known_states: bool = False
    input_dim: int = 0
    emission_inputs: bool = False

    def __post_init__(self):
        raise_first(model_checks(self))


@dataclass
class TrainerConfig:
    """Group ``trainer``: optimisation settings (``configs/trainer/default.yaml`` explains each)."""

    n_epochs: int = 20
    batch_size: int = 64
    lr: float = 3e-3
    guide_lr_factor: Any = "auto"
    lr_final_fraction: float = 0.1
    objective: str = "analytic"
    tau_init: float = 1.0
    tau_min: float = 0.1
    tau_anneal_fraction: float = 0.5
    grad_clip: float = 10.0
    init: str = "em"
    init_restarts: int = 4
    random_start_epochs: int = 5
    random_start_lr: float = 2e-2
    init_em_iters: int = 20
    init_em_tol: float = 0.0
    init_segments: int = 0
    init_screen_iters: int = 0
    init_finalists: int = 4
    init_max_sequences: int = 100
    init_stay_prob: float = 0.8
    init_context_steps: int = 200
    guide_warmup_steps: int = 100
    device: str = "auto"
    num_threads: Any = "auto"
    validate_args: bool = True
    figure_every: int = 5
    val_every: int = 1
    keep_best: bool = True
    resume: str | None = None
    stop_after_epoch: int | None = None
    patience: int | None = 3
    patience_tolerance: float = 1e-4
    max_consecutive_skips: int = 10
    distributed: bool = False

    def __post_init__(self):
        raise_first(trainer_checks(self))


@dataclass
class BaselineConfig:
    """Group ``baseline``: the exact baseline's (pyro_dssm/model/exact.py) settings: ``n_epochs`` overrides the
    trainer's; ``elbo`` is the loss it trains: ``forward`` (the forward algorithm's log p(X) as a factor, the
    default) or ``enum`` (``TraceEnum_ELBO`` over the enumerated model, the textbook form; same loss, ~10x slower)."""

    n_epochs: int = 5
    elbo: str = "forward"

    def __post_init__(self):
        raise_first(baseline_checks(self))


@dataclass
class SyntheticDataConfig:
    """Groups ``data=synthetic`` and ``data=hard``: K states, D dims, T steps drawn from a Gaussian HMM."""

    name: str = "synthetic"
    n_states: int = 5
    obs_dim: int = 10
    seq_len: int = 100
    n_train: int = 1000
    n_val: int = 200
    transition_bias: float = 0.9
    noise_std: float = 1.0
    missing_fraction: float = 0.0

    def __post_init__(self):
        raise_first(synthetic_checks(self))


@dataclass
class SwitchingARDataConfig:
    """Group ``data=switching_ar``: a switching linear AR(1) process (pyro_dssm/data/switching_ar.py).

    ``emission`` is the family the model group takes by default (``model.emission``).
    """

    name: str = "switching_ar"
    n_states: int = 3
    obs_dim: int = 2
    seq_len: int = 200
    n_train: int = 300
    n_val: int = 100
    transition_bias: float = 0.95
    noise_std: float = 0.3
    damping: float = 0.95
    max_angle: float = 0.5
    noise_spread: float = 1.5
    emission: str = "autoregressive"

    def __post_init__(self):
        raise_first(switching_ar_checks(self))


@dataclass
class CountsDataConfig:
    """Group ``data=counts``: a Poisson HMM (pyro_dssm/data/counts.py).

    ``noise_std`` is only the sigma of ``model.emission=gaussian`` (the counts have none);
    ``emission`` is the family the model group takes by default (``model.emission``).
    """

    name: str = "counts"
    n_states: int = 4
    obs_dim: int = 8
    seq_len: int = 100
    n_train: int = 300
    n_val: int = 100
    transition_bias: float = 0.9
    mean_rate: float = 1.0
    rate_spread: float = 0.7
    noise_std: float = 1.0
    emission: str = "poisson"

    def __post_init__(self):
        raise_first(counts_checks(self))


@dataclass
class PeriodicDataConfig:
    """Group ``data=periodic``: long regimes of noisy AR(2) oscillators (pyro_dssm/data/periodic.py).

    ``mean_duration`` is the mean length of a regime in steps (p(stay) = 1 - 1 / mean_duration);
    ``noise_std`` is only the model's sigma (``model.noise_std``: the fixed sigma of ``emission=gaussian``,
    the starting scale of ``autoregressive``), not the data's; ``emission`` is the family the model group
    takes by default (``model.emission``).
    """

    name: str = "periodic"
    n_states: int = 4
    obs_dim: int = 3
    seq_len: int = 400
    n_train: int = 200
    n_val: int = 50
    mean_duration: float = 80.0
    damping: float = 0.97
    min_period: float = 6.0
    max_period: float = 24.0
    amplitude_spread: float = 3.0
    noise_std: float = 1.0
    emission: str = "autoregressive"

    def __post_init__(self):
        raise_first(periodic_checks(self))


@dataclass
class FileDataConfig:
    """Groups ``data=csv`` and ``data=npz``: how to read and prepare sequences from a file."""

    name: str = "csv"
    path: str | None = None
    id_column: str = "sequence"
    time_column: str | None = None
    feature_columns: list[str] | None = None
    label_column: str | None = None
    known_states_column: str | None = None
    input_columns: list[str] | None = None
    features: list[str] = field(default_factory=lambda: ["raw"])
    smooth: int = 1
    feature_window: Any = 1  # steps, or "auto" (pyro_dssm/data/features.py: auto_window)
    window: int | None = None
    stride: int | None = None
    val_fraction: float = 0.2
    val_path: str | None = None
    n_states: int = 3
    obs_dim: int | None = None
    noise_std: float = 0.5
    missing: str = "marginalise"
    standardize: bool = True

    def __post_init__(self):
        self.features = list(self.features)  # a ListConfig or tuple from the caller
        raise_first(file_data_checks(self))


@dataclass
class NpyDataConfig:
    """Group ``data=npy``: an (N, T, D) ``.npy`` file streamed from disk."""

    name: str = "npy"
    path: str | None = None
    val_path: str | None = None
    n_val: int = 200
    standardize: bool = True
    n_states: int = 3
    obs_dim: int | None = None
    noise_std: float = 0.5

    def __post_init__(self):
        raise_first(npy_data_checks(self))


@dataclass
class Config:
    """The root config: the four groups, the seed of everything, and ``overwrite``."""

    data: Any = MISSING  # one of DATA_CONFIGS, chosen by the data/*.yaml file's schema
    model: ModelConfig = MISSING
    trainer: TrainerConfig = MISSING
    baseline: BaselineConfig = MISSING
    seed: int = 0
    # allow training into a run directory that already holds a run (otherwise refused without trainer.resume)
    overwrite: bool = False


@dataclass
class RecurrentDataConfig:
    """Group ``data=recurrent``: a track that turns at its ends (pyro_dssm/data/recurrent.py); K = 2, D = 1.

    ``emission`` and ``transition`` are the families the model group takes by default.
    """

    name: str = "recurrent"
    n_states: int = 2
    obs_dim: int = 1
    seq_len: int = 200
    n_train: int = 500
    n_val: int = 200
    noise_std: float = 1.0
    speed: float = 0.75
    half_length: float = 10.0
    sharpness: float = 2.0
    floor: float = 0.01
    emission: str = "autoregressive"
    transition: str = "recurrent"

    def __post_init__(self):
        raise_first(recurrent_checks(self))


@dataclass
class DrivenDataConfig:
    """Group ``data=driven``: switches driven by an exogenous input (pyro_dssm/data/driven.py); K = 3, D = 2, U = 1.

    ``emission`` and ``transition`` are the families the model group takes by default.
    """

    name: str = "driven"
    n_states: int = 3
    obs_dim: int = 2
    seq_len: int = 200
    n_train: int = 500
    n_val: int = 200
    noise_std: float = 1.5
    stickiness: float = 2.0
    gain: float = 3.0
    level: float = 1.2
    persistence: float = 0.97
    emission: str = "gaussian"
    transition: str = "inputs"

    def __post_init__(self):
        raise_first(driven_checks(self))


# the data group, whichever the source
DataConfig = (SyntheticDataConfig | SwitchingARDataConfig | CountsDataConfig | PeriodicDataConfig | RecurrentDataConfig
              | DrivenDataConfig | FileDataConfig | NpyDataConfig)
# data.name -> the dataclass of that source
DATA_CONFIGS = {"synthetic": SyntheticDataConfig, "switching_ar": SwitchingARDataConfig, "counts": CountsDataConfig,
                "periodic": PeriodicDataConfig, "recurrent": RecurrentDataConfig, "driven": DrivenDataConfig,
                "csv": FileDataConfig, "npz": FileDataConfig, "npy": NpyDataConfig}


def settings(cls, values: dict, group: str):
    """``cls(**values)`` for a settings dataclass; a key it does not have is a ValueError naming it.

    ``values`` is a whole group (e.g. ``OmegaConf.to_container(cfg.trainer, resolve=True)``);
    building the dataclass runs the group's range checks.
    """
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = [k for k in values if k not in known]
    if unknown:
        raise ValueError(f"{group}.{unknown[0]} is not a {group} setting (expected one of {known})")
    return cls(**values)


def data_settings(values: dict):
    """The data group as the dataclass of its source (``values["name"]``, see :data:`DATA_CONFIGS`)."""
    name = values.get("name")
    if name not in DATA_CONFIGS:
        raise ValueError(f"data.name must be one of {tuple(DATA_CONFIGS)}, got {name!r}")
    return settings(DATA_CONFIGS[name], values, "data")


def register(store: ConfigStore | None = None) -> None:
    """Store the schema under the names the YAML files' defaults lists use (done once, at import)."""
    store = store or ConfigStore.instance()
    store.store(group="schema", name="config", node=Config)
    store.store(group="schema/data", name="synthetic", node=SyntheticDataConfig)
    store.store(group="schema/data", name="switching_ar", node=SwitchingARDataConfig)
    store.store(group="schema/data", name="counts", node=CountsDataConfig)
    store.store(group="schema/data", name="periodic", node=PeriodicDataConfig)
    store.store(group="schema/data", name="recurrent", node=RecurrentDataConfig)
    store.store(group="schema/data", name="driven", node=DrivenDataConfig)
    store.store(group="schema/data", name="file", node=FileDataConfig)
    store.store(group="schema/data", name="npy", node=NpyDataConfig)


register()
