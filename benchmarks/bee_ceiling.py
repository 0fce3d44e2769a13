"""The fully supervised ceiling of HMM families on the bee dances: how far a per-frame label can take them.

    python benchmarks/bee_ceiling.py                      # ../shared/data/bee/bee.npz
    python benchmarks/bee_ceiling.py --path other.npz     # keys x_<name> (T, D), z_<name> (T,) as bee.npz

Every frame's label is used to fit, by maximum likelihood on the labelled frames (no EM, no latent
state), one class-conditional model per regime and the transition matrix from the label sequence
(counts + 1), then each dance is decoded by Viterbi and scored against its labels (no matching: the
classes are named). Families:

- ``AR(p) diag`` / ``AR(p) full``: x_t = W_k [x_{t-1}, ..., x_{t-p}, 1] + e_t, e_t ~ N(0, Sigma_k), Sigma_k
  diagonal or full (the classical HMMs of ``model.emission=autoregressive`` / ``autoregressive_full``),
  p = 1, 2, 3; the first p frames are not scored.
- ``window p``: a full-covariance Gaussian per regime of [x_t, x_t - x_{t-1}, and the mean and standard
  deviation of x_t - x_{t-1} over a centred window of p frames], the kind of features ``model=motion`` uses.

Two protocols: ``all``: fitted on all three dances and decoding them (an upper bound: the model has seen
every label it is scored on); ``held-out``: fitted on two dances, decoding the third (leave one dance out).
This bounds what any amount of supervision can give these families here (issue 24's known-states bar).
Prints a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from scipy.ndimage import uniform_filter1d

DEFAULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "bee" / "bee.npz"


def load(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name -> (x (T, D) float64, z (T,) int) from an npz with keys x_<name>, z_<name>."""
    data = np.load(path)
    names = sorted(k[2:] for k in data.files if k.startswith("x_"))
    return {n: (data[f"x_{n}"].astype(np.float64), data[f"z_{n}"].astype(int)) for n in names}


