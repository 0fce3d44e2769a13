r"""The init's last step for a transition that reads context: its exact maximum likelihood, the emission held.

The classical fit of :mod:`pyro_dssm.inference.em` is a stationary HMM, so a transition that reads
the observed past or exogenous inputs (``recurrent``, ``inputs``) starts as that one (K, K) matrix
at every step, and SVI then has to find the context's effect through the relaxed chain, slowly
(``data=driven``: about 0.88 of the oracle after 20 epochs, measured). Because the context is
observed, the likelihood stays exact: with the emission table :math:`\ell_t(k) = \log p(x_t \mid
c_t = k, x_{<t})` of the init fixed, the transition network's weights :math:`\phi` are moved by Adam
on

.. math::

    -\frac{1}{N_\text{steps}} \log p(X \mid U;\ \phi) = -\frac{1}{N_\text{steps}}
    \sum_i \log \sum_{c_{1:T}} p(c_1) \prod_{t>1} A_t(c_{t-1}, c_t;\ \phi, \text{context}_t)
    \prod_t e^{\ell_t(c_t)},

the forward algorithm (:func:`pyro_dssm.model.hmm.log_likelihood`), differentiable, on the init's
sequences. Each step is a generalised EM step for the transition (the gradient of log p(X) is the
expected complete-data gradient under the exact posterior). ``trainer.init_context_steps`` sets the
number of steps (0: off, the stationary start).
"""

from __future__ import annotations

import logging

import torch

from pyro_dssm.model import hmm
from pyro_dssm.model.known import clamped

log = logging.getLogger(__name__)


def fit_context(net, x: torch.Tensor, mask: torch.Tensor, steps: int, lr: float = 1e-2) -> dict[str, float]:
    """Move ``net``'s transition (one that ``reads_context``) to the maximum of the exact log p(X | context) with its
    emission fixed, by ``steps`` Adam steps on all of x (N, T, data_dim), mask (N, T) bool.

    Returns ``init_context_loglik_before`` / ``_after``: log p(X) per valid step before and after (so the log
    says what the step bought); {} when the transition reads no context or ``steps`` is 0.
    """
    if not net.transition.reads_context or steps == 0:
        return {}
    features, inputs, clamp = net.observations(x)
    with torch.no_grad():
        table = clamped(net.emitter.table(features, inputs), clamp)
        context = net.transition.context(features, inputs)
    n_steps = mask.sum().clamp_min(1)
    log_init = hmm.uniform_log_init(net.n_states, table)
    opt = torch.optim.Adam(net.transition.parameters(), lr=lr)

    def loglik() -> torch.Tensor:
        return hmm.log_likelihood(log_init, net.transition.log_matrix(context), table, mask).sum() / n_steps

    with torch.no_grad():
        before = float(loglik())
    for _ in range(steps):
        loss = -loglik()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        after = float(loglik())
    log.info("init: the %s transition fitted to its context by exact maximum likelihood (%d steps, emission held): "
             "log p(X)/step %.4f -> %.4f", net.config.transition, steps, before, after)
    return {"init_context_loglik_before": before, "init_context_loglik_after": after}
