r"""Training objectives and the temperature schedule.

All three draw the guide's relaxed chain :math:`\tilde c` (Gumbel-Softmax at temperature tau) and
differ in how they score it:

* ``analytic`` (default): ``TraceMeanField_ELBO`` with every step's expectation over
  c_t taken exactly, given the relaxed sample of the earlier steps: the latent term
  is the exact categorical KL of every step (:func:`pyro_dssm.model.relaxed.chain_kl`),
  the reconstruction term :math:`\sum_k q(c_t = k \mid \tilde c_{<t}, X) \log p(x_t \mid k, x_{<t})`
  (:meth:`pyro_dssm.model.relaxed.ChainLikelihood.expected_log_prob`).
* ``trace``: ``Trace_ELBO``, the one-sample Monte Carlo estimate of the same ELBO of the
  discrete model: the latent term is :math:`\log p(c_t \mid c_{t-1}) - \log q(c_t \mid \tilde c_{<t}, X)`
  at the state :math:`c_t = \arg\max_k \tilde c_{tk}` the relaxed sample stands for (an exact draw
  from q by Gumbel-max; :meth:`pyro_dssm.model.relaxed.RelaxedMarkovChain.discrete_log_prob`,
  gradient straight-through), the reconstruction term as in ``analytic``. Its expectation
  over that state is ``analytic``'s per-step KL, so the two objectives have the same value in
  expectation and differ in the latent term's variance.
* ``concrete``: ``Trace_ELBO`` on the relaxed (ExpConcrete) densities, E_q[log p(X, Y) - log q(Y | X)]
  with Y the log-space relaxed chain and the emission fed the relaxed states (the seed's ``trace``;
  kept to compare against). It does not estimate the discrete ELBO: for prior and guide at
  one temperature the log-density ratio at a sample is
  :math:`\sum_k \log(q_k/p_k) + K \log \sum_i \mathrm{softmax}(-g)_i\, p_i/q_i` (g the guide's
  Gumbel noise, q and p the step's probabilities), the same at every tau, and its expectation
  grows without bound as any :math:`q_k \to 0` (about :math:`-\log q_k`) where the categorical KL
  stays below :math:`\max_k (-\log p_k)`; so it keeps the guide away from confident posteriors and the model
  drifts from the data's regimes (docs/convergence.md).

All are Pyro's ELBO classes with one change: ``differentiable_loss`` returns
the loss as a tensor on the model's device without reading it back to the host.
Pyro's own ``differentiable_loss`` calls ``.item()`` on every site's log-density
and on the loss (for its float-valued ``loss``) and checks the loss for NaN in
the forward and backward pass: five to six host synchronisations per step, which
stall a GPU. Here ``concrete`` is Pyro's ``Trace_ELBO`` and ``analytic`` with the plain
observed term Pyro's ``TraceMeanField_ELBO``: same number, same gradient (tested against
Pyro's classes in ``tests/test_model.py``); non-finite losses are
caught by the training loop instead (:class:`pyro_dssm.inference.loop.SGDStep`).

Only Pyro's public API is used (``poutine.trace`` of the guide, ``poutine.replay``
of the model against it, ``Trace.compute_log_prob``, the sites' ``log_prob_sum``,
``pyro.distributions.util.scale_and_mask``), so a Pyro release that keeps that
API cannot change the loss; hence ``pyro-ppl>=1.9`` without an upper bound.
The mean-field objective asks for the densities of observed sites only: Pyro's
class also computes the latent sites' densities and throws them away.
"""

from __future__ import annotations

import math

import torch
from pyro import poutine
from pyro.distributions.util import scale_and_mask
from pyro.infer import ELBO, Trace_ELBO, TraceMeanField_ELBO
from pyro.poutine.util import site_is_subsample
from pyro_dssm.config import OBJECTIVES  # the names live with the settings that check them
from pyro_dssm.model.relaxed import chain_kl


def _sample_sites(trace) -> dict:
    """The trace's sample sites by name, without the plates' subsample sites."""
    return {name: site for name, site in trace.nodes.items()
            if site["type"] == "sample" and not site_is_subsample(site)}


