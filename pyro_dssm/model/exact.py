r"""Exact baseline: the same generative networks with the states summed out exactly.

Maximum likelihood of the transition and emission weights,

    log p(X) = log sum_{c_{1:T}} p(c_1) prod_t p(c_t | c_{t-1}) prod_t p(x_t | c_t, x_{t-p:t-1}),

with an empty guide (no latent site is left for a guide). Two equivalent Pyro
models:

* :meth:`ExactBaseline.enum_model`: one ``Categorical`` site per step under
  ``pyro.markov``, enumerated in parallel by ``TraceEnum_ELBO``; the textbook
  form, used by tests and by ``infer_discrete`` decoding (about 0.35 s/step at
  B=64, T=100, K=5).
* :meth:`ExactBaseline.model`: the same sum computed by
  :func:`pyro_dssm.model.hmm.log_likelihood` (the scaled forward algorithm) and
  added with ``pyro.factor`` (loss by ``Trace_ELBO``, as no latent site is
  left); about ten times faster, used for training. A test shows both losses
  are equal.
"""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro.ops.indexing import Vindex
from pyro.infer import Trace_ELBO, TraceEnum_ELBO, config_enumerate, infer_discrete

from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import NeuralHMM, check_batch


class ExactBaseline(NeuralHMM):
    """Transition + emission networks (as in :class:`~pyro_dssm.model.dssm.DSSM`), no guide network."""

    # p(x_{1:T}) = sum_{c_{1:T}} p(x_{1:T}, c_{1:T})
    def model(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """x (B, T, D), mask (B, T): log p(X) of each sequence as a factor."""
        mask = check_batch(x, mask, self.data_dim)
        log_init, log_trans, ll = self.exact_hmm(x)
        with pyro.plate("sequences", x.shape[0]):
            pyro.factor("log_px", hmm.log_likelihood(log_init, log_trans, ll, mask))

    @config_enumerate
    def enum_model(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The same model with explicit discrete sites ``c_t``, summed out by enumeration."""
        mask = check_batch(x, mask, self.data_dim)
        log_init, log_trans, log_lik = self.exact_hmm(x)  # log_lik (B, T, K): the family's table
        states = []
        c = None
        with pyro.plate("sequences", x.shape[0], dim=-1):
            for t in pyro.markov(range(x.shape[1])):
                if c is None:
                    logits = log_init
                elif log_trans.dim() == 2:
                    logits = log_trans[c]
                else:  # a table per step (B, T, K, K): sequence b's row c at step t
                    logits = Vindex(log_trans[:, t])[torch.arange(x.shape[0], device=x.device), c]
                # Not masked: a padded step's transition still sums to one over c_t.
                c = pyro.sample(f"c_{t}", dist.Categorical(logits=logits))
                # log p(x_t | c_t, x_{<t}) at the (enumerated) state: the table read at c, (..., B)
                pyro.factor(f"x_{t}", Vindex(log_lik[:, t])[..., c].masked_fill(~mask[:, t], 0.0))
                states.append(c)
        return states

    def guide(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> None:
        """Empty: every latent variable is summed out."""

    @staticmethod
    def enum_elbo() -> TraceEnum_ELBO:
        """The ELBO for :meth:`enum_model` (exact: equals -log p(X) with the empty guide)."""
        return TraceEnum_ELBO(max_plate_nesting=1)

    @staticmethod
    def elbo() -> Trace_ELBO:
        """The ELBO for :meth:`model`, which has no latent site left: exactly -log p(X)."""
        return Trace_ELBO()

    @torch.no_grad()
    def viterbi(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) most probable states (:func:`pyro_dssm.model.hmm.viterbi`)."""
        mask = check_batch(x, mask, self.data_dim)
        return hmm.viterbi(*self.exact_hmm(x), mask)[0]

    @torch.no_grad()
    def viterbi_infer_discrete(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) MAP states by Pyro's ``infer_discrete(temperature=0)`` on :meth:`enum_model` (slow; a cross-check)."""
        decoder = infer_discrete(self.enum_model, first_available_dim=-2, temperature=0)
        return torch.stack(decoder(x, mask), dim=-1)

    @torch.no_grad()
    def marginals(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T, K) exact posterior marginals p(c_t | X)."""
        mask = check_batch(x, mask, self.data_dim)
        return hmm.posterior_marginals(*self.exact_hmm(x), mask)
