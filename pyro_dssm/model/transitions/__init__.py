r"""Transition families :math:`p(c_t \mid c_{t-1}, \dots)`, one module each (``model.transition`` picks one).

| family | p(c_t given c_{t-1}) |
|---|---|
| ``stationary`` | Cat(softmax(MLP(c_{t-1}))): with one-hot states a K x K matrix, the same at every step |
| ``recurrent`` | Cat(softmax(MLP([c_{t-1}, x_{t-1} (, u_t)]))): a table per step, read from the last observation |
| ``inputs`` | Cat(softmax(MLP([c_{t-1}, u_t]))): a table per step, read from the exogenous inputs |

The contract: :class:`~pyro_dssm.model.transitions.base.Transition`.
"""

from __future__ import annotations

from pyro_dssm.model.transitions.base import Transition
from pyro_dssm.model.transitions.stationary import StationaryTransition

__all__ = ["Transition", "StationaryTransition"]
