"""The deep state-space model: Pyro model p(X, C) and guide q(C | X) in one module."""

from __future__ import annotations

from typing import NamedTuple

import pyro
import torch
from torch import nn

from pyro_dssm.model import hmm
from pyro_dssm.config import ModelConfig  # noqa: F401 (re-exported: the model's settings)
from pyro_dssm.model.emissions.base import split_missing
from pyro_dssm.model.families import make_emission, make_transition
from pyro_dssm.model.inputs import split_inputs
from pyro_dssm.model.known import clamp_table, clamped, split_known
from pyro_dssm.model.networks import Evidence, PosteriorNet
from pyro_dssm.model.relaxed import ChainLikelihood, RelaxedChainPosterior, RelaxedChainPrior


TABLE_FLOOR = 10.0  # the guide reads normalised per-state log-likelihoods floored at -10 (DSSM.guide_features)


def check_batch(x: torch.Tensor, mask: torch.Tensor | None, obs_dim: int) -> torch.Tensor:
    """Validate a batch for the models of this package and return its (B, T) bool mask.

    Args:
        x: (B, T, D) observations, D = ``obs_dim`` (the features, + U inputs, + 1 with ``model.known_states``).
        mask: (B, T) valid steps (any dtype, read as bool), or None for all valid.
    Raises:
        ValueError: naming the shape of ``x`` or ``mask`` if it is not the expected one.
    """
    if x.dim() != 3 or x.shape[-1] != obs_dim:
        raise ValueError(f"expected x of shape (B, T, {obs_dim}), got {tuple(x.shape)}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.shape != x.shape[:2]:
        raise ValueError(f"expected mask of shape {tuple(x.shape[:2])}, got {tuple(mask.shape)}")
    return mask.bool()


class Observed(NamedTuple):
    """The columns of an observation tensor (B, T, D + U [+ 1]), split (:meth:`NeuralHMM.observations`)."""

    features: torch.Tensor  # (B, T, D), NaN = missing
    inputs: torch.Tensor | None  # (B, T, U) exogenous inputs (:mod:`pyro_dssm.model.inputs`), None for U = 0
    clamp: torch.Tensor | None  # (B, T, K) log-indicator of the known states (:mod:`pyro_dssm.model.known`), or None


class NeuralHMM(nn.Module):
    """The generative half shared by the DSSM and the exact baseline: transition and emission families.

    ``transition`` holds the family of ``config.transition`` (:mod:`pyro_dssm.model.transitions`),
    ``emitter`` that of ``config.emission`` (:mod:`pyro_dssm.model.emissions`). With hard one-hot
    states they define an exact HMM (:meth:`exact_hmm`).
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.transition = make_transition(config)
        self.emitter = make_emission(config)

    @property
    def n_states(self) -> int:
        return self.config.n_states

    def transition_parameters(self, x: torch.Tensor | None = None,
                              inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """log_init (K,): uniform log p(c_1); log_trans ``[..., i, j] = log p(c_t = j | c_{t-1} = i)``: (K, K), or
        (B, T, K, K) for a transition that reads the observed past (``recurrent``) or the inputs (``inputs``) given
        the features x (B, T, D) and inputs (B, T, U) (without x: its table at x_{t-1} = 0, u_t = 0)."""
        context = None if x is None else self.transition.context(x, inputs)
        log_trans = self.transition.log_matrix(context)
        return hmm.uniform_log_init(self.n_states, log_trans), log_trans

    @property
    def data_dim(self) -> int:
        """Columns of the observation tensor: the D features, the U inputs and the known states' with
        ``model.known_states`` (:mod:`pyro_dssm.model.inputs`)."""
        return self.config.obs_dim + self.config.input_dim + int(bool(self.config.known_states))

    def observations(self, x: torch.Tensor) -> Observed:
        """Observations (B, T, :attr:`data_dim`) -> :class:`Observed`: the features (B, T, D), the inputs (B, T, U)
        (None for U = 0) and, with ``model.known_states``, the (B, T, K) log-indicator of the known states
        (:mod:`pyro_dssm.model.known`), else None."""
        columns, codes = split_known(x, bool(self.config.known_states))
        features, inputs = split_inputs(columns, self.config.obs_dim, self.config.input_dim)
        return Observed(features, inputs, None if codes is None else clamp_table(codes, self.n_states, features))

    def exact_hmm(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The exact HMM of the generative model with hard one-hot states, on x (B, T, :attr:`data_dim`).

        Returns:
            log_init (K,), log_trans (K, K) (:meth:`transition_parameters`) and
            log_lik (B, T, K): ``log p(x_t | c_t = k, x_{<t})`` (the family's ``table``; clamped at known states).
        """
        features, inputs, clamp = self.observations(x)
        return (*self.transition_parameters(features, inputs), clamped(self.emitter.table(features, inputs), clamp))

    def hmm_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """A family with fixed per-state means only (``gaussian``): log_init (K,), log_trans (K, K) and the (K, D) means."""
        means = getattr(self.emitter, "means", None)
        if means is None:
            raise ValueError(f"hmm_parameters() gives the means of a family with one mean per state, this model has "
                             f"emission={self.config.emission!r}; use exact_hmm(x)")
        return (*self.transition_parameters(), means())


class DSSM(NeuralHMM):
    """HMM with neural transition and emission, and a structured amortised posterior.

    Generative model (:meth:`model`)::

        p(X, C) = p(c_1) prod_{t>1} p(c_t | c_{t-1}) prod_t p(x_t | c_t, x_{t-p:t-1})

    with p(c_1) uniform and p(c_t | c_{t-1}) = Cat(softmax(transition(c_{t-1}))).
    Guide (:meth:`guide`)::

        q(C | X) = q(c_1 | X) prod_{t>1} q(c_t | c_{t-1}, X)

    whose logits add the model's own evidence (emission table, transition matrix) to
    the networks' output (:class:`~pyro_dssm.model.networks.Evidence`; ``config.guide_evidence``,
    by default for families without memory).
    States are relaxed (Gumbel-Softmax at temperature tau) during training;
    with hard one-hot states the same networks define an exact HMM
    (:meth:`exact_hmm`). The emission family is ``config.emission``.
    """

    def __init__(self, config: ModelConfig):
        super().__init__(config)
        # an emission with memory (order > 0) also feeds the guide its per-state log-likelihoods
        extra = config.n_states if self.emitter.order > 0 else 0
        # with missing_input the BiGRU reads [x with missing cells as 0, which cells are observed], then the inputs
        inputs = config.obs_dim * (2 if config.missing_input else 1) + config.input_dim
        self.posterior = PosteriorNet(config.n_states, inputs, config.rnn_hidden, extra_dim=extra)
        # measured (benchmarks/RESULTS.md): the evidence helps memoryless families from any start; with
        # memory (the BiGRU already reads the table) it lowered the guide on data=switching_ar
        self.uses_evidence = config.guide_evidence if config.guide_evidence is not None else self.emitter.order == 0
        self.uses_messages = self.uses_evidence and config.guide_messages
        if self.uses_messages:
            # the evidence is the model's exact conditional: the residual starts at zero, so the guide
            # starts at the posterior of the initial model
            nn.init.zeros_(self.posterior.readout.weight)
            nn.init.zeros_(self.posterior.readout.bias)

    def guide_features(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        r"""(B, T, D) -> (B, T, 2H): the guide's BiGRU features h_t of x (padding skipped given ``lengths``).

        For emissions with memory (``order`` > 0, e.g. ``autoregressive``) the
        evidence for c_t lies in how x_t relates to its past, which a GRU over
        x alone must learn to compute. The exact conditional is
        :math:`p(c_t \mid c_{t-1}, X) \propto A_{c_{t-1} c_t}\, p(x_t \mid c_t, x_{<t})\, \beta_t(c_t)`,
        so the BiGRU also reads the emission's table
        :math:`\log p(x_t \mid c_t = k, x_{<t})` of every step, normalised over k
        (``log_softmax``, floored at ``-TABLE_FLOOR``) and detached: an input, as
        x is, not a path for the emission's gradients. Memoryless families read x only.
        """
        return self.guide_inputs(x, lengths)[0]

    def guide_inputs(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, Evidence | None]:
        """(B, T, D) -> the BiGRU features (B, T, 2H) (:meth:`guide_features`) and the model's
        :class:`~pyro_dssm.model.networks.Evidence` for the guide's logits (None with
        ``model.guide_evidence`` off)."""
        return self.guide_reading(x, lengths)[:2]

    def guide_reading(self, x: torch.Tensor, lengths: torch.Tensor | None = None):
        """:meth:`guide_inputs` and the detached emission table (B, T, K) they were computed from (None when
        the guide reads no table): computed once for both, and handed on to the objectives with the guide's chain."""
        features, inputs, clamp = self.observations(x)
        use_table = self.posterior.extra_dim or self.uses_evidence
        with torch.no_grad():
            table = self.emitter.table(features, inputs) if use_table else None
            local = clamped(table, clamp).log_softmax(-1) if use_table else None
            if self.uses_evidence:
                evidence = self._evidence(local, lengths, features, inputs)
            elif clamp is not None:  # the known states alone: the guide's draws stay on them
                evidence = Evidence(clamp, clamp.new_zeros(self.n_states, self.n_states))
            else:
                evidence = None
        extra = local.clamp_min(-TABLE_FLOOR) if self.posterior.extra_dim else None
        return self.posterior.encode(self.guide_observations(features, inputs), lengths, extra), evidence, table

    def guide_observations(self, x: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, D), NaN = missing, inputs (B, T, U) or None -> the BiGRU's input: x with missing cells as 0, with
        ``model.missing_input`` (B, T, 2D) [that, 1 where a cell is observed], then the inputs."""
        filled, observed = split_missing(x)
        columns = [filled]
        if self.config.missing_input:
            columns.append(torch.ones_like(x) if observed is None else observed.to(x.dtype))
        if inputs is not None:
            columns.append(inputs)
        return columns[0] if len(columns) == 1 else torch.cat(columns, -1)

    def _evidence(self, local: torch.Tensor, lengths: torch.Tensor | None, features: torch.Tensor,
                  inputs: torch.Tensor | None = None) -> Evidence:
        """The guide's :class:`~pyro_dssm.model.networks.Evidence` from the normalised table ``local`` (B, T, K) of the
        features (B, T, D) and inputs (B, T, U); with ``model.guide_messages`` the backward messages too
        (:func:`pyro_dssm.model.hmm.normalised_backward`)."""
        log_trans = self.transition_parameters(features, inputs)[1]
        if not self.uses_messages:
            return Evidence(local, log_trans)
        mask = None if lengths is None else torch.arange(local.shape[1], device=local.device) < lengths[:, None]
        return Evidence(local, log_trans, hmm.normalised_backward(log_trans, local, mask))

    # p(x_{1:T} | c_{1:T}) p(c_{1:T})
    def model(self, x: torch.Tensor, mask: torch.Tensor | None = None, tau: float = 1.0) -> None:
        """x (B, T, D); mask (B, T) bool of valid steps; tau the relaxation temperature."""
        mask = check_batch(x, mask, self.data_dim)
        features, inputs, clamp = self.observations(x)
        with pyro.plate("sequences", x.shape[0]):
            prior = RelaxedChainPrior(self.transition, tau, mask, self.n_states,
                                      self.transition.context(features, inputs))
            y = pyro.sample("c", prior)
            pyro.sample("x", ChainLikelihood(self.emitter, y.exp(), mask, chain=prior, clamp=clamp, inputs=inputs),
                        obs=features)

    # q(c_{1:T} | x_{1:T})
    def guide(self, x: torch.Tensor, mask: torch.Tensor | None = None, tau: float = 1.0) -> None:
        """Same arguments as :meth:`model`; samples the site ``c`` (B, T, K) in log space."""
        lengths = None if mask is None else mask.sum(-1)
        mask = check_batch(x, mask, self.data_dim)
        features, evidence, table = self.guide_reading(x, lengths)
        with pyro.plate("sequences", x.shape[0]):
            pyro.sample("c", RelaxedChainPosterior(self.posterior, features, tau, mask, evidence, table))

    def guide_logits(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Greedy, noise-free decoding of the guide: (B, T, K) logits of q(c_t | c_{t-1}, X).

        The GRU cell is fed the one-hot argmax of the previous step (the
        zero-temperature limit of the relaxed sample).
        """
        mask = check_batch(x, mask, self.data_dim)
        features, evidence = self.guide_inputs(x, mask.sum(-1))

        def argmax_one_hot(t, logits):
            return nn.functional.one_hot(logits.argmax(-1), self.n_states).to(logits.dtype)
        return self.posterior.unroll(features, argmax_one_hot, evidence=evidence)[0]
