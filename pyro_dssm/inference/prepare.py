"""Before the first step: the training mask on the device, and the data-driven init as the settings say.

Shared by the SVI trainer (:mod:`pyro_dssm.inference.trainer`) and the exact
baseline (:mod:`pyro_dssm.inference.mle`).
"""

from __future__ import annotations

import logging

import torch

from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.inference.init import data_driven_init

log = logging.getLogger(__name__)


def device_mask(data: SequenceData, device: torch.device) -> torch.Tensor | None:
    """(N, T) mask on ``device``, or None when no sequence is padded (decided once, on the CPU).

    None lets the model and guide skip per-batch length checks, which would
    force a host sync every step on a GPU.
    """
    return None if bool((data.lengths == data.x.shape[1]).all()) else data.mask.to(device)


def initialise(net, x: torch.Tensor, mask: torch.Tensor, cfg, gen: torch.Generator) -> None:
    """Data-driven init of ``net``'s generative networks from x (N, T, D), mask (N, T) as ``cfg.init`` says.

    ``cfg``: the trainer settings (``init``, ``init_restarts``, ``init_em_iters``,
    ``init_stay_prob``, ``init_max_sequences``); ``init=none`` keeps the weights as they are, and so does
    ``init=random`` here (its random starts are trained by the learning method itself:
    :mod:`pyro_dssm.inference.random_starts`). Data outside the emission family's support (e.g.
    non-integer counts for ``poisson``) is a ValueError first.
    """
    net.emitter.check_data(x, mask)
    if cfg.init in ("random", "none"):
        return
    info = data_driven_init(net, x, mask, gen, method=cfg.init, restarts=cfg.init_restarts,
                            em_iters=cfg.init_em_iters, stay_prob=cfg.init_stay_prob,
                            max_sequences=cfg.init_max_sequences)
    log.info("init (%s, %d restarts): best log p(X)/step %.4f from restart %d", cfg.init, cfg.init_restarts,
             info["init_loglik_per_step"], info["init_restart"])
