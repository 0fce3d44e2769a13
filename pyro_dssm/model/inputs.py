r"""Exogenous inputs :math:`u_t`: observed series the switches (and decoding) condition on, never modelled.

An input-output HMM (Bengio and Frasconi 1995; a GLM-HMM in neuroscience, Ashwood et al. 2022)
conditions the chain on a known series :math:`u_{1:T}` (a stimulus, a control signal, time of day):

.. math::

    p(X, C \mid U) = p(c_1) \prod_{t>1} p(c_t \mid c_{t-1}, u_t) \prod_t p(x_t \mid c_t, x_{<t}).

:math:`u` has no density in the model (it is given, like a regression's covariates), so log p(X) is
:math:`\log p(X \mid U)` and every exact algorithm of :mod:`pyro_dssm.model.hmm` runs on the known
(B, T, K, K) table of the step (``model.transition=inputs``,
:class:`~pyro_dssm.model.transitions.inputs.InputsTransition`; ``recurrent`` reads them beside
:math:`x_{t-1}`). The guide's BiGRU reads them beside x. With ``model.emission_inputs`` the emission
reads them too, :math:`p(x_t \mid c_t, x_{<t}, u_t)` (a GLM-HMM: regressors of the autoregressive mean,
:mod:`pyro_dssm.model.emissions.autoregressive`); its table stays known given U.

The columns of the observation tensor (B, T, :attr:`~pyro_dssm.model.dssm.NeuralHMM.data_dim`) are
``[features (D) | inputs (U) | known state (1, with model.known_states)]``: one tensor, so that
minibatches, windows and padding keep a step's inputs with it (as :mod:`pyro_dssm.model.known` does
for the known states).
"""

from __future__ import annotations

import torch


def split_inputs(x: torch.Tensor, obs_dim: int, input_dim: int) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Observations (B, T, D + U [+ 1]) -> the features (B, T, D) and the inputs (B, T, U) (None for U = 0); the
    known-state column, if any, stays out of both."""
    if input_dim == 0:
        return x[..., :obs_dim], None
    return x[..., :obs_dim], x[..., obs_dim:obs_dim + input_dim]

