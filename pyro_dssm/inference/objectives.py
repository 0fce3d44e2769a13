"""Training objectives and the temperature schedule.

* ``trace``: ``Trace_ELBO`` on the relaxed densities,
  E_q[log p(X, Y) - log q(Y | X)] with Y the log-space relaxed chain.
* ``analytic`` (default): ``TraceMeanField_ELBO``; the reconstruction term uses the
  relaxed sample, and the latent term is replaced by the exact categorical KL
  of every step (see :func:`pyro_dssm.model.relaxed._kl_chain`).

Both are Pyro's ELBO classes with one change: ``differentiable_loss`` returns
the loss as a tensor on the model's device without reading it back to the host.
Pyro's own ``differentiable_loss`` calls ``.item()`` on every site's log-density
and on the loss (for its float-valued ``loss``) and checks the loss for NaN in
the forward and backward pass: five to six host synchronisations per step, which
stall a GPU. Here the loss is the same number with the same gradient (tested
against Pyro's classes in ``tests/test_model.py``); non-finite losses are
caught by the training loop instead (:func:`pyro_dssm.inference.trainer.sgd_epoch`).
"""

from __future__ import annotations

import math

import torch
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.distributions.util import is_identically_zero, scale_and_mask
from torch.distributions import kl_divergence

OBJECTIVES = ("trace", "analytic")


def _require_reparameterised(guide_site: dict) -> None:
    if not guide_site["fn"].has_rsample:
        raise ValueError(f"guide site {guide_site['name']!r} is not reparameterisable; "
                         "the pyro_dssm objectives take reparameterised (relaxed) guides only")


class _DeviceLoss:
    """``differentiable_loss`` as the mean over Pyro's particles of ``-self._particle_elbo``, never read back."""

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = 0.0
        for model_trace, guide_trace in self._get_traces(model, guide, args, kwargs):
            loss = loss - self._particle_elbo(model_trace, guide_trace) / self.num_particles
        return loss


class RelaxedTraceELBO(_DeviceLoss, Trace_ELBO):
    r"""``Trace_ELBO`` for fully reparameterised guides, loss kept on the device.

    Per particle, :math:`\sum_{\text{model sites}} \log p - \sum_{\text{guide sites}} \log q`,
    each term scaled and masked as Pyro does (``log_prob_sum`` / ``score_parts``).
    """

    @staticmethod
    def _particle_elbo(model_trace, guide_trace) -> torch.Tensor:
        elbo = 0.0
        for site in model_trace.nodes.values():
            if site["type"] == "sample":
                elbo = elbo + site["log_prob_sum"]
        for site in guide_trace.nodes.values():
            if site["type"] == "sample":
                _require_reparameterised(site)
                assert is_identically_zero(site["score_parts"].score_function)
                elbo = elbo - site["score_parts"].entropy_term.sum()
        return elbo


class RelaxedMeanFieldELBO(_DeviceLoss, TraceMeanField_ELBO):
    r"""``TraceMeanField_ELBO`` for fully reparameterised guides, loss kept on the device.

    Per particle, :math:`\sum_{\text{observed}} \log p - \sum_{\text{latent}} \mathrm{KL}(q \| p)`
    with the registered KL (for the relaxed chain: the exact categorical KL per step).
    """

    @staticmethod
    def _particle_elbo(model_trace, guide_trace) -> torch.Tensor:
        elbo = 0.0
        for name, site in model_trace.nodes.items():
            if site["type"] != "sample":
                continue
            if site["is_observed"]:
                elbo = elbo + site["log_prob_sum"]
                continue
            guide_site = guide_trace.nodes[name]
            _require_reparameterised(guide_site)
            kl = kl_divergence(guide_site["fn"], site["fn"])
            elbo = elbo - scale_and_mask(kl, scale=guide_site["scale"], mask=guide_site["mask"]).sum()
        return elbo


def make_elbo(objective: str) -> ELBO:
    """The Pyro ELBO for ``objective`` (one of :data:`OBJECTIVES`)."""
    if objective == "trace":
        return RelaxedTraceELBO()
    if objective == "analytic":
        return RelaxedMeanFieldELBO()
    raise ValueError(f"trainer.objective must be one of {OBJECTIVES}, got {objective!r}")


def temperature(step: int, tau_init: float, tau_min: float, anneal_steps: int) -> float:
    r"""Exponential annealing :math:`\tau_s = \max(\tau_{min}, \tau_0 (\tau_{min}/\tau_0)^{s / S})`."""
    if anneal_steps <= 0:
        return tau_min
    frac = min(1.0, step / anneal_steps)
    return max(tau_min, tau_init * math.exp(frac * math.log(tau_min / tau_init)))


def temperature_schedule(n_steps: int, tau_init: float, tau_min: float, anneal_steps: int,
                         device: torch.device | str = "cpu") -> torch.Tensor:
    """(n_steps + 1,) :func:`temperature` of steps 0..n_steps as one tensor on ``device``.

    Indexing it with the step number gives the temperature as a device tensor
    without a host-to-device copy per step.
    """
    taus = [temperature(s, tau_init, tau_min, anneal_steps) for s in range(n_steps + 1)]
    return torch.tensor(taus, dtype=torch.get_default_dtype(), device=device)