def _observed(name: str, site: dict) -> bool:
    return site["is_observed"]


def _check_sites(model_sites: dict, guide_sites: dict) -> None:
    """The guide samples exactly the model's latent sites, each reparameterisably (names only: no host sync)."""
    latent = {name for name, site in model_sites.items() if not site["is_observed"]}
    if latent != set(guide_sites):
        raise ValueError(f"the guide's sample sites {sorted(guide_sites)} must be the model's latent sites "
                         f"{sorted(latent)}")
    for name, site in guide_sites.items():
        if not site["fn"].has_rsample:
            raise ValueError(f"guide site {name!r} is not reparameterisable; "
                             "the pyro_dssm objectives take reparameterised (relaxed) guides only")


class _DeviceLoss:
    """``differentiable_loss`` as the mean over ``num_particles`` of ``-self._particle_elbo``, never read back.

    Each particle runs the guide, then the model replayed against the guide's
    samples, as Pyro's ``Trace_ELBO`` does.
    """

    def differentiable_loss(self, model, guide, *args, **kwargs) -> torch.Tensor:
        loss = 0.0
        for _ in range(self.num_particles):
            guide_trace = poutine.trace(guide).get_trace(*args, **kwargs)
            model_trace = poutine.trace(poutine.replay(model, trace=guide_trace)).get_trace(*args, **kwargs)
            loss = loss - self._particle_elbo(model_trace, guide_trace) / self.num_particles
        return loss


class RelaxedTraceELBO(_DeviceLoss, Trace_ELBO):
    r"""``Trace_ELBO`` for fully reparameterised guides, loss kept on the device.

    ``densities="discrete"`` (objective ``trace``): per particle, every latent site contributes
    :math:`\log p(c) - \log q(c)` of the discrete chain its relaxed sample stands for (the sites'
    ``discrete_log_prob``), observed sites the reconstruction of :func:`_observed_term`.
    ``densities="concrete"`` (objective ``concrete``): per particle,
    :math:`\sum_{\text{model sites}} \log p - \sum_{\text{guide sites}} \log q` of the relaxed
    densities, each term scaled and masked as Pyro does (the sites' ``log_prob_sum``; for a
    reparameterised site Pyro's entropy term is that same sum): Pyro's ``Trace_ELBO`` itself.
    """

    def __init__(self, densities: str = "discrete", **kwargs):
        if densities not in ("discrete", "concrete"):
            raise ValueError(f"densities must be 'discrete' or 'concrete', got {densities!r}")
        super().__init__(**kwargs)
        self.densities = densities

    def _particle_elbo(self, model_trace, guide_trace) -> torch.Tensor:
        model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
        _check_sites(model_sites, guide_sites)
        if self.densities == "concrete":
            model_trace.compute_log_prob(lambda name, site: name in model_sites)
            guide_trace.compute_log_prob(lambda name, site: name in guide_sites)
            elbo = 0.0
            for site in model_sites.values():
                elbo = elbo + site["log_prob_sum"]
            for site in guide_sites.values():
                elbo = elbo - site["log_prob_sum"]
            return elbo
        elbo = _reconstruction(model_trace, model_sites, guide_sites)
        for name, site in model_sites.items():
            if site["is_observed"]:
                continue
            guide_site = guide_sites[name]
            value = guide_site["value"]
            for fn in (site["fn"], guide_site["fn"]):
                if not hasattr(fn, "discrete_log_prob"):
                    raise ValueError(f"objective 'trace' scores latent site {name!r} by the discrete chain its "
                                     f"relaxed sample stands for; {type(fn).__name__} has no discrete_log_prob")
            ratio = site["fn"].discrete_log_prob(value) - guide_site["fn"].discrete_log_prob(value)
            elbo = elbo + scale_and_mask(ratio, guide_site["scale"], guide_site["mask"]).sum()
        return elbo


