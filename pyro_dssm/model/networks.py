"""The guide's networks and the model's evidence it reads (the model's factors are families:
:mod:`pyro_dssm.model.emissions`, :mod:`pyro_dssm.model.transitions`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


def mlp(n_in: int, n_hidden: int, n_out: int) -> nn.Sequential:
    """Linear -> ReLU -> Linear: the shape of the built-in transition and emission networks."""
    return nn.Sequential(nn.Linear(n_in, n_hidden), nn.ReLU(), nn.Linear(n_hidden, n_out))


def fit_output_layer(net: nn.Sequential, inputs: torch.Tensor,
                     targets: torch.Tensor) -> Callable[[], torch.Tensor] | None:
    r"""Move the last ``nn.Linear`` of ``net`` (an :func:`mlp`) so that ``net(inputs) = targets`` exactly.

    inputs (K, n_in), typically the K one-hot states; targets (K, n_out). With the hidden features
    :math:`h_k` of the inputs fixed, the output is linear in the last layer's weight and bias: the change of
    least Frobenius norm that solves :math:`[h_k, 1]\,\Delta = y_k - \mathrm{net}(x_k)` for every k
    (the pseudo-inverse, float64) is added to them; the first layer stays as built. Exact whenever the K rows
    :math:`[h_k, 1]` are linearly independent (H + 1 >= K and no two inputs alike after the ReLU).
    Returns None when every output is within 1e-4 (relative) of its target, else the mean squared error's
    closure for a gradient fit to finish (the init's Adam, :func:`pyro_dssm.inference.em.distill`).
    """
    layer = net[-1]
    with torch.no_grad():
        hidden = net[:-1](inputs).double()
        design = torch.cat([hidden, torch.ones_like(hidden[:, :1])], -1)  # (K, H + 1)
        delta = torch.linalg.pinv(design) @ (targets - net(inputs)).double()  # (H + 1, n_out)
        layer.weight += delta[:-1].T.to(layer.weight.dtype)
        layer.bias += delta[-1].to(layer.bias.dtype)
        error = float((net(inputs) - targets).abs().max())
    if error <= 1e-4 * (1.0 + float(targets.abs().max())):
        return None
    return lambda: nn.functional.mse_loss(net(inputs), targets)


class Evidence(NamedTuple):
    r"""What the generative model itself says about :math:`c_t`, added to the guide's logits.

    The exact posterior of an HMM factorises as
    :math:`p(c_t \mid c_{t-1}, X) \propto A_{c_{t-1} c_t}\, p(x_t \mid c_t, x_{<t})\, \beta_t(c_t)`.
    All three factors are known from the model (the backward message
    :math:`\beta_t(k) = p(x_{t+1:T} \mid c_t = k)` by the backward algorithm, as x is
    observed). With ``Evidence`` the guide's logits are
    :math:`\log A_{c_{t-1}, \cdot} + \log p(x_t \mid \cdot, x_{<t}) + \log \beta_t + g_t`
    and the networks learn the residual :math:`g_t`: zero where the model's exact
    conditional is the answer. A relaxed previous state enters as
    :math:`\sum_i c_{t-1,i} \log A_{i, \cdot}`. Without ``future`` (``model.guide_messages=false``)
    the networks must learn the part :math:`\beta_t` plays themselves.
    Every tensor is an input (detached), as x is: they track the model as it trains,
    so the guide never lags behind it.

    Fields:
        local: (B, T, K) :math:`\log p(x_t \mid c_t = k, x_{<t})`, normalised over k.
        log_trans: (K, K) :math:`\log p(c_t = j \mid c_{t-1} = i)`, or (B, T, K, K) per step (a transition that
            reads the observed past).
        future: (B, T, K) :math:`\log \beta_t(k)`, normalised over k (uniform from each
            sequence's last valid step on), or None.
    """

    local: torch.Tensor
    log_trans: torch.Tensor
    future: torch.Tensor | None = None

    def logits(self, t: int, prev_state: torch.Tensor) -> torch.Tensor:
        """(B, K) the model's part of step t's logits; prev_state (B, K) on the simplex (unused at t = 0)."""
        own = self.local[:, t] if self.future is None else self.local[:, t] + self.future[:, t]
        if t == 0:
            return own
        if self.log_trans.dim() == 4:
            return own + (prev_state.unsqueeze(-2) @ self.log_trans[:, t]).squeeze(-2)
        return own + prev_state @ self.log_trans


class PosteriorNet(nn.Module):
    """Parameterizes q(c_t | c_{t-1}, X): logits of the current state.

    A bidirectional GRU over x_{1:T} summarises the whole sequence into h_t
    (:meth:`encode`); a GRU cell fed [h_t, previous relaxed state] carries the
    chain forward and a linear layer reads out the logits (:meth:`step`).

    With ``extra_dim`` > 0 the BiGRU reads ``extra_dim`` more inputs per step
    after x_t (:meth:`encode`'s ``extra``): the model passes the emission's
    per-state log-likelihoods there when they depend on the past
    (:meth:`pyro_dssm.model.dssm.DSSM.guide_features`).
    """

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, extra_dim: int = 0):
        super().__init__()
        self.n_states = n_states
        self.hidden_dim = hidden_dim
        self.extra_dim = extra_dim
        self.birnn = nn.GRU(obs_dim + extra_dim, hidden_dim, batch_first=True, bidirectional=True)
        self.cell = nn.GRUCell(2 * hidden_dim + n_states, hidden_dim)
        self.readout = nn.Linear(hidden_dim, n_states)

    def encode(
        self, x: torch.Tensor, lengths: torch.Tensor | None = None, extra: torch.Tensor | None = None
    ) -> torch.Tensor:
        """(B, T, D) observations -> (B, T, 2H) features h_t.

        With ``lengths`` (B,), padding is skipped so that the backward direction
        starts at each sequence's own last step. ``extra`` (B, T, ``extra_dim``):
        more per-step inputs, required exactly when ``extra_dim`` > 0.
        """
        if (extra is None) != (self.extra_dim == 0):
            raise ValueError(f"this PosteriorNet reads {self.extra_dim} extra inputs per step, got "
                             f"{None if extra is None else tuple(extra.shape)}")
        if extra is not None:
            x = torch.cat([x, extra], -1)
        if lengths is None or bool((lengths == x.shape[1]).all()):
            return self.birnn(x)[0]
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.birnn(packed)
        return pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])[0]

    def initial(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Zero previous state (B, K) and zero GRU hidden state (B, H) for step 1."""
        B = features.shape[0]
        return features.new_zeros(B, self.n_states), features.new_zeros(B, self.hidden_dim)

    def step(
        self, h_t: torch.Tensor, prev_state: torch.Tensor, hidden: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: h_t (B, 2H), prev_state (B, K), hidden (B, H) -> logits (B, K), new hidden (B, H)."""
        hidden = self.cell(torch.cat([h_t, prev_state], dim=-1), hidden)
        return self.readout(hidden), hidden

    def unroll(
        self, features: torch.Tensor, feed: Callable[[int, torch.Tensor], torch.Tensor], log_space: bool = False,
        evidence: Evidence | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        r"""The recursion :math:`q(c_t \mid c_{t-1}, X)` over all steps, t = 1..T.

        Step t reads h_t and the previous state (zero at t = 1) and gives the
        logits of :math:`q(c_t \mid c_{t-1}, X)`; ``feed(t, logits)`` (t from 0)
        returns the state c_t fed to step t + 1: a relaxed sample, the one-hot
        argmax, a categorical sample, or a given state. It is called in step
        order, so a feed that draws random numbers draws them in that order.

        Args:
            features: (B, T, 2H) h_t from :meth:`encode`.
            feed: ``(t, logits (B, K)) -> state (B, K)``, a point of the simplex,
                or its log if ``log_space`` (the relaxed chain's value, fed as its exp).
            evidence: the model's own terms, added to every step's logits (:class:`Evidence`), or None.
        Returns:
            logits: (B, T, K) of every step.
            states: (B, T, K) what ``feed`` returned.
        """
        prev, hidden = self.initial(features)
        logits_all, states = [], []
        # unbind, not features[:, t]: the backward of T indexing ops would scatter
        # each step's gradient into its own zero (B, T, 2H) tensor, O(T^2) work
        for t, h_t in enumerate(features.unbind(1)):
            logits, hidden = self.step(h_t, prev, hidden)
            if evidence is not None:
                logits = logits + evidence.logits(t, prev)
            state = feed(t, logits)
            logits_all.append(logits)
            states.append(state)
            prev = state.exp() if log_space else state
        return torch.stack(logits_all, 1), torch.stack(states, 1)
