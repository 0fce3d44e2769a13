r"""``poisson``: counts, :math:`p(x_t \mid c_t) = \prod_d \mathrm{Poisson}(x_{td};\ \lambda_d(c_t))`.

The rate is a network of the state (MLP K -> H -> D) through
:math:`\lambda = \mathrm{softplus}(\cdot) + \lambda_{\min}`. For non-negative
integer data (spike trains, event counts) fed unstandardised; anything else is
refused by :meth:`PoissonEmission.check_data` with the first bad value.
Classical init: a Poisson HMM (rates = weighted means of the counts).

**Inputs** (``model.emission_inputs=true``, a Poisson GLM-HMM): :math:`\lambda_d(c_t, u_t) =
\mathrm{softplus}(f_d(c_t) + (W_{c_t} u_t)_d) + \lambda_{\min}` with per-state weights :math:`W_k` (D, U), starting
at zero; relaxed states enter linearly, :math:`\sum_k c_k W_k u_t`. Its classical M-step has no closed form: each
state's weighted Poisson regression (softplus link, concave in its parameters) is solved by L-BFGS in float64
(:meth:`PoissonEmission.regression`).
"""

from __future__ import annotations

import torch
from torch import nn

from pyro_dssm.model.emissions.base import Emission, broadcast_states, first_bad_step
from pyro_dssm.model.emissions.statistics import RATE_FLOOR, inverse_softplus, weighted_moments
from pyro_dssm.model.networks import fit_output_layer, mlp


class IndependentPoisson(torch.distributions.Distribution):
    r"""Independent Poisson counts over the last dim of ``rate`` (..., D): batch (...), event (D,).

    :meth:`log_prob` is :math:`\sum_d x_d \log \lambda_d - \lambda_d - \log x_d!`, as the family computed it
    before it became a distribution (bitwise the numbers of earlier runs); equal to torch's ``Poisson`` summed
    (tested). Not validated (no host sync)."""

    arg_constraints = {}

    def __init__(self, rate: torch.Tensor):
        self.rate = rate
        super().__init__(rate.shape[:-1], rate.shape[-1:], validate_args=False)

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        return (value * self.rate.log() - self.rate - torch.lgamma(value + 1)).sum(-1)

    def channel_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """(..., D) per-channel terms of :meth:`log_prob` (for missing counts)."""
        return value * self.rate.log() - self.rate - torch.lgamma(value + 1)

    def sample(self, sample_shape=torch.Size()) -> torch.Tensor:
        with torch.no_grad():
            return torch.poisson(self.rate.expand(self._extended_shape(sample_shape)))


def poisson(rate: torch.Tensor) -> IndependentPoisson:
    """Independent Poisson counts over the last dim of ``rate`` (..., D) (:class:`IndependentPoisson`)."""
    return IndependentPoisson(rate)