class RelaxedMeanFieldELBO(_DeviceLoss, TraceMeanField_ELBO):
    r"""``TraceMeanField_ELBO`` for fully reparameterised guides, loss kept on the device.

    Per particle, :math:`\sum_{\text{observed}} \log p - \sum_{\text{latent}} \mathrm{KL}(q \| p)`
    with, for a relaxed chain, the exact categorical KL of every step along the guide's sample
    (:func:`pyro_dssm.model.relaxed.chain_kl`, the sample passed explicitly), scaled and masked by
    the guide site's plates.
    """

    @staticmethod
    def _particle_elbo(model_trace, guide_trace) -> torch.Tensor:
        model_sites, guide_sites = _sample_sites(model_trace), _sample_sites(guide_trace)
        _check_sites(model_sites, guide_sites)
        elbo = _reconstruction(model_trace, model_sites, guide_sites)
        for name, site in model_sites.items():
            if site["is_observed"]:
                continue
            guide_site = guide_sites[name]
            for fn in (site["fn"], guide_site["fn"]):
                if not hasattr(fn, "chain_logits"):
                    raise ValueError(f"objective 'analytic' takes the categorical KL of every step of latent site "
                                     f"{name!r}; {type(fn).__name__} has no chain_logits")
            kl = chain_kl(guide_site["fn"], site["fn"], guide_site["value"])
            elbo = elbo - scale_and_mask(kl, guide_site["scale"], guide_site["mask"]).sum()
        return elbo


def _reconstruction(model_trace, model_sites: dict, guide_sites: dict) -> torch.Tensor:
    """The sum of the observed sites' terms (:func:`_observed_term`); computes the log-densities it reads."""
    chains = {id(site["fn"]): name for name, site in model_sites.items() if not site["is_observed"]}
    model_trace.compute_log_prob(lambda name, site: _observed(name, site) and not _averaged(site))
    elbo = 0.0
    for site in model_sites.values():
        if site["is_observed"]:
            elbo = elbo + _observed_term(site, guide_sites, chains)
    return elbo


def _averaged(site: dict) -> bool:
    """Whether an observed site's term is averaged exactly over a latent chain (a likelihood that names its chain)."""
    return hasattr(site["fn"], "chain")


def _observed_term(site: dict, guide_sites: dict, chains: dict) -> torch.Tensor:
    r"""An observed site's term of the ELBO.

    For a :class:`~pyro_dssm.model.relaxed.ChainLikelihood` the reconstruction
    :math:`\sum_t \mathbb E_{q(c_t \mid \tilde c_{<t}, X)} \log p(x_t \mid c_t, x_{<t})`
    is computed exactly over the current step (Rao-Blackwellised) from the guide's
    step probabilities at its sample, the emission's gradient from the sampled
    states (:meth:`~pyro_dssm.model.relaxed.ChainLikelihood.expected_log_prob`). Its chain is
    the latent site whose prior the likelihood names (``fn.chain``); ``chains`` maps the model's
    latent distributions to their site names. Other sites give their log-density.
    """
    if not _averaged(site):
        return site["log_prob_sum"]
    name = chains.get(id(site["fn"].chain))
    if name is None:
        raise ValueError("the observed site's chain is not a latent site of this model trace")
    guide = guide_sites[name]
    q, sample = guide["fn"], guide["value"]
    logits = q.chain_logits(sample)  # (B, T, K), drawn with the sample
    # the relaxed sample's argmax is an exact draw from q(c_t | earlier steps) (Gumbel-max)
    states = torch.nn.functional.one_hot(sample.argmax(-1), logits.shape[-1]).to(logits.dtype)
    table = getattr(q, "emission_table", None)
    expected = site["fn"].expected_log_prob(site["value"], logits.softmax(-1), states, table)
    return scale_and_mask(expected, site["scale"], site["mask"]).sum()


def make_elbo(objective: str) -> ELBO:
    """The Pyro ELBO for ``objective`` (one of :data:`OBJECTIVES`)."""
    if objective == "trace":
        return RelaxedTraceELBO("discrete")
    if objective == "concrete":
        return RelaxedTraceELBO("concrete")
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
