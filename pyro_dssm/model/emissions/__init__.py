r"""Emission families :math:`p(x_t \mid c_t, \text{past})`, one module each (``model.emission`` picks one).

| family | p(x_t given c_t and the past) | use for |
|---|---|---|
| ``gaussian`` | N(mu(c_t), sigma^2 I), sigma fixed | regimes that differ in mean level (the default) |
| ``gaussian_scale`` | N(mu(c_t), diag s(c_t)^2) | regimes that differ in level and noise |
| ``gaussian_full`` | N(mu(c_t), L(c_t) L(c_t)^T) | channels that move together |
| ``autoregressive`` | N(A_c h_t + b_c + g(c_t, h_t), diag s(c_t, h_t)^2), h_t the last p steps | regimes that differ in dynamics |
| ``autoregressive_full`` | N(A_c h_t + b_c + g(c_t, h_t), L(c_t) L(c_t)^T) | dynamics whose channels' noise is correlated |
| ``poisson`` | Poisson(lambda(c_t)) per channel | non-negative integer counts |

The contract: :class:`~pyro_dssm.model.emissions.base.Emission`. The registry of names:
:mod:`pyro_dssm.config.families`; building one: :func:`pyro_dssm.model.families.make_emission`.
"""

from __future__ import annotations

from pyro_dssm.model.emissions.autoregressive import AutoregressiveEmission
from pyro_dssm.model.emissions.autoregressive_full import AutoregressiveFullEmission
from pyro_dssm.model.emissions.base import Emission
from pyro_dssm.model.emissions.gaussian import GaussianEmission
from pyro_dssm.model.emissions.gaussian_full import GaussianFullEmission
from pyro_dssm.model.emissions.gaussian_scale import GaussianScaleEmission
from pyro_dssm.model.emissions.poisson import PoissonEmission

__all__ = ["Emission", "AutoregressiveEmission", "AutoregressiveFullEmission", "GaussianEmission", "GaussianFullEmission",
           "GaussianScaleEmission", "PoissonEmission"]
