"""Build the emission and transition families a ``model`` config names (the registry: :mod:`pyro_dssm.config.families`).

A family's constructor takes the sizes, then its own options: those it reads from the
settings (its ``options(config)``, e.g. ``noise_std`` for ``gaussian``) updated by
``model.emission_options``.
"""

from __future__ import annotations

from pyro_dssm.config import ModelConfig
from pyro_dssm.config.families import family_class
from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.transitions.base import Transition


def make_emission(config: ModelConfig) -> Emission:
    """The emission family ``config.emission`` with the sizes and options of ``config``."""
    cls = family_class("emission", config.emission)
    if config.emission_inputs and not getattr(cls, "accepts_inputs", False):
        raise ValueError(f"model.emission_inputs=true: the emission {config.emission!r} does not read inputs; use "
                         "model.emission=autoregressive or autoregressive_full (inputs as regressors of the mean; "
                         "model.ar_order=0 for none of the past) or poisson (of the rate)")
    if config.emission_inputs and config.input_dim == 0:
        raise ValueError("model.emission_inputs=true needs exogenous inputs, and the data have none: name them with "
                         "data.input_columns (CSV), u_<name> arrays (NPZ) or inputs= (Python)")
    options = {**cls.options(config), **dict(config.emission_options)}
    try:
        emission = cls(config.n_states, config.obs_dim, config.emitter_hidden, **options)
    except TypeError as exc:
        raise ValueError(f"model.emission={config.emission!r} with options {options}: {exc}") from None
    if not isinstance(emission, Emission):
        raise ValueError(f"model.emission={config.emission!r} builds a {type(emission).__name__}, "
                         "not a subclass of pyro_dssm.model.emissions.base.Emission")
    return emission


def make_transition(config: ModelConfig) -> Transition:
    """The transition family ``config.transition`` with the sizes of ``config``."""
    cls = family_class("transition", config.transition)
    transition = cls(config.n_states, config.transition_hidden, **cls.options(config))
    if not isinstance(transition, Transition):
        raise ValueError(f"model.transition={config.transition!r} builds a {type(transition).__name__}, "
                         "not a subclass of pyro_dssm.model.transitions.base.Transition")
    return transition
