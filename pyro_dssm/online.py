r"""Online decoding: filtering a live stream chunk by chunk with the exact HMM of a trained model.

**Filtering.** The normalised forward recursion (Rabiner 1989, eqs. 19-20, in log space)

.. math::

    \alpha_1(k) = p(c_1 = k \mid x_1) \propto p(c_1 = k)\, p(x_1 \mid c_1 = k), \qquad
    \alpha_t(k) = p(c_t = k \mid x_{1:t}) \propto p(x_t \mid c_t = k, x_{<t}) \sum_j \alpha_{t-1}(j)\, A_{jk}

needs of the past only :math:`\alpha_{t-1}` (K numbers) and the few earlier rows
that step t's emission and features read. A :class:`FilterState` carries exactly
these from one chunk to the next, so a stream cut into chunks of any sizes gets
the numbers of one pass over the whole stream (up to rounding). A chunk is run by
:func:`pyro_dssm.model.hmm.forward` with the prediction
:math:`p(c_t \mid x_{1:t-1}) = \sum_j \alpha_{t-1}(j) A_{jk}` as its initial distribution
(:func:`filter_log_probs`).

**Fixed-lag smoothing** (lag L >= 1). Once L later steps have arrived, the state of
step s is known better than by :math:`\alpha_s`:

.. math::

    p(c_s = k \mid x_{1:s+L}) \propto \alpha_s(k)\, \beta^{(L)}_s(k), \qquad
    \beta^{(L)}_s(k) = p(x_{s+1:s+L} \mid c_s = k, x_{\le s}),

with :math:`\beta^{(L)}_s` the backward pass of :func:`pyro_dssm.model.hmm.backward` over
the L steps after s (:func:`lagged_log_probs`). The row that arrives with step t
answers for step s = t - L, so the output runs L rows behind the input
(:func:`filter_chunk` says which row is which).

**What the carry holds of the past rows.** The emission family reads the last
``order`` = p model inputs (``autoregressive``: its history :math:`x_{t-p:t-1}`, and whether
t <= p; a memoryless family nothing); the feature transform reads r earlier rows in the
user's units (``diff`` / ``absdiff``: r = 1; ``raw``: 0; :meth:`~pyro_dssm.data.features.Preprocessing.reach`). A chunk is
prefixed with them, transformed and tabled as in one pass, and the prefix rows dropped.
Features that read *future* rows (a centred window: ``window_*`` or ``data.smooth`` wider than
2 steps) cannot be filtered exactly and are refused (:func:`causal_reach`).

**Transitions that read context** (``recurrent``: :math:`x_{t-1}`; ``inputs``: :math:`u_t`,
given with each chunk) have a table :math:`A_t` per step. The recursions above take :math:`A_t`
in place of A (the prediction into step t, each backward step into s + 1); the carry then also
holds the last model input row (for :math:`x_{t-1}`) and, with a lag, the tables of the last L
steps.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from pyro_dssm.data.features import Preprocessing
from pyro_dssm.data.files import append_inputs
from pyro_dssm.model import hmm
from pyro_dssm.model.dssm import NeuralHMM
from pyro_dssm.model.known import none_known, with_known

LAG_BLOCK = 2**20  # fixed-lag windows of at most this many (step, lag) cells at a time: bounded memory


@dataclasses.dataclass(frozen=True)
class FilterState:
    """What filtering a stream needs of its first n = ``n_steps`` steps (a value: each call returns a new one).

    Attributes:
        log_probs: (K,) float64, :math:`\\log p(c_n = k \\mid x_{1:n})`: the last filtered marginals.
        n_steps: n, the steps filtered so far.
        inputs: (min(n, p), D) float32, the last model inputs (standardised features) the emission reads,
            p = the family's ``order`` (``autoregressive``: ``model.ar_order``; 0 rows for a memoryless family).
        raw: (min(n, r), D0) float64, the last rows in the user's units the feature transform reads
            (r = 1 with ``diff`` / ``absdiff``, 0 for ``raw`` alone: :meth:`~pyro_dssm.data.features.Preprocessing.reach`).
        lag: L, the smoother's lag this stream runs with (0: filtering only).
        recent_log_probs: (min(n, L), K) float64, :math:`\\log p(c_s \\mid x_{1:s})` of the last L steps s,
            whose lagged marginals are still to come.
        recent_log_lik: (min(n, L), K) float64, their emission table rows :math:`\\log p(x_s \\mid c_s = k, x_{<s})`.
        recent_log_trans: (min(n, L), K, K) float64, their transition tables (log) for a transition that reads
            context; None for a stationary one, whose matrix is the model's.
    """

    log_probs: np.ndarray
    n_steps: int
    inputs: np.ndarray
    raw: np.ndarray
    lag: int
    recent_log_probs: np.ndarray
    recent_log_lik: np.ndarray
    recent_log_trans: np.ndarray | None = None


# --- the maths: pure functions of the HMM's parameters ----------------------------------------------------------------


def predict(log_probs: torch.Tensor, log_trans: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(c_{t+1} = k \mid x_{1:t}) = \log \sum_j \alpha_t(j) A_{jk}`.

    log_probs (K,) :math:`\log\alpha_t`, log_trans (K, K) -> (K,)."""
    return torch.logsumexp(log_probs[:, None] + log_trans, 0)


