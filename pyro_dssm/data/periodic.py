r"""Periodic regimes: long stretches of one oscillation each, with an exact oracle (``data=periodic``).

The regimes last much longer (``mean_duration`` steps on average) than the motion inside them (periods of
``min_period`` to ``max_period`` steps). The generating process, K states and D channels, every channel
independent given the states:

.. math::

    c_1 \sim \mathrm{Uniform}(K), \qquad c_t \mid c_{t-1} \sim \mathrm{Categorical}(P_{c_{t-1}}),
    \qquad P_{kk} = 1 - 1/\texttt{mean\_duration},

and, with :math:`y_{t,d} = x_{t,d} - m_d`, each state k drives channel d as a noisy oscillator, an AR(2) with
the complex roots :math:`r e^{\pm i \omega_{kd}}`:

.. math::

    y_{t,d} = \phi_{1,kd}\, y_{t-1,d} + \phi_2\, y_{t-2,d} + s_{kd}\, \varepsilon_{t,d}, \qquad
    \phi_{1,kd} = 2 r \cos\omega_{kd}, \quad \phi_2 = -r^2, \quad \varepsilon_{t,d} \sim \mathcal N(0, 1)
    \qquad (t \ge 3,\ k = c_t).

Its stationary autocovariances (state k, channel d; :func:`ar2_autocovariance`) are

.. math::

    \gamma_0 = \frac{s^2 (1 - \phi_2)}{(1 + \phi_2)\big((1 - \phi_2)^2 - \phi_1^2\big)}, \qquad
    \gamma_1 = \frac{\phi_1 \gamma_0}{1 - \phi_2}, \qquad \rho_1 = \gamma_1 / \gamma_0,

and the first two steps are drawn from the stationary law of their own state, so the start is exact:

.. math::

    y_{1,d} \mid c_1 = k \sim \mathcal N(0,\ \gamma_{0,kd}), \qquad
    y_{2,d} \mid c_2 = k, y_1 \sim \mathcal N\big(\rho_{1,kd}\, y_{1,d},\ \gamma_{0,kd} (1 - \rho_{1,kd}^2)\big).

Every factor is a function of :math:`(c_t, x_{<t})`, so this is an exact HMM given x:
:meth:`PeriodicParams.log_likelihoods` is its (B, T, K) table and the forward algorithm gives log p(X).
The true emission is a linear AR(2): ``model.emission=autoregressive`` with ``model.ar_order=2`` holds it.

Drawn from the seed: :math:`m_d \sim \mathcal N(0, 1)`, one mean shared by all states (the level does not
tell the states apart); per state and channel a period :math:`2\pi/\omega_{kd}` log-uniform on
[``min_period``, ``max_period``] and an amplitude :math:`a_{kd} = \sqrt{\gamma_{0,kd}}` log-uniform on
:math:`[\texttt{amplitude\_spread}^{-1/2}, \texttt{amplitude\_spread}^{1/2}]`, which sets
:math:`s_{kd}`. Each regime has its own frequencies, amplitudes and pattern over the channels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from pyro_dssm.config import PeriodicDataConfig
from pyro_dssm.data.chain import sample_states, sticky_transition
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.data.synthetic import SyntheticData


def ar2_autocovariance(phi1: torch.Tensor, phi2: torch.Tensor,
                       noise_std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    r"""Stationary :math:`(\gamma_0, \gamma_1)` of :math:`y_t = \phi_1 y_{t-1} + \phi_2 y_{t-2} + s\,\varepsilon_t`
    (module docstring), elementwise over broadcastable tensors; a stationary process needs the roots inside the
    unit circle."""
    gamma0 = noise_std**2 * (1 - phi2) / ((1 + phi2) * ((1 - phi2) ** 2 - phi1**2))
    return gamma0, phi1 * gamma0 / (1 - phi2)


@dataclass
class PeriodicParams:
    r"""Parameters of the periodic-regime HMM (module docstring): one AR(2) oscillator per state and channel.

    Attributes:
        initial: (K,) p(c_1).
        transition: (K, K) row-stochastic, ``transition[i, j] = p(c_t=j | c_{t-1}=i)``.
        mean: (D,) m, shared by every state.
        ar: (K, D, 2) :math:`(\phi_{1,kd}, \phi_{2,kd})` of
            :math:`y_t = \phi_1 y_{t-1} + \phi_2 y_{t-2} + s\,\varepsilon_t`.
        noise_std: (K, D) :math:`s_{kd}`, the innovation sigma.
    """

    initial: torch.Tensor
    transition: torch.Tensor
    mean: torch.Tensor
    ar: torch.Tensor
    noise_std: torch.Tensor

    @property
    def n_states(self) -> int:
        return self.ar.shape[0]

    def stationary(self) -> tuple[torch.Tensor, torch.Tensor]:
        r"""(K, D) :math:`\gamma_0`, the stationary variance (amplitude squared), and (K, D) :math:`\rho_1`, the
        lag-1 correlation."""
        gamma0, gamma1 = ar2_autocovariance(self.ar[..., 0], self.ar[..., 1], self.noise_std)
        return gamma0, gamma1 / gamma0

    def conditionals(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        r"""(B, T, D) -> loc (B, T, K, D) and variance (T, K, D) of the Normal :math:`x_t \mid c_t = k, x_{<t}`
        (module docstring)."""
        B, T, D = x.shape
        m, ar, s = self.mean.to(x), self.ar.to(x), self.noise_std.to(x)
        gamma0, rho1 = (v.to(x) for v in self.stationary())
        y = (x - m)[:, :, None, :]  # (B, T, 1, D)
        first = m.expand(B, 1, self.n_states, D)  # t = 1: the stationary mean
        second = m + rho1 * y[:, :min(1, T - 1)]  # t = 2: (B, 1, K, D), none when T = 1
        rest = m + ar[..., 0] * y[:, 1:T - 1] + ar[..., 1] * y[:, :max(T - 2, 0)]  # t >= 3: (B, T - 2, K, D)
        var = torch.cat([gamma0[None], (gamma0 * (1 - rho1**2))[None], (s**2).expand(max(T - 2, 0), -1, -1)])
        return torch.cat([first, second, rest], 1), var[:T]

    def log_likelihoods(self, x: torch.Tensor) -> torch.Tensor:
        r"""(B, T, D) -> (B, T, K): :math:`\log p(x_t \mid c_t = k, x_{t-1}, x_{t-2})`, the first two steps
        :math:`\log p(x_1 \mid c_1 = k)` and :math:`\log p(x_2 \mid c_2 = k, x_1)`, summed over the channels.

        Padded steps get finite values that a mask ignores.
        """
        loc, var = self.conditionals(x)
        sq = (x[:, :, None, :] - loc).pow(2)  # (B, T, K, D)
        return (-0.5 * (sq / var + var.log() + math.log(2 * math.pi))).sum(-1)

    def sample(self, n_seqs: int, seq_len: int, generator: torch.Generator) -> SequenceData:
        """``n_seqs`` sequences of ``seq_len`` steps: the states, then the noise (N, T, D), then x step by step."""
        states = sample_states(self.initial, self.transition, n_seqs, seq_len, generator)
        noise = torch.randn(n_seqs, seq_len, self.mean.shape[0], generator=generator)
        gamma0, rho1 = self.stationary()
        y = torch.empty_like(noise)  # x - m
        y[:, 0] = gamma0[states[:, 0]].sqrt() * noise[:, 0]
        if seq_len > 1:
            k = states[:, 1]
            y[:, 1] = rho1[k] * y[:, 0] + (gamma0[k] * (1 - rho1[k] ** 2)).sqrt() * noise[:, 1]
        for t in range(2, seq_len):
            ar, s = self.ar[states[:, t]], self.noise_std[states[:, t]]  # (N, D, 2), (N, D)
            y[:, t] = ar[..., 0] * y[:, t - 1] + ar[..., 1] * y[:, t - 2] + s * noise[:, t]
        return SequenceData((self.mean + y).float(), torch.full((n_seqs,), seq_len, dtype=torch.long), states)


def make_periodic_params(n_states: int, obs_dim: int, mean_duration: float, damping: float, min_period: float,
                         max_period: float, amplitude_spread: float, generator: torch.Generator) -> PeriodicParams:
    """Random parameters of the process in the module docstring (draws: m, the (K, D) periods, the amplitudes)."""
    K, D = n_states, obs_dim
    mean = torch.randn(D, generator=generator)
    period = min_period * (max_period / min_period) ** torch.rand(K, D, generator=generator)
    amplitude = amplitude_spread ** (torch.rand(K, D, generator=generator) - 0.5)
    phi1 = 2 * damping * torch.cos(2 * math.pi / period)
    phi2 = torch.full((K, D), -damping**2)
    unit_gamma0, _ = ar2_autocovariance(phi1, phi2, torch.ones(K, D))  # gamma0 of s = 1; gamma0 scales as s^2
    return PeriodicParams(torch.full((K,), 1.0 / K), sticky_transition(K, 1.0 - 1.0 / mean_duration), mean,
                          torch.stack([phi1, phi2], -1), amplitude / unit_gamma0.sqrt())


def make_periodic(n_states: int = 4, obs_dim: int = 3, seq_len: int = 400, n_train: int = 200, n_val: int = 50,
                  mean_duration: float = 80.0, damping: float = 0.97, min_period: float = 6.0,
                  max_period: float = 24.0, amplitude_spread: float = 3.0, seed: int = 0) -> SyntheticData:
    """Seeded ``data=periodic``: parameters, then train, then validation sequences (x float32 (N, T, D))."""
    PeriodicDataConfig(n_states=n_states, obs_dim=obs_dim, seq_len=seq_len, n_train=n_train, n_val=n_val,
                       mean_duration=mean_duration, damping=damping, min_period=min_period, max_period=max_period,
                       amplitude_spread=amplitude_spread)  # ValueError naming a bad argument
    gen = torch.Generator().manual_seed(seed)
    params = make_periodic_params(n_states, obs_dim, mean_duration, damping, min_period, max_period,
                                  amplitude_spread, gen)
    return SyntheticData(params.sample(n_train, seq_len, gen), params.sample(n_val, seq_len, gen), params)
