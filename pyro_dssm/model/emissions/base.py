r"""The contract of an emission family: :math:`p(x_t \mid c_t, \text{context}_t)`, one class per family.

A family writes one method, :meth:`Emission.distribution`: the distribution of x_t
for states c_t given what it reads of the observed past (:meth:`Emission.context`,
e.g. the last p observations; nothing for a memoryless family). States are points
of the simplex, (..., K): relaxed Gumbel-Softmax samples while training the DSSM,
one-hot vectors for the exact HMM. From it the package derives

* :meth:`Emission.log_prob`: log p(x_t | c_t, past) at (relaxed) states, (B, T);
* :meth:`Emission.table`: the exact HMM's (B, T, K) table :math:`\log p(x_t \mid c_t = k, x_{<t})`
  (the K one-hot states against every step), so forward, Viterbi, marginals and
  log p(X) of :mod:`pyro_dssm.model.hmm` hold for every family;
* :meth:`Emission.sample`: x given a state path, step by step where the past matters.

**Inputs** (a GLM-HMM's covariates, ``model.emission_inputs``): a family with ``input_dim`` U > 0 reads the
exogenous inputs u_t (B, T, U) in its context beside the past (``autoregressive``: as regressors of the mean);
every method below then takes them as ``inputs``. A family with ``input_dim`` 0 ignores ``inputs``.

**Missing values** are NaN cells of x. Each derived density is then the marginal over
the missing channels, :math:`\log p(x_t^{\text{obs}} \mid c_t, \text{context}_t)`
(:func:`observed_log_prob`: exact for distributions with independent channels,
:class:`~pyro_dssm.model.emissions.statistics.DiagonalNormal` and Poisson, and for the multivariate
normal); a step with every channel missing contributes 0. A family's context reads a missing past
value as 0 (the channel's training mean once standardised): families with memory condition on that
imputed past. Steps without a missing cell take the family's own fast path unchanged, the steps
with one are recomputed from :meth:`Emission.distribution` (:func:`split_missing`).

A family may override a derived method for speed; a test then checks it against the
derivation. Beside the networks the same class holds its classical initialisation,
the emission of a parametric HMM fitted by EM (:mod:`pyro_dssm.inference.em`):

* :meth:`Emission.start` and :meth:`Emission.m_step`: EM's start from labels, and per-state parameters maximising :math:`\sum_{t,k} w_{tk} \log p(x_t \mid k, \cdot)`;
* :meth:`Emission.classical_distribution`: the distribution of x_t under those parameters;
* :meth:`Emission.fit_to`: moves the networks to those parameters;

and :meth:`Emission.n_parameters`, its free parameters for BIC / AIC. Options of its
own come from :meth:`Emission.options` (the ``model`` settings it reads) and
``model.emission_options``. Register a family in :mod:`pyro_dssm.config.families`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn
from torch.distributions import Distribution


class Emission(nn.Module):
    """Parameterizes p(x_t | c_t, context_t) for one family (``order`` = how many past observations it reads).

    Subclasses take ``(n_states, obs_dim, hidden_dim, **options)``.
    """

    order: int = 0  # its context reads at most the last ``order`` observations and whether t <= order
    input_dim: int = 0  # U: the exogenous inputs its context reads (0: none; ``inputs`` are then ignored)
    accepts_inputs: bool = False  # whether the family can read inputs (``model.emission_inputs``)
    # The classical init (pyro_dssm/inference/em.py): a sticky Dirichlet prior of ``em_stickiness`` x (a state's share
    # of the steps) extra self-transitions, and ``em_random_starts`` random-label starts per k-means start.
    em_stickiness: float = 0.1
    em_random_starts: int = 3

    def __init__(self, n_states: int, obs_dim: int, hidden_dim: int):
        super().__init__()
        self.n_states = n_states
        self.obs_dim = obs_dim
        self.hidden_dim = hidden_dim

    @classmethod
    def options(cls, config) -> dict:
        """The family's keyword options from the ``model`` settings (``ModelConfig``); none by default."""
        return {}

    # --- what a family writes -------------------------------------------------------------------------------------

    def distribution(self, states: torch.Tensor, context: torch.Tensor) -> Distribution:
        """p(x_t | c_t, context_t): states (..., K) on the simplex, context (..., C) broadcasting against them;
        a distribution with batch shape the broadcast (...) and event shape (D,)."""
        raise NotImplementedError

    def context(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, T, D) -> (B, T, C): what step t's emission reads of x_{t-order:t-1} (and of t itself: whether
        it is among the first ``order`` steps); C = 0 for a memoryless family. Never reads x_t. A family with
        ``input_dim`` > 0 takes ``context(x, inputs)``, inputs (B, T, U), and reads u_t too."""
        return x.new_zeros(*x.shape[:2], 0)

    def context_of(self, x: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor:
        """:meth:`context` of x (B, T, D), with the inputs (B, T, U) for a family that reads them (ValueError
        when it needs them and none are given); ``inputs`` ignored otherwise."""
        if not self.input_dim:
            return self.context(x)
        if inputs is None or inputs.shape[-1] != self.input_dim or inputs.shape[:2] != x.shape[:2]:
            got = None if inputs is None else tuple(inputs.shape)
            raise ValueError(f"this emission reads {self.input_dim} inputs per step (model.emission_inputs); "
                             f"expected inputs of shape {(*x.shape[:2], self.input_dim)}, got {got}")
        return self.context(x, inputs)

    def m_step(self, x: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor) -> dict[str, torch.Tensor]:
        """The classical HMM's per-state parameters from x (B, T, D), mask (B, T) and state weights (B, T, K)."""
        raise NotImplementedError(f"{type(self).__name__} has no classical init; use trainer.init=random or none")

    def start(self, x: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor, centres: torch.Tensor | None = None,
              inputs: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """The classical HMM's parameters to start EM from: the M-step of one-hot ``labels`` (B, T, K) by default;
        ``centres`` (K, D) are the k-means centres the labels come from (None for random labels). A family that
        reads inputs takes them as ``start(..., inputs=)`` and ``m_step(..., inputs=)``."""
        return self.m_step(x, mask, labels, **self.input_keywords(inputs))

    def input_keywords(self, inputs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        """``{"inputs": inputs}`` for a family that reads them, else {}: the keywords for a method a family may
        override (``start``, ``m_step``, ``complete_table``, ``hard_log_prob``), so that one written without
        inputs keeps working."""
        return {"inputs": inputs} if self.input_dim else {}

    def classical_distribution(self, params: dict[str, torch.Tensor], context: torch.Tensor) -> Distribution:
        """p(x_t | c_t = k, context_t) of the classical HMM, batch (..., K) for context (..., 1, C)."""
        raise NotImplementedError(f"{type(self).__name__} has no classical init; use trainer.init=random or none")

    def fit_to(self, params: dict[str, torch.Tensor]) -> Callable[[], torch.Tensor] | None:
        """Move the networks to the classical ``params``: copy what maps exactly and return the loss whose
        minimum puts the rest there (regressed jointly with the transition), or None when copied exactly."""
        raise NotImplementedError(f"{type(self).__name__} has no classical init; use trainer.init=random or none")

    def n_parameters(self) -> int:
        """Free parameters of the emission with hard states (for BIC / AIC): what the likelihood depends on."""
        raise NotImplementedError

    def check_data(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """ValueError naming the first value of x (N, T, D) on the valid steps of mask (N, T) outside the support
        (NaN is a missing value, not outside it)."""
        if bool(torch.isinf(x if mask is None else x[mask.bool()]).any()):
            raise ValueError("x holds infinite values; expected finite numbers (NaN for a missing value)")

    # --- fast paths a family may write (complete steps only: no NaN in x) ----------------------------------------------

    def complete_table(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) without NaN -> (B, T, K): :meth:`table` derived from :meth:`distribution`; a family may
        override it with a faster formula (a test checks it against the derivation). ``inputs`` is passed only
        to a family that reads them."""
        return self.distribution(self.one_hot(x), self.context_of(x, inputs)[:, :, None]).log_prob(x[:, :, None])

    def complete_classical_table(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                                 inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) without NaN -> (B, T, K): :meth:`classical_table` derived from :meth:`classical_distribution`."""
        context = self.context_of(x, inputs)[:, :, None]
        return self.classical_distribution(params, context).log_prob(x[:, :, None])

    # --- derived ----------------------------------------------------------------------------------------------------

    def log_prob(self, x: torch.Tensor, states: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), states (B, T, K) on the simplex -> (B, T) log p(x_t | state_t, past) (observed cells)."""
        filled, observed = split_missing(x)
        context = self.context_of(filled, inputs)
        value = self.distribution(states, context).log_prob(filled)
        if observed is None:
            return value
        rows = ~observed.all(-1)  # (B, T) the steps with a missing cell
        states, context = broadcast_states(states, context)
        marginal = observed_log_prob(self.distribution(states[rows], context[rows]), filled[rows], observed[rows])
        return value.masked_scatter(rows, marginal)

    def hard_log_prob(self, x: torch.Tensor, states: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), one-hot states (B, T, K) -> (B, T): :meth:`log_prob` at hard states. A family whose
        network output is large per step overrides it with its table gathered at the states (same value
        and gradient; ``gaussian_full``: K factors (D, D) instead of B x T)."""
        return self.log_prob(x, states, inputs)

    def table(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, K): log p(x_t | c_t = k, x_{<t}) for every state k (the exact HMM's table);
        of the observed cells where x holds NaN. ``inputs`` (B, T, U): for a family that reads them."""
        filled, observed = split_missing(x)
        value = self.complete_table(filled, **self.input_keywords(inputs))
        if observed is None:
            return value
        return self._marginal_rows(value, filled, observed, inputs,
                                   lambda context: self.distribution(self.one_hot(filled), context))

    def classical_table(self, params: dict[str, torch.Tensor], x: torch.Tensor,
                        inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D) -> (B, T, K): the table of the classical HMM with ``params`` (:meth:`m_step`); of the
        observed cells where x holds NaN."""
        filled, observed = split_missing(x)
        value = self.complete_classical_table(params, filled, **self.input_keywords(inputs))
        if observed is None:
            return value
        return self._marginal_rows(value, filled, observed, inputs,
                                   lambda context: self.classical_distribution(params, context))

    def _marginal_rows(self, table: torch.Tensor, filled: torch.Tensor, observed: torch.Tensor,
                       inputs: torch.Tensor | None, distribution: Callable[[torch.Tensor], Distribution]) -> torch.Tensor:
        """``table`` (B, T, K) of ``filled`` x with the steps that have a missing cell replaced by the marginal of
        their observed cells under ``distribution(context (n, 1, C))`` (batch (n, K))."""
        rows = ~observed.all(-1)  # (B, T)
        context = self.context_of(filled, inputs)[rows][:, None]  # (n, 1, C)
        marginal = observed_log_prob(distribution(context), filled[rows][:, None], observed[rows][:, None])  # (n, K)
        return table.masked_scatter(rows[..., None].expand_as(table), marginal)

    def sample(self, states: torch.Tensor, generator: torch.Generator | None = None,
               inputs: torch.Tensor | None = None) -> torch.Tensor:
        """states (N, T) int64 -> x (N, T, D) drawn from p(x_t | c_t, past); step by step when ``order`` > 0.
        ``inputs`` (N, T, U): the given inputs, for a family that reads them."""
        weight = next(self.parameters())
        one_hot = nn.functional.one_hot(states.to(weight.device), self.n_states).to(weight.dtype)
        x = one_hot.new_zeros(*states.shape, self.obs_dim)
        if self.order == 0:
            return draw(self.distribution(one_hot, self.context_of(x, inputs)), generator)
        for t in range(states.shape[1]):  # step t's context: from the last `order` steps drawn before it
            start = max(0, t - self.order)  # the window's last row is step t's; t <= order iff it starts at 0
            recent = self.context_of(x[:, start: t + 1], None if inputs is None else inputs[:, start: t + 1])
            x[:, t] = draw(self.distribution(one_hot[:, t], recent[:, -1]), generator)
        return x

    def one_hot(self, like: torch.Tensor) -> torch.Tensor:
        """(K, K) identity: the K hard states, in the dtype and on the device of ``like``."""
        return torch.eye(self.n_states, dtype=like.dtype, device=like.device)


def split_missing(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """x (..., D) with NaN for missing cells -> (x with 0 there, (..., D) bool of observed cells), or (x, None)
    when nothing is missing (one host synchronisation)."""
    missing = torch.isnan(x)
    if not bool(missing.any()):
        return x, None
    return x.masked_fill(missing, 0.0), ~missing


def observed_log_prob(distribution: Distribution, value: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(x^{\text{obs}})`, the density of the observed cells, marginal over the others.

    ``value`` (..., D) (any number where a cell is missing), ``observed`` (..., D) bool, broadcasting against the
    batch of ``distribution`` (event (D,)). Independent channels (a distribution with ``channel_log_prob``, or
    ``Independent`` over one dim): the observed channels' sum. Multivariate normal
    :math:`\mathcal N(\mu, \Sigma)`: with :math:`M = \mathrm{diag}(o)`, the normal with covariance
    :math:`\Sigma' = M \Sigma M + (I - M)` at :math:`x' = Mx + (I - M)\mu` factorises into
    :math:`\mathcal N(x_o; \mu_o, \Sigma_{oo})` and a standard normal at 0 on the m missing channels, whose
    :math:`-\tfrac m2 \log 2\pi` is added back. A step with no observed cell gives 0.
    """
    if hasattr(distribution, "channel_log_prob"):
        return distribution.channel_log_prob(value).masked_fill(~observed, 0.0).sum(-1)
    if isinstance(distribution, torch.distributions.Independent) and distribution.reinterpreted_batch_ndims == 1:
        return distribution.base_dist.log_prob(value).masked_fill(~observed, 0.0).sum(-1)
    if isinstance(distribution, torch.distributions.MultivariateNormal):
        o = observed.to(value.dtype)
        mean = distribution.loc
        cov = distribution.covariance_matrix * o[..., :, None] * o[..., None, :]
        cov = cov + torch.diag_embed(1.0 - o)
        x = torch.where(observed, value, mean)
        n_missing = (1.0 - o).sum(-1)
        value = (torch.distributions.MultivariateNormal(mean, cov, validate_args=False).log_prob(x)
                 + 0.5 * n_missing * math.log(2 * math.pi))
        return value.masked_fill(~observed.any(-1), 0.0)  # exactly 0, not a rounding of it
    raise NotImplementedError(f"{type(distribution).__name__}: missing values need independent channels (a "
                              "channel_log_prob method) or a MultivariateNormal; fill the missing cells or add "
                              "channel_log_prob to the family's distribution")


def draw(distribution: Distribution, generator: torch.Generator | None) -> torch.Tensor:
    """A sample of ``distribution``, its randomness from ``generator`` (torch's distributions take none)."""
    if generator is None:
        return distribution.sample()
    seed = int(torch.randint(2**62, (1,), generator=generator))
    cuda = [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        return distribution.sample()


def broadcast_states(states: torch.Tensor, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """states (..., K) and context (..., C) expanded to their common batch shape."""
    batch = torch.broadcast_shapes(states.shape[:-1], context.shape[:-1])
    return states.expand(*batch, states.shape[-1]), context.expand(*batch, context.shape[-1])


def first_bad_step(bad: torch.Tensor, mask: torch.Tensor | None) -> tuple[int, int, int] | None:
    """(sequence, step, channel) of the first True of bad (N, T, D) on the valid steps of mask (N, T), or None."""
    if mask is not None:
        bad = bad & mask.bool()[..., None]
    where = bad.nonzero()
    return None if len(where) == 0 else tuple(int(v) for v in where[0])