class PoissonEmission(Emission):
    """Parameterizes the rates of p(x_t | c_t): (..., K) point of the simplex -> (..., D) rates > 0."""

    accepts_inputs = True

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int, input_dim: int = 0):
        super().__init__(n_states, obs_dim, hidden_dim)
        self.net = mlp(n_states, hidden_dim, obs_dim)
        self.input_dim = input_dim
        if input_dim:
            self.input_weight = nn.Parameter(torch.zeros(n_states, obs_dim, input_dim))  # W_k

    @classmethod
    def options(cls, config) -> dict:
        return {"input_dim": config.input_dim if config.emission_inputs else 0}

    def forward(self, state: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """state (..., K) [, inputs (..., U)] -> (..., D) rates."""
        raw = self.net(state)
        if inputs is not None and self.input_dim:
            raw = raw + torch.einsum("...k,kdu,...u->...d", state, self.input_weight, inputs)
        return nn.functional.softplus(raw) + RATE_FLOOR

    def context(self, x, inputs=None):
        """The inputs u_t (B, T, U) for a family that reads them; nothing otherwise (no memory)."""
        return inputs.to(x.dtype) if self.input_dim else x.new_zeros(*x.shape[:2], 0)

    def rates(self) -> torch.Tensor:
        """(K, D) the rates of each hard state."""
        return self(self.one_hot(self.net[0].weight))

    def distribution(self, states, context):
        states, context = broadcast_states(states, context)
        return poisson(self(states, context if self.input_dim else None))

    def complete_table(self, x, inputs=None):
        r""":meth:`Emission.complete_table` with :math:`\sum_d x_d \log \lambda_{kd}` as one matrix product (rates
        per step with inputs: the derivation)."""
        if self.input_dim:
            return super().complete_table(x, inputs)
        rate = self.rates()  # (K, D)
        return x @ rate.log().T - rate.sum(-1) - torch.lgamma(x + 1).sum(-1, keepdim=True)

    def m_step(self, x, mask, weights, inputs=None):
        rate = weighted_moments(x, weights * mask[..., None])[0].clamp_min(2 * RATE_FLOOR)
        if not self.input_dim:
            return {"rate": rate}
        return self.regression(x, mask, weights, inputs, inverse_softplus(rate - RATE_FLOOR))

    def regression(self, x, mask, weights, inputs, bias, steps: int = 30) -> dict[str, torch.Tensor]:
        r"""Per-state Poisson regression with the softplus link: ``bias`` (K, D) and ``weight`` (K, D, U) maximising
        :math:`\sum_{t,k} w_{tk} \log \mathrm{Poisson}(x_t; \mathrm{softplus}(b_k + W_k u_t) + \lambda_{\min})` over the
        observed cells, by L-BFGS from ``bias`` and W = 0, in float64 (the link is log-concave: one optimum)."""
        w = (weights * mask[..., None]).double()
        observed = ~torch.isnan(x)
        counts, u = x.nan_to_num(0.0).double(), inputs.double()
        b = bias.double().clone().requires_grad_()
        W = torch.zeros(*bias.shape, u.shape[-1], dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([b, W], max_iter=steps, line_search_fn="strong_wolfe")
        total = w.sum().clamp_min(1.0)

        def loss():
            opt.zero_grad()
            rate = nn.functional.softplus(b + torch.einsum("kdu,btu->btkd", W, u)) + RATE_FLOOR  # (B, T, K, D)
            ll = (counts[:, :, None] * rate.log() - rate).masked_fill(~observed[:, :, None], 0.0).sum(-1)
            value = -(w * ll).sum() / total
            value.backward()
            return value

        opt.step(loss)
        return {"bias": b.detach().to(x.dtype), "weight": W.detach().to(x.dtype)}

    def classical_distribution(self, params, context):
        if "rate" in params:
            return poisson(params["rate"])
        raw = params["bias"] + torch.einsum("kdu,...u->...kd", params["weight"], context[..., 0, :])
        return poisson(nn.functional.softplus(raw) + RATE_FLOOR)

    def fit_to(self, params):
        if "weight" in params:
            with torch.no_grad():
                self.input_weight.copy_(params["weight"])
            target = params["bias"]
        else:
            target = inverse_softplus(params["rate"] - RATE_FLOOR)
        eye = self.one_hot(target)
        return fit_output_layer(self.net, eye, target)

    def check_data(self, x, mask=None):
        super().check_data(x, mask)
        observed = ~torch.isnan(x)  # NaN: a missing count
        for bad, what in ((x < 0, "negative"), (observed & (x != x.round()), "not an integer")):
            found = first_bad_step(bad, mask)
            if found is not None:
                i, t, d = found
                raise ValueError(f"poisson emission needs non-negative integer counts: sequence {i}, step {t}, "
                                 f"channel {d} holds {float(x[i, t, d])!r} ({what}); data=csv / npz standardise the "
                                 f"features unless data.standardize=false")

    def n_parameters(self) -> int:
        return self.n_states * self.obs_dim * (1 + self.input_dim)
