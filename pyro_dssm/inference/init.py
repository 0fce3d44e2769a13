"""The data-driven initialisation of the generative networks: the one entry point, :func:`initialise`.

Why: from a random start, SVI (and gradient-based maximum likelihood too)
often settles with two true states merged into one emission and another
unused, a local optimum that neither the Gumbel noise nor more epochs
escape. So, before any gradient step, ``trainer.init`` says what to do:

* ``em`` (default): the family's classical HMM fitted by Baum-Welch from several
  k-means (and, for some families, random-label) starts, the best by exact log p(X),
  distilled into the networks (:mod:`pyro_dssm.inference.em`); a transition that reads context
  (``recurrent``, ``inputs``) is then fitted to it by exact maximum likelihood, the emission held
  (:mod:`pyro_dssm.inference.context_fit`, ``trainer.init_context_steps``);
* ``kmeans``: the same from the k-means starts, without EM iterations;
* ``random``: the weights as built; the learning method trains its random starts
  (:mod:`pyro_dssm.inference.random_starts`);
* ``none``: the weights as they are.

The guide is then warmed up by :mod:`pyro_dssm.inference.warm_start`.
"""

from __future__ import annotations

import logging

import torch

from pyro_dssm.inference.context_fit import fit_context
from pyro_dssm.inference.em import distill, fit_classical

log = logging.getLogger(__name__)


def initialise(net, x: torch.Tensor, mask: torch.Tensor, cfg, gen: torch.Generator) -> dict:
    """Data-driven init of ``net``'s generative networks from x (N, T, D), mask (N, T) as ``cfg.init`` says.

    ``net``: a :class:`~pyro_dssm.model.dssm.NeuralHMM` (DSSM or exact baseline). ``cfg``: the trainer
    settings (``init``, ``init_restarts``, ``init_em_iters``, ``init_em_tol``, ``init_segments``,
    ``init_screen_iters``, ``init_finalists``, ``init_stay_prob``, ``init_max_sequences``).
    Data outside the emission family's support (e.g. non-integer counts for ``poisson``) is a
    ValueError first. Uses at most ``init_max_sequences`` randomly chosen sequences. Returns the chosen
    candidate's ``init_loglik_per_step`` and index ``init_restart`` ({} for ``random`` and ``none``).
    """
    net.emitter.check_data(net.observations(x)[0], mask)
    if cfg.init in ("random", "none"):
        return {}
    mask = mask.bool()
    if x.shape[0] > cfg.init_max_sequences:
        idx = torch.randperm(x.shape[0], generator=gen)[: cfg.init_max_sequences].to(x.device)
        x, mask = x[idx], mask[idx]
    features, inputs, clamp = net.observations(x)  # known states: EM's posteriors are clamped there too (inputs:
    # the classical fit's chain is stationary, whose matrix the transition's table at u = 0 is moved to; an emission
    # that reads them regresses on them)
    params, trans, score, restart = fit_classical(net.emitter, features, mask, gen, cfg.init, cfg.init_restarts,
                                                  cfg.init_em_iters, cfg.init_stay_prob, clamp, inputs,
                                                  cfg.init_screen_iters, cfg.init_finalists, cfg.init_em_tol,
                                                  cfg.init_segments)
    distill(net, params, trans)
    log.info("init (%s, %d restarts): best log p(X)/step %.4f from candidate %d", cfg.init, cfg.init_restarts,
             score, restart)
    # a transition that reads context starts as the stationary matrix; its context is fitted exactly, emission held
    context = fit_context(net, x, mask, cfg.init_context_steps)
    return {"init_loglik_per_step": score, "init_restart": restart, **context}
