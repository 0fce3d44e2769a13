r"""A trained model as a Python object: exact HMM inference on new sequences in the user's units.

With hard one-hot states the networks of a trained DSSM define exactly a
K-state HMM (:meth:`~pyro_dssm.model.dssm.NeuralHMM.exact_hmm`): uniform
:math:`p(c_1)`, :math:`A_{ij} = p(c_t = j \mid c_{t-1} = i)` and the emission
family's table :math:`\log p(x_t \mid c_t = k, x_{<t})` (means with a fixed
:math:`\sigma` for ``gaussian``). :class:`FittedDSSM` answers the
usual questions with the exact algorithms of :mod:`pyro_dssm.model.hmm`
(Viterbi, forward-backward, the forward log-likelihood) after the feature
transform stored in the checkpoint (:class:`~pyro_dssm.data.features.Preprocessing`).

The checkpoint helpers (:func:`find_checkpoint`, :func:`load_model`,
:func:`preprocessing_of`, :func:`decode`) are shared with
``python -m pyro_dssm.decode``, so the Python API and the CLI decode alike.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from pyro_dssm import online
from pyro_dssm.data.arrays import check_sequences, input_arrays
from pyro_dssm.data.chain import sample_states
from pyro_dssm.data.features import Preprocessing
from pyro_dssm.data.files import append_inputs, append_known, pad_sequences
from pyro_dssm.data.sequences import SequenceData
from pyro_dssm.io.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import DSSM, ModelConfig
from pyro_dssm.model.emissions.base import draw
from pyro_dssm.model.known import none_known


@dataclasses.dataclass
class Decoded:
    """States of one sequence of length T: ``guide`` (T,) and ``viterbi`` (T,) int64, ``probs`` (T, K)."""

    guide: np.ndarray
    viterbi: np.ndarray
    probs: np.ndarray


def find_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run directory -> ``checkpoints/best.pt`` (else ``last.pt``): the kept model,
    where ``trainer.resume`` takes ``last.pt`` (:func:`~pyro_dssm.io.checkpoint.resolve_checkpoint`)."""
    return resolve_checkpoint(path, prefer="best", key="checkpoint")


def load_model(path: str | Path) -> tuple[DSSM, dict]:
    """The trained DSSM (on CPU, eval mode) and the checkpoint's payload (loaded ``weights_only``)."""
    path = find_checkpoint(path)
    payload = load_checkpoint(path)
    try:
        model = DSSM(ModelConfig(**payload["model_config"]))
        model.load_state_dict(payload["model"])
    except (TypeError, RuntimeError, ValueError) as exc:  # another version's config, or weights of another shape
        lines = [line.strip() for line in str(exc).strip().splitlines()]
        detail = next((line for line in lines[1:] if line), lines[0])[:300]  # torch's first line is a title
        raise ValueError(f"checkpoint {str(path)!r}: its weights do not fit its model_config "
                         f"{payload['model_config']} ({detail})") from None
    return model.eval(), payload


def preprocessing_of(payload: dict, n_columns: int) -> Preprocessing:
    """The stored feature transform; identity for a model trained on synthetic data."""
    if "preprocessing" in payload:
        return Preprocessing.from_state_dict(payload["preprocessing"])
    return Preprocessing(["raw"], np.zeros(n_columns), np.ones(n_columns), [f"x{j}" for j in range(n_columns)])


def input_preprocessing_of(payload: dict) -> Preprocessing | None:
    """The stored standardisation of the exogenous inputs (``data.input_columns``), None for a model without."""
    state = payload.get("input_preprocessing")
    return None if state is None else Preprocessing.from_state_dict(state)


def exact_batches(model: DSSM, xs: list[np.ndarray], batch_size: int = 64) -> Iterator[tuple]:
    """The exact HMM of ``model`` and the log-likelihoods of ``xs`` (model inputs, (T_i, D [+ U]), or (T_i, D [+ U] +
    1) with known states as the last column: :func:`pyro_dssm.data.files.append_known`), batch by batch.

    Yields ``(batch, log_init (K,), log_trans (K, K), log_lik (B, T, K))`` with ``batch`` the padded
    :class:`~pyro_dssm.data.sequences.SequenceData` (``x`` (B, T, D), ``mask`` (B, T), ``lengths`` (B,)).
    """
    for start in range(0, len(xs), batch_size):
        batch = pad_sequences(xs[start: start + batch_size])
        if model.config.known_states and batch.x.shape[-1] == model.data_dim - 1:  # no state known
            batch = SequenceData(none_known(batch.x, model.config.known_states), batch.lengths, batch.states)
        model.emitter.check_data(model.observations(batch.x)[0], batch.mask)
        yield batch, *model.exact_hmm(batch.x)


