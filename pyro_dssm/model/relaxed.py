r"""Relaxed categorical Markov chains: one Pyro sample site for a whole sequence.

Each step is a Gumbel-Softmax (Concrete) variable kept in **log space**
(torch's ``ExpRelaxedCategorical``): the site value is
:math:`y_t = \log \tilde c_t` with :math:`\tilde c_t` on the simplex. Log space
keeps the densities finite at low temperature (simplex densities in float32
overflow below tau ~ 0.2); since model and guide use the same variable, the
Jacobian of :math:`y \mapsto \exp y` cancels in every ELBO.

The chain's density factorises over time,
:math:`\log p(y_{1:T}) = \sum_t \log \mathrm{ExpConcrete}(y_t; \ell_t, \tau)`,
with step logits :math:`\ell_t` that depend on earlier steps. Sampling must run
the recursion; the density only needs the logits of every step given the whole
chain, which the prior computes in one batched call (the point of one site per
chain instead of one per step: Pyro's per-site bookkeeping is paid once).
"""

from __future__ import annotations

import math

import torch
from pyro.distributions import TorchDistribution
from torch.distributions import constraints

from pyro_dssm.model.networks import Evidence, PosteriorNet
from pyro_dssm.model.transitions.base import Transition


def exp_relaxed_rsample(logits: torch.Tensor, temperature: torch.Tensor, gumbels: torch.Tensor) -> torch.Tensor:
    r"""Reparameterised ExpConcrete sample from given Gumbel noise (see :func:`gumbel_noise`).

    :math:`y = s - \mathrm{logsumexp}(s)`, :math:`s = (\ell + g)/\tau`. All tensors (..., K).
    """
    return ((logits + gumbels) / temperature).log_softmax(-1)


def exp_relaxed_log_prob(value: torch.Tensor, logits: torch.Tensor, temperature: torch.Tensor) -> torch.Tensor:
    r"""ExpConcrete log-density (Maddison et al. 2017, eq. 26 in log space).

    :math:`\log p(y) = \log (K-1)! + (K-1)\log\tau + \sum_k (\ell_k - \tau y_k) - K \,\mathrm{logsumexp}_k(\ell_k - \tau y_k)`.
    ``value`` and ``logits`` (..., K) -> (...).
    """
    K = logits.shape[-1]
    score = logits - temperature * value
    log_scale = math.lgamma(K) + (K - 1) * temperature.log()
    return score.sum(-1) - K * score.logsumexp(-1) + log_scale


def gumbel_noise(shape: torch.Size, like: torch.Tensor) -> torch.Tensor:
    r"""Standard Gumbel noise :math:`g = -\log(-\log u)`, u ~ U(0, 1) clamped to [eps, 1 - eps].

    Drawn for every step of a chain at once (one ``torch.rand`` call), so the
    sampling loop only adds it.
    """
    eps = torch.finfo(like.dtype).eps
    uniforms = torch.rand(shape, dtype=like.dtype, device=like.device).clamp(eps, 1 - eps)
    return -(-uniforms.log()).log()


def _expand_to_itself(self, batch_shape, _instance=None):
    """``expand`` of the distributions here: one value per batch element, so only to their own batch shape."""
    if torch.Size(batch_shape) != self.batch_shape:
        raise NotImplementedError(f"{type(self).__name__} cannot be expanded to {tuple(batch_shape)}")
    return self