def ar_design(x: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """x (T, D) -> regressors (T - p, p D + 1) [x_{t-1}, ..., x_{t-p}, 1] and targets x_t (T - p, D)."""
    past = [x[p - k:len(x) - k] for k in range(1, p + 1)]
    return np.concatenate(past + [np.ones((len(x) - p, 1))], 1), x[p:]


def window_features(x: np.ndarray, width: int) -> np.ndarray:
    """x (T, D) -> (T, 4 D): x_t, its difference, and the difference's centred window mean and std."""
    dx = np.diff(x, axis=0, prepend=x[:1])
    mean = uniform_filter1d(dx, width, axis=0, mode="nearest")
    std = np.sqrt(np.maximum(uniform_filter1d(dx ** 2, width, axis=0, mode="nearest") - mean ** 2, 1e-12))
    return np.concatenate([x, dx, mean, std], 1)


def log_transitions(labels: list[np.ndarray], K: int) -> np.ndarray:
    """(K, K) log of the label sequences' transition counts + 1, rows normalised."""
    counts = np.ones((K, K))
    for z in labels:
        np.add.at(counts, (z[:-1], z[1:]), 1)
    return np.log(counts / counts.sum(1, keepdims=True))


def gaussian_log_density(residual: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """residual (T, D), cov (D, D) -> (T,) log N(residual; 0, cov) up to the shared -D/2 log 2 pi."""
    inverse, logdet = np.linalg.inv(cov), np.linalg.slogdet(cov)[1]
    return -0.5 * np.einsum("ti,ij,tj->t", residual, inverse, residual) - 0.5 * logdet


def viterbi(log_lik: np.ndarray, log_trans: np.ndarray) -> np.ndarray:
    """log_lik (T, K), log_trans (K, K), uniform start -> (T,) the most probable path."""
    T, K = log_lik.shape
    delta, back = log_lik[0].copy(), np.zeros((T, K), int)
    for t in range(1, T):
        scores = delta[:, None] + log_trans
        back[t], delta = scores.argmax(0), scores.max(0) + log_lik[t]
    path = [int(delta.argmax())]
    for t in range(T - 1, 0, -1):
        path.append(int(back[t][path[-1]]))
    return np.array(path[::-1])


class Family:
    """A class-conditional model per regime: ``fit`` on (x, z) pairs, ``table`` (T', K) and the scored labels."""

    def __init__(self, kind: str, order: int, K: int):
        self.kind, self.order, self.K = kind, order, K

    def _rows(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.kind == "window":
            features = window_features(x, self.order)
            return np.ones((len(x), 1)), features  # regress on a constant: the class mean
        return ar_design(x, self.order)

    def _labels(self, z: np.ndarray) -> np.ndarray:
        return z if self.kind == "window" else z[self.order:]

    def fit(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> "Family":
        rows = [self._rows(x) for x, _ in pairs]
        labels = [self._labels(z) for _, z in pairs]
        self.weights, self.covs = [], []
        for k in range(self.K):
            A = np.concatenate([a[z == k] for (a, _), z in zip(rows, labels)])
            Y = np.concatenate([y[z == k] for (_, y), z in zip(rows, labels)])
            W = np.linalg.lstsq(A, Y, rcond=None)[0]
            cov = np.cov((Y - A @ W).T) + 1e-6 * np.eye(Y.shape[1])
            self.weights.append(W)
            self.covs.append(np.diag(np.diag(cov)) if self.kind == "diag" else cov)
        self.log_trans = log_transitions(labels, self.K)
        return self

    def hits(self, x: np.ndarray, z: np.ndarray) -> tuple[int, int]:
        """(frames decoded right, frames scored) of one dance, by Viterbi."""
        A, Y = self._rows(x)
        table = np.stack([gaussian_log_density(Y - A @ W, c) for W, c in zip(self.weights, self.covs)], 1)
        labels = self._labels(z)
        return int((viterbi(table, self.log_trans) == labels).sum()), len(labels)


FAMILIES = [("AR(%d) diag" % p, "diag", p) for p in (1, 2, 3)] + [("AR(%d) full" % p, "full", p) for p in (1, 2, 3)] \
    + [("window %d" % w, "window", w) for w in (5, 9, 15)]


def ceiling(dances: dict[str, tuple[np.ndarray, np.ndarray]]) -> list[dict]:
    """One record per family: (right, scored) frames per dance, fitted on all (``all``) and on the others
    (``held_out``)."""
    K = int(max(z.max() for _, z in dances.values())) + 1
    names, records = list(dances), []
    for label, kind, order in FAMILIES:
        everything = Family(kind, order, K).fit(list(dances.values()))
        fitted = {n: everything.hits(*dances[n]) for n in names}
        held = {n: Family(kind, order, K).fit([dances[m] for m in names if m != n]).hits(*dances[n]) for n in names}
        records.append({"family": label, "all": fitted, "held_out": held})
    return records


def _cells(hits: dict[str, tuple[int, int]]) -> str:
    """Per-dance accuracies and the accuracy over all their frames, as table cells."""
    right, scored = (sum(v[i] for v in hits.values()) for i in (0, 1))
    return " / ".join(f"{r / n:.3f}" for r, n in hits.values()) + f" | **{right / scored:.3f}**"


def table(records: list[dict]) -> str:
    names = " / ".join(records[0]["all"])
    lines = [f"| family | fitted on all labels: {names} | all frames | fitted on the other dances: {names} "
             "| all frames |", "|---|---|---|---|---|"]
    lines += [f"| {r['family']} | {_cells(r['all'])} | {_cells(r['held_out'])} |" for r in records]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--path", type=Path, default=DEFAULT, help="npz with x_<name>, z_<name> (default: bee.npz)")
    args = parser.parse_args(argv)
    if not args.path.exists():
        raise SystemExit(f"error: {args.path} not found (the bee dances live in ../shared/data/bee/)")
    print(table(ceiling(load(args.path))))


if __name__ == "__main__":
    main()