@torch.no_grad()
def decode(model: DSSM, xs: list[np.ndarray], batch_size: int = 64) -> list[Decoded]:
    """Guide states, Viterbi path and exact posterior marginals of each (T_i, D) sequence (model inputs)."""
    out = []
    for batch, log_init, log_trans, ll in exact_batches(model, xs, batch_size):
        guide = model.guide_logits(batch.x, batch.mask).argmax(-1)
        path, _ = hmm.viterbi(log_init, log_trans, ll, batch.mask)
        probs = hmm.posterior_marginals(log_init, log_trans, ll, batch.mask)
        for i, n in enumerate(batch.lengths.tolist()):
            out.append(Decoded(guide[i, :n].numpy(), path[i, :n].numpy(), probs[i, :n].double().numpy()))
    return out


@torch.no_grad()
def exact_log_px(model: DSSM, xs: list[np.ndarray]) -> tuple[float, int]:
    r"""Exact :math:`\sum_i \log p(X_i)` of model inputs ``xs`` ((T_i, D) arrays; forward algorithm,
    :func:`pyro_dssm.model.hmm.log_likelihood`) and their total number of time steps."""
    total = 0.0
    for batch, log_init, log_trans, ll in exact_batches(model, xs):
        total += float(hmm.log_likelihood(log_init, log_trans, ll, batch.mask).double().sum())
    return total, sum(len(s) for s in xs)


def log_jacobian_per_step(prep: Preprocessing) -> float | None:
    r"""The standardisation's :math:`\log |\det \partial z_t / \partial x_t| = -\sum_j \log \mathrm{std}_j` per
    time step, when the feature transform is the per-step affine bijection :math:`z_t = (x_t - \mathrm{mean}) /
    \mathrm{std}` (``features=[raw]``, ``smooth=1``); None otherwise.

    By the change of variables :math:`\log p(x_{1:T}) = \log p(z_{1:T}) - T \sum_j \log \mathrm{std}_j`. Other
    transforms (``diff``, ``absdiff``, ``window_*``, a moving average) are not a bijection of x (they drop the
    first step, or mix steps and repeat columns), so no density of x follows from one of z.
    """
    if list(prep.features) != ["raw"] or prep.smooth != 1:
        return None
    return -float(np.log(prep.std).sum())


def log_jacobian(prep: Preprocessing, xs: list[np.ndarray]) -> float | None:
    """The standardisation's log-Jacobian over the observed cells of ``xs`` (model inputs (T_i, D), NaN =
    missing): :func:`log_jacobian_per_step` cell by cell, as only observed cells have a density; None where
    the features allow none."""
    if log_jacobian_per_step(prep) is None:
        return None
    observed = sum((~np.isnan(x)).sum(0) for x in xs)  # (D,) observed cells per column
    return -float((observed * np.log(prep.std)).sum())


def n_parameters(model: DSSM) -> int:
    """The free parameters of the HMM ``model``'s networks define: its transition family's count plus its
    emission family's (:meth:`FittedDSSM.n_parameters` says why these and not the weight count)."""
    return model.transition.n_parameters() + model.emitter.n_parameters()


