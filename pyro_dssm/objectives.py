"""Training objectives and the temperature schedule.

* ``trace``: ``Trace_ELBO`` on the relaxed densities,
  E_q[log p(X, Y) - log q(Y | X)] with Y the log-space relaxed chain.
* ``analytic`` (default): ``TraceMeanField_ELBO``; the reconstruction term uses the
  relaxed sample, and the latent term is replaced by the exact categorical KL
  of every step (see :func:`pyro_dssm.distributions._kl_chain`).
"""

from __future__ import annotations

import math

from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO

OBJECTIVES = ("trace", "analytic")


def make_elbo(objective: str) -> ELBO:
    """The Pyro ELBO for ``objective`` (one of :data:`OBJECTIVES`)."""
    if objective == "trace":
        return Trace_ELBO()
    if objective == "analytic":
        return TraceMeanField_ELBO()
    raise ValueError(f"trainer.objective must be one of {OBJECTIVES}, got {objective!r}")


def temperature(step: int, tau_init: float, tau_min: float, anneal_steps: int) -> float:
    r"""Exponential annealing :math:`\tau_s = \max(\tau_{min}, \tau_0 (\tau_{min}/\tau_0)^{s / S})`."""
    if anneal_steps <= 0:
        return tau_min
    frac = min(1.0, step / anneal_steps)
    return max(tau_min, tau_init * math.exp(frac * math.log(tau_min / tau_init)))