class RelaxedMarkovChain(TorchDistribution):
    """Base class: a chain of ExpConcrete steps, batch_shape (B,), event_shape (T, K).

    Subclasses say how step logits arise: :meth:`chain_logits` (all steps,
    given a whole chain) and :meth:`_sample_logits` (the recursion used to sample).
    ``mask`` (B, T) bool excludes padded steps from :meth:`log_prob`.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)
    has_rsample = True

    def __init__(self, temperature, mask: torch.Tensor, n_states: int, validate_args=None):
        self.temperature = torch.as_tensor(temperature, dtype=torch.get_default_dtype(), device=mask.device)
        self.mask = mask
        B, T = mask.shape
        super().__init__(torch.Size([B]), torch.Size([T, n_states]), validate_args=validate_args)

    def chain_logits(self, value: torch.Tensor) -> torch.Tensor:
        """(B, T, K) step logits given a whole chain ``value`` (B, T, K)."""
        raise NotImplementedError

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """(B,) sum over valid steps of the ExpConcrete log-densities."""
        if self._validate_args:
            self._validate_sample(value)
        step = exp_relaxed_log_prob(value, self.chain_logits(value), self.temperature)
        return step.masked_fill(~self.mask, 0.0).sum(-1)

    def discrete_log_prob(self, value: torch.Tensor) -> torch.Tensor:
        r"""(B,) log-probability of the *discrete* chain that ``value`` (B, T, K) stands for, straight-through.

        The state of step t is :math:`c_t = \arg\max_k y_{tk}`; for a sample of this chain
        (:meth:`rsample`) that is an exact draw from the step's categorical (Gumbel-max:
        :math:`\arg\max_k (\ell_{tk} + g_{tk})`). The value is
        :math:`\sum_t \log \mathrm{softmax}(\ell_t)_{c_t}` over the valid steps with
        :math:`\ell_t` = :meth:`chain_logits` (value), the density of the HMM's own discrete chain.
        The gradient flows through the logits and, straight-through, through the relaxed state
        (forward the one-hot :math:`c_t`, backward :math:`\exp y_t`), so the temperature shapes
        the gradient only, never the value.
        """
        soft = value.exp()
        hard = torch.nn.functional.one_hot(soft.argmax(-1), soft.shape[-1]).to(soft.dtype)
        states = hard + (soft - soft.detach())  # straight-through: one-hot value, relaxed gradient
        step = (states * self.chain_logits(value).log_softmax(-1)).sum(-1)
        return step.masked_fill(~self.mask, 0.0).sum(-1)

    expand = _expand_to_itself


class RelaxedChainPrior(RelaxedMarkovChain):
    r"""p(c_{1:T}) = p(c_1) prod_t p(c_t | c_{t-1}): uniform start, transition MLP fed the previous relaxed state."""

    def __init__(self, transition: Transition, temperature, mask: torch.Tensor, n_states: int,
                 context: torch.Tensor | None = None, validate_args=None):
        self.transition = transition
        self.context = context  # (B, T, C) what the transition into step t reads (Transition.context), or None
        super().__init__(temperature, mask, n_states, validate_args)

    def _step_context(self, t: slice | int):
        return None if self.context is None else self.context[:, t]

    def chain_logits(self, value):
        B, T, K = value.shape
        first = value.new_zeros(B, 1, K)  # uniform p(c_1)
        return torch.cat([first, self.transition(value[:, :-1].exp(), self._step_context(slice(1, None)))], dim=1)

    def rsample(self, sample_shape=torch.Size()):
        if sample_shape:
            raise NotImplementedError("RelaxedChainPrior draws one chain per batch element")
        B, T, K = self.mask.shape + self.event_shape[-1:]
        gumbels = gumbel_noise(torch.Size([B, T, K]), self.temperature).unbind(1)
        logits = self.temperature.new_zeros(B, K)
        steps = []
        for t in range(T):
            y = exp_relaxed_rsample(logits, self.temperature, gumbels[t])
            steps.append(y)
            if t + 1 < T:
                logits = self.transition(y.exp(), self._step_context(t + 1))
        return torch.stack(steps, 1)


class RelaxedChainPosterior(RelaxedMarkovChain):
    r"""q(c_{1:T} | X) = q(c_1 | X) prod_t q(c_t | c_{t-1}, X), from :class:`PosteriorNet`.

    ``features`` (B, T, 2H) are the BiGRU outputs h_t; ``evidence`` the model's own
    terms added to the logits (:class:`~pyro_dssm.model.networks.Evidence`), or None;
    ``emission_table`` the detached (B, T, K) emission table the guide read (or None), which the
    objectives reuse for the expected reconstruction instead of computing it again.
    The step logits depend on the whole past through the GRU cell, so
    :meth:`chain_logits` runs the recursion teacher-forced by the value. One memo: the logits
    computed while drawing a sample are kept with it, and :meth:`chain_logits` of that very
    tensor (the key: the sample object this distribution returned, which Pyro hands back
    unchanged as the site's value) returns them without a second recursion; any other tensor,
    a copy of the sample included, is computed afresh (same numbers, twice the cost).
    """

    def __init__(self, net: PosteriorNet, features: torch.Tensor, temperature, mask: torch.Tensor,
                 evidence: Evidence | None = None, emission_table: torch.Tensor | None = None, validate_args=None):
        self.net = net
        self.features = features
        self.evidence = evidence
        self.emission_table = emission_table
        self._drawn = None  # (sample, its logits): the memo of chain_logits, keyed by the sample object
        super().__init__(temperature, mask, net.n_states, validate_args)

    def _run(self, value: torch.Tensor | None):
        """Run the recursion; teacher-forced by ``value`` if given, else sampling. Returns (sample, logits)."""
        if value is None:
            B, T, _ = self.features.shape
            gumbels = gumbel_noise(torch.Size([B, T, self.net.n_states]), self.features).unbind(1)

            def feed(t, logits):
                return exp_relaxed_rsample(logits, self.temperature, gumbels[t])
        else:
            given = value.unbind(1)

            def feed(t, logits):
                return given[t]
        logits, sample = self.net.unroll(self.features, feed, log_space=True, evidence=self.evidence)
        return sample, logits

    def rsample(self, sample_shape=torch.Size()):
        if sample_shape:
            raise NotImplementedError("RelaxedChainPosterior draws one chain per batch element")
        self._drawn = self._run(None)
        return self._drawn[0]

    def chain_logits(self, value):
        if self._drawn is not None and value is self._drawn[0]:
            return self._drawn[1]
        return self._run(value)[1]


def categorical_kl(q_logits: torch.Tensor, p_logits: torch.Tensor) -> torch.Tensor:
    r""":math:`\mathrm{KL}(q\|p) = \sum_k q_k (\log q_k - \log p_k)` over the last dim."""
    log_q = q_logits.log_softmax(-1)
    return (log_q.exp() * (log_q - p_logits.log_softmax(-1))).sum(-1)


def chain_kl(q: RelaxedMarkovChain, p: RelaxedMarkovChain, value: torch.Tensor) -> torch.Tensor:
    r"""Per-step exact categorical KL along the relaxed chain ``value`` (B, T, K), summed over valid steps: (B,).

    :math:`\sum_t \mathrm{KL}(q(c_t \mid \tilde c_{<t}, X) \,\|\, p(c_t \mid \tilde c_{t-1}))` with both
    conditionals evaluated at ``value`` (against the uniform p(c_1) at t = 1): the "analytic"
    objective's latent term, a function of the sample it is given, so gradients flow through it.
    """
    kl = categorical_kl(q.chain_logits(value), p.chain_logits(value))
    return kl.masked_fill(~q.mask, 0.0).sum(-1)


class ChainLikelihood(TorchDistribution):
    r""":math:`p(X \mid \tilde c_{1:T})`, the model's observed site, batch_shape (B,), event_shape (T, D).

    :meth:`log_prob` is :math:`\sum_t \log p(x_t \mid \tilde c_t, x_{<t})` over the valid steps
    (``mask`` (B, T)), the emission network fed the relaxed states ``states`` (B, T, K).
    :meth:`expected_log_prob` is the same term averaged exactly over :math:`c_t` instead,
    :math:`\sum_t \sum_k \pi_{tk} \log p(x_t \mid c_t = k, x_{<t})` (the emission's table),
    which the analytic objective uses with :math:`\pi_t = q(c_t \mid \tilde c_{<t}, X)`:
    Rao-Blackwellised over the current step, so only the earlier steps stay relaxed.
    ``chain`` is the prior of the latent chain whose states these are (the distribution of the
    model's latent site): the objectives average over the guide of that site.
    """

    arg_constraints = {}
    support = constraints.independent(constraints.real, 2)

    def __init__(self, emitter, states: torch.Tensor, mask: torch.Tensor, chain: RelaxedChainPrior,
                 clamp: torch.Tensor | None = None, inputs: torch.Tensor | None = None, validate_args=None):
        self.emitter = emitter
        self.inputs = inputs if emitter.input_dim else None  # (B, T, U) for an emission that reads them
        self.states = states
        self.mask = mask
        self.chain = chain
        self.clamp = clamp  # (B, T, K) log-indicator of known states (pyro_dssm.model.known), or None
        B, T = mask.shape
        super().__init__(torch.Size([B]), torch.Size([T, emitter.obs_dim]), validate_args=validate_args)

    def _sum(self, steps: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
        if self.clamp is not None:  # the known states' emission, linear in the (relaxed) states
            steps = steps + (states * self.clamp).sum(-1)
        return steps.masked_fill(~self.mask, 0.0).sum(-1)  # padding contributes nothing

    def log_prob(self, value: torch.Tensor) -> torch.Tensor:
        """(B,) from x (B, T, D); every step in one call of the emission."""
        return self._sum(self.emitter.log_prob(value, self.states, self.inputs), self.states)

    def expected_log_prob(self, value: torch.Tensor, probs: torch.Tensor, states: torch.Tensor,
                          table: torch.Tensor | None = None) -> torch.Tensor:
        r"""(B,) from x (B, T, D), per-step state probabilities ``probs`` (B, T, K), one-hot
        ``states`` (B, T, K) drawn from them and, if known, the detached emission table of x (B, T, K).

        The value is exact, :math:`\sum_k \pi_{tk} \log p(x_t \mid k, x_{<t})`, and so is its
        gradient through ``probs``. The emission's weights get the gradient of
        :math:`\log p(x_t \mid c_t, x_{<t})` at the drawn state, an unbiased estimate of
        :math:`\sum_k \pi_{tk} \nabla \log p(x_t \mid k, x_{<t})` that costs one state per step
        instead of K (the table's backward through an emission network is K times its forward).
        """
        if table is None:
            with torch.no_grad():
                table = self.emitter.table(value, self.inputs)  # (B, T, K)
        drawn = self.emitter.hard_log_prob(value, states, **self.emitter.input_keywords(self.inputs))  # (B, T)
        return self._sum((probs * table).sum(-1) + (drawn - drawn.detach()), probs)

    expand = _expand_to_itself