@torch.no_grad()
def sample_with_past(model: DSSM, n: int, T: int, generator: torch.Generator,
                     inputs: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """n sequences of T steps from a model whose transition reads the observations before it (``recurrent``), drawn
    step by step: c_t from the table at x_{t-1} (and u_t: ``inputs`` (1, T, U), standardised), then x_t from the
    emission given c_t and its past. Returns states (n, T) int64 and x (n, T, D) in model units."""
    emitter, K = model.emitter, model.n_states
    eye = torch.eye(K)
    x = torch.zeros(n, T, model.config.obs_dim)
    states = torch.empty(n, T, dtype=torch.long)
    states[:, 0] = torch.multinomial(torch.full((K,), 1.0 / K), n, replacement=True, generator=generator)
    for t in range(T):
        if t > 0:  # the transition's context of step t reads row t - 1 (and u_t)
            u = None if inputs is None else inputs[:, t - 1: t + 1].expand(n, -1, -1)
            context = model.transition.context(x[:, t - 1: t + 1], u)[:, 1]
            probs = model.transition(eye[states[:, t - 1]], context).softmax(-1)
            states[:, t] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        start = max(0, t - emitter.order)  # as Emission.sample: t <= order iff the window starts at 0
        u = None if inputs is None else inputs[:, start: t + 1].expand(n, -1, -1)
        context = emitter.context_of(x[:, start: t + 1], u)[:, -1]
        x[:, t] = draw(emitter.distribution(eye[states[:, t]], context), generator)
    return states, x


class FittedDSSM:
    """A trained DSSM with its feature transform (scikit-learn style; see the module docstring).

    Inputs ``x`` are one (T, D0) array or a list of (T_i, D0) arrays in the user's units
    (the D0 columns the model was trained on); they go through the stored features and
    standardisation before inference. Likelihoods (:meth:`score`, :meth:`bic`, :meth:`aic`) are densities
    of x in the user's units when the features are the raw columns (the default), else of the (T, D)
    standardised features.
    """

    def __init__(self, model: DSSM, payload: dict, metrics: dict | None = None, run_dir: Path | None = None):
        self.model = model.eval()
        self.payload = payload
        self.preprocessing = preprocessing_of(payload, model.config.obs_dim)
        self.input_preprocessing = input_preprocessing_of(payload)
        self.metrics = dict(metrics if metrics is not None else payload.get("metrics", {}))
        self.run_dir = run_dir

    @classmethod
    def load(cls, path: str | Path) -> "FittedDSSM":
        """A run directory (its ``checkpoints/best.pt``, else ``last.pt``) or a ``.pt`` file written by the CLI
        or :meth:`save`; ``metrics`` from the checkpoint, else the run's ``metrics.json``."""
        file = find_checkpoint(path)
        model, payload = load_model(file)
        run_dir = file.parent.parent if file.parent.name == "checkpoints" else None
        metrics = payload.get("metrics")
        if metrics is None and run_dir is not None and (run_dir / "metrics.json").is_file():
            metrics = json.loads((run_dir / "metrics.json").read_text())
        return cls(model, payload, metrics, run_dir)

    @property
    def n_states(self) -> int:
        """K."""
        return self.model.n_states

    @property
    def feature_names(self) -> list[str]:
        """The D0 input columns ``x`` must have."""
        return list(self.preprocessing.feature_names)

    @property
    def input_names(self) -> list[str]:
        """The exogenous inputs ``inputs=`` must give at every step (``data.input_columns``); [] for a model without."""
        return [] if self.input_preprocessing is None else list(self.input_preprocessing.feature_names)

    def _inputs(self, x, known: list[np.ndarray] | None = None, inputs=None) -> tuple[list[np.ndarray], bool]:
        """Validated user arrays -> model inputs (T_i, D) float32, and whether one array was given; with exogenous
        ``inputs`` (one (T_i, U) array per sequence, user's units) for a model trained with them, (T_i, D + U); with
        ``known`` (T_i,) codes of known states (-1: not known) for a model trained with them, one column more."""
        seqs, single = check_sequences(x, "x", self.feature_names)
        xs = [self.preprocessing.apply(s) for s in seqs]
        if self.input_preprocessing is not None or inputs is not None:
            us = self._check_inputs(inputs, seqs)
            xs = [append_inputs(x, u, self.input_preprocessing) for x, u in zip(xs, us)]
        if known is not None and self.model.config.known_states:
            xs = [append_known(x, codes, True) for x, codes in zip(xs, known)]
        return xs, single

    def _check_inputs(self, inputs, seqs: list[np.ndarray]) -> list[np.ndarray]:
        """``inputs`` in x's form (one (T, U) array, or a list of (T_i, U)) -> (T_i, U) float64 arrays; ValueError
        naming what is wrong (given to a model without inputs, none for a model with, missing, of another length or
        width: :func:`input_arrays`)."""
        if self.input_preprocessing is None:
            raise ValueError("inputs= given, but this model was trained without exogenous inputs")
        if inputs is None:
            raise ValueError(f"this model reads the inputs {self.input_names} at every step: give inputs= (one (T, "
                             f"{len(self.input_names)}) array per sequence)")
        return input_arrays(inputs, seqs, names=self.input_names)

    @torch.no_grad()
    def predict(self, x, known: list[np.ndarray] | None = None, inputs=None):
        """Most probable state path :math:`\\arg\\max_c p(c_{1:T} \\mid x_{1:T})` (Viterbi) of each sequence.

        Returns (T,) int64 for one (T, D0) array, else a list of (T_i,) arrays. ``known``: for a model trained
        with known states, their (T_i,) codes per sequence (-1: not known), clamping the path there. ``inputs``: for
        a model trained with exogenous inputs, their (T_i, U) rows per sequence in x's form (user's units).
        """
        xs, single = self._inputs(x, known, inputs)
        out = []
        for batch, log_init, log_trans, ll in exact_batches(self.model, xs):
            path, _ = hmm.viterbi(log_init, log_trans, ll, batch.mask)
            out += [path[i, :n].numpy() for i, n in enumerate(batch.lengths.tolist())]
        return out[0] if single else out

    @torch.no_grad()
    def predict_proba(self, x, known: list[np.ndarray] | None = None, inputs=None):
        """Exact posterior marginals :math:`p(c_t = k \\mid x_{1:T})` (forward-backward).

        Returns (T, K) float64 rows summing to one, or a list of (T_i, K) arrays; ``known`` and ``inputs`` as
        :meth:`predict`.
        """
        xs, single = self._inputs(x, known, inputs)
        out = []
        for batch, log_init, log_trans, ll in exact_batches(self.model, xs):
            probs = hmm.posterior_marginals(log_init, log_trans, ll, batch.mask)
            out += [probs[i, :n].double().numpy() for i, n in enumerate(batch.lengths.tolist())]
        return out[0] if single else out

    def filter(self, x, carry: online.FilterState | None = None, lag: int = 0, inputs=None,
               known: np.ndarray | None = None) -> tuple[np.ndarray, online.FilterState]:
        """Online decoding: filtered marginals :math:`p(c_t = k \\mid x_{1:t})` of the next chunk of a live stream.

        x: one (T, D0) array, the stream's next rows in the user's units; ``carry``: what the previous call
        returned (None starts a stream). Returns probs (T, K) float64 and the new carry; chunks of any sizes
        give the numbers of one pass. With ``lag=L`` row i is :math:`p(c_{t-L} \\mid x_{1:t})` instead (NaN for
        t <= L) and :meth:`flush` gives the last L steps at the end (:func:`pyro_dssm.online.filter_chunk`).
        Needs causal features (``raw``, ``diff``, ``absdiff``); ValueError naming a bad x, carry or lag. A model
        trained with exogenous inputs takes the chunk's (T, U) ``inputs`` too; transitions that read context
        (``recurrent``, ``inputs``) filter with their per-step tables. ``known``: for a model trained with known
        states, the chunk's (T,) codes (-1: not known), clamping the filter there.
        """
        seqs, single = check_sequences(x, "x", self.feature_names)
        if not single:
            raise ValueError(f"filter takes one (T, D0) array, the next rows of one stream, got a list of {len(seqs)}")
        u = None if self.input_preprocessing is None and inputs is None else self._check_inputs(inputs, seqs)[0]
        if known is not None and len(known) != len(seqs[0]):
            raise ValueError(f"known has {len(known)} codes for a chunk of {len(seqs[0])} rows; give one per row")
        return online.filter_chunk(self.model, self.preprocessing, seqs[0], carry, lag, u, self.input_preprocessing,
                                   known)

    def flush(self, carry: online.FilterState) -> np.ndarray:
        """The end of a stream filtered with ``lag=L``: (min(n, L), K) :math:`p(c_s \\mid x_{1:n})` of its last steps
        s, the rows :meth:`filter` has not given yet (:func:`pyro_dssm.online.flush`)."""
        return online.flush(self.model, carry)

    def _log_px(self, x, inputs=None) -> tuple[float, int]:
        """:math:`\\sum_i \\log p(X_i)` in the user's units where the features allow it (:meth:`score`), and the
        number of time steps (:math:`\\log p(X \\mid U)` for a model with inputs: they have no density)."""
        xs = self._inputs(x, inputs=inputs)[0]
        total, n = exact_log_px(self.model, xs)
        jacobian = log_jacobian(self.preprocessing, [s[:, :self.model.config.obs_dim] for s in xs])
        return total + (0.0 if jacobian is None else jacobian), n

    def score(self, x, per_step: bool = False, inputs=None) -> float:
        """Exact :math:`\\sum_i \\log p(X_i)` summed over sequences (forward algorithm); ``per_step`` divides by the
        number of time steps (nats per step, comparable across sizes).

        In the user's units with the default features (``[raw]``, no smoothing): the density of x itself, the
        standardisation's log-Jacobian :math:`-T_i \\sum_j \\log \\mathrm{std}_j` included
        (:func:`log_jacobian_per_step`), so the same data in other units (x * c) score :math:`N D \\log c` less.
        With other features (``diff``, ``window_*``, ``data.smooth`` > 1), not a bijection of x: the density of
        the standardised features. ``inputs`` as :meth:`predict`.
        """
        total, n = self._log_px(x, inputs)
        return total / n if per_step else total

    def n_parameters(self) -> int:
        """Free parameters of the HMM the networks define: the transition family's plus the emission family's
        (:func:`n_parameters`), e.g. :math:`K(K-1) + KD` for ``stationary`` and ``gaussian``.

        With one-hot states the transition network is only ever evaluated at K
        inputs, giving K rows of a stochastic matrix (K - 1 free numbers each), and
        the emitter at K inputs, giving K means in D dimensions; p(c_1) is uniform
        and sigma fixed, so they add nothing. The networks' weight count (hidden
        layers, the guide's GRU) is larger, but the likelihood depends on the
        weights only through these numbers, so only they are identifiable and
        only they count in BIC / AIC. ``select_k`` counts the same way.
        """
        return n_parameters(self.model)

    def bic(self, x, inputs=None) -> float:
        """Bayesian information criterion :math:`-2 \\log p(X) + p \\log n` (lower is better).

        p = :meth:`n_parameters`, n = the number of time steps in ``x`` (as hmmlearn counts); log p(X) is
        :meth:`score`'s (in the user's units with the default features).
        """
        total, n = self._log_px(x, inputs)
        return -2.0 * total + self.n_parameters() * math.log(n)

    def aic(self, x, inputs=None) -> float:
        """Akaike information criterion :math:`-2 \\log p(X) + 2p`, p = :meth:`n_parameters` (lower is better);
        log p(X) is :meth:`score`'s."""
        total, _ = self._log_px(x, inputs)
        return -2.0 * total + 2.0 * self.n_parameters()

    @torch.no_grad()
    def sample(self, n: int, T: int, seed: int = 0, inputs=None) -> tuple[np.ndarray, np.ndarray]:
        """Draw n sequences of T steps from the learned HMM: states (:func:`pyro_dssm.data.chain.sample_states`), then
        observations from the emission family (``emitter.sample``).

        Returns states (n, T) int64 and observations (n, T, D) float64 in the user's units: the
        standardisation undone, ``x * std + mean``. With the default features (``[raw]``, no smoothing)
        these are the input columns; with ``diff`` / ``absdiff`` they are the feature columns.
        ``inputs``: for a model trained with exogenous inputs, one (T, U) array in the user's units, the inputs of
        every drawn sequence (with ``model.transition=inputs`` the states follow the per-step table
        :math:`p(c_t \\mid c_{t-1}, u_t)`). With ``recurrent`` transitions states and observations are drawn
        step by step (:func:`sample_with_past`).
        """
        for key, value in (("n", n), ("T", T)):
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{key} must be an integer >= 1, got {value!r}")
        gen = torch.Generator().manual_seed(seed)
        scaled = None
        if self.input_preprocessing is not None or inputs is not None:  # the chain follows the given inputs
            u = self._check_inputs(inputs, [np.zeros((T, 0))])[0]
            scaled = torch.as_tensor(self.input_preprocessing.apply(u))[None]  # (1, T, U)
        if self.model.transition.past_rows:  # the chain reads the observations drawn before each step
            states, x = sample_with_past(self.model, int(n), int(T), gen, scaled)
        else:
            features = None if scaled is None else torch.zeros(1, T, self.model.config.obs_dim)
            log_init, log_trans = self.model.transition_parameters(features, scaled)
            per_step = log_trans.dim() == 4  # a transition that reads the inputs: one table per step, (T, K, K)
            states = sample_states(log_init.exp(), (log_trans[0] if per_step else log_trans).exp(), int(n), int(T),
                                   gen)
            u = None if scaled is None else scaled.expand(int(n), -1, -1)
            x = self.model.emitter.sample(states, gen, u).float()  # the family's draws, step by step for AR
        return states.numpy(), x.double().numpy() * self.preprocessing.std + self.preprocessing.mean

    def save(self, path: str | Path) -> Path:
        """Write the checkpoint (the CLI's format, loadable with ``weights_only``; ``python -m pyro_dssm.decode
        checkpoint=PATH`` reads it), with :attr:`metrics`' numbers added."""
        payload = {k: v for k, v in self.payload.items() if k != "format_version"}
        payload["model"] = self.model.state_dict()
        payload["metrics"] = {k: v for k, v in self.metrics.items() if isinstance(v, (int, float))}
        return save_checkpoint(path, payload)

    def __repr__(self) -> str:
        return f"FittedDSSM(n_states={self.n_states}, features={self.feature_names})"
