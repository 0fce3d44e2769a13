r"""Emission families :math:`p(x_t \mid c_t, x_{t-p:t-1})`, one module each (``model.emission`` picks one).

| family | p(x_t given c_t and the past) | use for |
|---|---|---|
| ``gaussian`` | N(mu(c_t), sigma^2 I), sigma fixed | regimes that differ in mean level (the default) |
| ``gaussian_scale`` | N(mu(c_t), diag s(c_t)^2) | regimes that differ in level and noise |
| ``autoregressive`` | N(A_c h_t + b_c + g(c_t, h_t), diag s(c_t, h_t)^2), h_t the last p steps | regimes that differ in dynamics |
| ``poisson`` | Poisson(lambda(c_t)) per channel | non-negative integer counts |

The interface (:class:`~pyro_dssm.model.emissions.base.Emission`): ``log_prob(x, states)``,
``table(x)`` (the exact HMM's (B, T, K) log-likelihoods), ``sample(states, generator)``, ``check_data(x, mask)``.
"""

from __future__ import annotations

from pyro_dssm.config import ModelConfig
from pyro_dssm.model.emissions.autoregressive import AutoregressiveEmission
from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.emissions.gaussian import GaussianEmission
from pyro_dssm.model.emissions.gaussian_scale import GaussianScaleEmission
from pyro_dssm.model.emissions.poisson import PoissonEmission

EMISSIONS = {
    "gaussian": GaussianEmission,
    "gaussian_scale": GaussianScaleEmission,
    "autoregressive": AutoregressiveEmission,
    "poisson": PoissonEmission,
}


def make_emission(config: ModelConfig) -> Emission:
    """The family ``config.emission`` with the sizes of ``config`` (``ar_order`` for ``autoregressive``)."""
    if config.emission not in EMISSIONS:
        raise ValueError(f"model.emission must be one of {tuple(EMISSIONS)}, got {config.emission!r}")
    args = (config.n_states, config.obs_dim, config.emitter_hidden, config.noise_std)
    if config.emission == "autoregressive":
        return AutoregressiveEmission(*args, order=config.ar_order)
    return EMISSIONS[config.emission](*args)


__all__ = ["EMISSIONS", "Emission", "make_emission", "AutoregressiveEmission", "GaussianEmission",
           "GaussianScaleEmission", "PoissonEmission"]