def filter_log_probs(log_prior: torch.Tensor, log_trans: torch.Tensor, log_lik: torch.Tensor) -> torch.Tensor:
    r"""Filtered :math:`\log p(c_t = k \mid x_{1:t})` of T steps, from the prior of their first step.

    Args:
        log_prior: (K,) :math:`\log p(c_{t_0} \mid x_{1:t_0-1})` of the first step t_0 (``log_init`` at the start).
        log_trans: (K, K); log_lik: (T, K) the emission table of the T steps.
    Returns:
        (T, K): :func:`pyro_dssm.model.hmm.forward`'s :math:`\log p(x_{t_0:t}, c_t \mid x_{<t_0})`, normalised over k.
    """
    log_alpha, _ = hmm.forward(log_prior, log_trans, log_lik[None])
    return log_alpha[0].log_softmax(-1)


def lagged_log_probs(log_trans: torch.Tensor, log_filtered: torch.Tensor, log_lik: torch.Tensor,
                     lag: int) -> torch.Tensor:
    r"""Fixed-lag marginals :math:`\log p(c_s = k \mid x_{1:s+L}) = \log \alpha_s(k)\beta^{(L)}_s(k)`, normalised.

    Args:
        log_trans: (K, K), or (N + L, K, K) the tables into each step (context);
        log_filtered: (N + L, K) :math:`\log\alpha_s` of N + L consecutive steps;
        log_lik: (N + L, K) their emission table; lag: L >= 1.
    Returns:
        (N, K) for the first N steps, each from the L steps after it: the backward pass of
        :func:`pyro_dssm.model.hmm.backward` over each window, all windows as one batch.
    """
    N, K = log_filtered.shape[0] - lag, log_filtered.shape[1]
    out = []
    block = max(1, LAG_BLOCK // (lag * K))
    for start in range(0, N, block):
        stop = min(start + block, N)
        # window of step s: rows s+1..s+L; backward's beta_0 = p(x_{s+1:s+L} | c_s) (its row 0 is not read)
        windows = log_lik[start + 1: stop + lag].unfold(0, lag, 1).transpose(1, 2)  # (n, L, K)
        tables = log_trans
        if log_trans.dim() == 3:  # per step: the windows' tables, (n, L + 1, K, K) (row 0 not read)
            tables = log_trans[start + 1: stop + lag].unfold(0, lag, 1).permute(0, 3, 1, 2)
            tables = torch.cat([tables[:, :1], tables], 1)
        log_beta = hmm.backward(tables, torch.cat([windows[:, :1], windows], 1))[:, 0]
        out.append((log_filtered[start:stop] + log_beta).log_softmax(-1))
    return torch.cat(out) if out else log_filtered[:0]


def smoothed_log_probs(log_trans: torch.Tensor, log_filtered: torch.Tensor, log_lik: torch.Tensor) -> torch.Tensor:
    r""":math:`\log p(c_s = k \mid x_{1:n}) = \log \alpha_s(k) \beta_s(k)`, normalised, for the last M steps s of a
    stream of n steps: log_filtered, log_lik (M, K) of those steps, log_trans (K, K) or their tables (M, K, K) ->
    (M, K)."""
    log_beta = hmm.backward(log_trans if log_trans.dim() == 2 else log_trans[None], log_lik[None])[0]
    return (log_filtered + log_beta).log_softmax(-1)


# --- the feature transform's reach ------------------------------------------------------------------------------------


def causal_reach(prep: Preprocessing) -> int:
    """The rows back ``prep`` reads (:meth:`~pyro_dssm.data.features.Preprocessing.reach`); ValueError naming the
    transforms that read ahead."""
    back, ahead = prep.reach()
    if ahead:
        future = [f"{f} (data.feature_window={prep.window})" for f in prep.features
                  if f.startswith("window_") and prep.window > 2]
        future += [f"data.smooth={prep.smooth}"] if prep.smooth > 2 else []
        raise ValueError(f"filter needs causal features (that read no later rows); {', '.join(future)} "
                         f"read{'s' if len(future) == 1 else ''} a centred window, {ahead} rows ahead; "
                         "use predict_proba on the whole sequence, or train with features raw / diff / absdiff")
    return back


# --- a chunk of a stream ----------------------------------------------------------------------------------------------


def check_lag(lag) -> int:
    """``lag`` as an int >= 0, else ValueError naming it."""
    if isinstance(lag, bool) or not isinstance(lag, (int, np.integer)) or lag < 0:
        raise ValueError(f"lag must be an integer >= 0 (steps of lookahead), got {lag!r}")
    return int(lag)


def start_state(K: int, D: int, D0: int, lag: int) -> FilterState:
    """The state of a stream before its first step (``log_probs`` is not read while n = 0)."""
    return FilterState(np.zeros(K), 0, np.zeros((0, D), np.float32), np.zeros((0, D0)), lag,
                       np.zeros((0, K)), np.zeros((0, K)))


def check_state(state, K: int, D: int, D0: int, p: int, r: int, lag: int) -> None:
    """ValueError naming what of ``state`` does not fit a model with these sizes, or the ``lag`` of this call."""
    if not isinstance(state, FilterState):
        raise ValueError(f"carry must be None (a new stream) or the FilterState a previous filter call returned, "
                         f"got {type(state).__name__}")
    got = {"K": state.log_probs.shape[-1], "D": state.inputs.shape[-1], "D0": state.raw.shape[-1]}
    for name, want in (("K", K), ("D", D), ("D0", D0)):
        if got[name] != want:
            raise ValueError(f"carry comes from a model with {name}={got[name]}; this model has {name}={want} "
                             "(start a new stream with carry=None)")
    if len(state.inputs) > p or len(state.raw) > r:
        raise ValueError(f"carry holds {len(state.inputs)} past inputs and {len(state.raw)} past rows; this model "
                         f"reads {p} and {r}: it comes from another model (start a new stream with carry=None)")
    if state.lag != lag:
        raise ValueError(f"carry was filtered with lag={state.lag}, got lag={lag}; a stream keeps its lag "
                         "(start a new stream with carry=None)")


@torch.no_grad()
def filter_chunk(model: NeuralHMM, prep: Preprocessing, x: np.ndarray, state: FilterState | None,
                 lag: int = 0, inputs: np.ndarray | None = None, input_prep: Preprocessing | None = None,
                 known: np.ndarray | None = None) -> tuple[np.ndarray, FilterState]:
    r"""The next T steps of a stream: their marginals and the state after them.

    Args:
        model: the trained DSSM (its exact HMM, :meth:`~pyro_dssm.model.dssm.NeuralHMM.exact_hmm`).
        prep: its feature transform; must be causal (:func:`causal_reach`).
        x: (T, D0) float64 rows in the user's units, finite (checked by the caller).
        state: the stream's :class:`FilterState` after its first n steps, or None for a new stream (n = 0).
        lag: L >= 0, as in the stream's earlier calls.
        inputs: (T, U) the chunk's exogenous inputs in the user's units, for a model trained with them
            (:mod:`pyro_dssm.model.inputs`), standardised by ``input_prep``; None otherwise.
        known: (T,) int64 codes of the chunk's known states (-1: not known), for a model trained with them
            (:mod:`pyro_dssm.model.known`): the filter is clamped there; None: none known.
    Returns:
        probs: (T, K) float64. Row i belongs to the stream's step t = n + 1 + i. With L = 0 it is
        :math:`p(c_t \mid x_{1:t})`. With L >= 1 it is :math:`p(c_{t-L} \mid x_{1:t})`, the state L steps
        earlier: the first L rows of a chunk answer for the last L steps before it, the chunk's own last L
        steps are answered by the next call (or :func:`flush` at the end), and rows with t <= L (no
        step t - L) are NaN.
        state: the :class:`FilterState` after step n + T.
    """
    lag = check_lag(lag)
    K, p, r = model.n_states, past_rows(model), causal_reach(prep)
    D0, D = len(prep.feature_names), len(prep.mean) + model.config.input_dim
    state = start_state(K, D, D0, lag) if state is None else state
    check_state(state, K, D, D0, p, r, lag)
    T, B, n = len(x), len(state.recent_log_probs), state.n_steps
    raw, rows, log_init, log_trans, log_lik = _chunk_hmm(model, prep, x, state, inputs, input_prep, known)
    per_step = log_trans.dim() == 3  # (T, K, K): the tables into the chunk's steps

    into_first = log_trans[0] if per_step else log_trans  # the table into the chunk's first step
    log_prior = log_init if n == 0 else predict(torch.from_numpy(state.log_probs), into_first)
    log_filtered = filter_log_probs(log_prior, log_trans[None] if per_step else log_trans, log_lik)  # (T, K)
    recent_t = None
    if lag == 0:
        probs, recent_f, recent_l = log_filtered.exp(), log_filtered[:0], log_lik[:0]
        recent_t = log_trans[:0] if per_step else None
    else:
        # the last L steps before the chunk and its T: N of them now have their L followers
        all_f = torch.cat([torch.from_numpy(state.recent_log_probs), log_filtered])
        all_l = torch.cat([torch.from_numpy(state.recent_log_lik), log_lik])
        past_t = np.zeros((0, K, K)) if state.recent_log_trans is None else state.recent_log_trans
        all_t = torch.cat([torch.from_numpy(past_t), log_trans]) if per_step else log_trans
        N = max(0, B + T - lag)
        probs = log_filtered.new_full((T, K), float("nan"))
        probs[T - N:] = lagged_log_probs(all_t[:N + lag] if per_step else all_t, all_f[:N + lag], all_l[:N + lag],
                                         lag).exp()
        recent_f, recent_l = all_f[-lag:], all_l[-lag:]
        recent_t = all_t[-lag:] if per_step else None
    # copies: a view would keep the whole chunk alive in the carry
    new = FilterState(log_filtered[-1].numpy().copy(), n + T, rows[len(rows) - min(p, n + T):].copy(),
                      raw[len(raw) - min(r, n + T):].copy(), lag, recent_f.numpy().copy(), recent_l.numpy().copy(),
                      None if recent_t is None else recent_t.numpy().copy())
    return probs.numpy(), new


def past_rows(model: NeuralHMM) -> int:
    """The model input rows before a chunk its exact HMM reads: the emission's ``order``, and the last row for a
    transition that reads the previous observation (``recurrent``)."""
    return max(model.emitter.order, model.transition.past_rows)


def _chunk_hmm(model: NeuralHMM, prep: Preprocessing, x: np.ndarray, state: FilterState, inputs: np.ndarray | None,
               input_prep: Preprocessing | None, known: np.ndarray | None = None):
    """The chunk x (T, D0) after ``state``: the raw rows with the carried prefix (for the next carry), the model
    input rows with the carried prefix (features [+ standardised ``inputs`` (T, U)]), and the chunk's exact HMM
    (clamped at the ``known`` (T,) codes): log_init (K,), log_trans (K, K) or (T, K, K) (the tables into its
    steps), log_lik (T, K), float64."""
    raw = np.concatenate([state.raw, x])
    rows = np.concatenate([state.inputs, append_inputs(prep.apply(raw)[len(state.raw):], inputs, input_prep)])
    u = torch.from_numpy(rows)[None]  # (1, p' + T, D [+ U])
    model.emitter.check_data(u[..., :model.config.obs_dim])  # the family's support (poisson: counts)
    if known is not None and not model.config.known_states:
        raise ValueError("known states given to filter, but this model was trained without known states")
    if known is not None:  # the carried prefix rows know none: their rows of the table are dropped anyway
        codes = torch.from_numpy(np.concatenate([np.full(len(state.inputs), -1), np.asarray(known)]))[None]
        observed = with_known(u, codes)
    else:
        observed = none_known(u, model.config.known_states)
    log_init, log_trans, log_lik = (v.double() for v in model.exact_hmm(observed))
    if log_trans.dim() == 4:
        log_trans = log_trans[0, len(state.inputs):]
    return raw, rows, log_init, log_trans, log_lik[0, len(state.inputs):]


@torch.no_grad()
def flush(model: NeuralHMM, state: FilterState) -> np.ndarray:
    r"""The end of a stream filtered with lag L: (min(n, L), K) float64 :math:`p(c_s \mid x_{1:n})` of its last
    min(n, L) steps s (with fewer than L steps after them: all the stream has), the rows :func:`filter_chunk`
    has not given yet; (0, K) for L = 0. ``np.concatenate([out[L:], flush(...)])`` of the concatenated
    outputs ``out`` of a stream has one row per step, in order."""
    if not isinstance(state, FilterState):
        raise ValueError(f"flush takes the FilterState of a stream (what filter returned), got {type(state).__name__}")
    K = model.n_states
    if state.log_probs.shape[-1] != K:
        raise ValueError(f"carry comes from a model with K={state.log_probs.shape[-1]}; this model has K={K}")
    log_trans = (model.transition_parameters()[1].double() if state.recent_log_trans is None
                 else torch.from_numpy(state.recent_log_trans))
    return smoothed_log_probs(log_trans, torch.from_numpy(state.recent_log_probs),
                              torch.from_numpy(state.recent_log_lik)).exp().numpy()
