"""Quick start of the Python API: fit on ragged arrays, predict, score, save, load.

    python examples/quickstart.py [--epochs N] [--out DIR]

Three regimes of a 2-d signal (rest, walk, run), sequences of different lengths,
in units far from standardised (the model standardises them itself).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import pyro_dssm

MEANS = np.array([[0.0, 0.0], [3.0, 1.0], [1.0, 4.0]])  # one row per regime, in standard units


def make_sequences(lengths, seed=0):
    """Ragged (T_i, 2) arrays of a sticky three-state chain, and their (T_i,) true states."""
    rng = np.random.default_rng(seed)
    xs, zs = [], []
    for T in lengths:
        z = np.zeros(T, dtype=np.int64)
        z[0] = rng.integers(3)
        for t in range(1, T):
            z[t] = z[t - 1] if rng.random() < 0.95 else rng.integers(3)
        xs.append(100.0 + 20.0 * (MEANS[z] + 0.3 * rng.standard_normal((T, 2))))
        zs.append(z)
    return xs, zs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--out", type=Path, default=None, help="where to save the model (default: a temporary dir)")
    args = parser.parse_args(argv)
    xs, zs = make_sequences([60, 45, 80, 30, 70, 55, 65, 40])

    # the same settings as `python -m pyro_dssm.train`, as Hydra override strings
    model = pyro_dssm.fit(xs, n_states=3, labels=zs, overrides=[f"trainer.n_epochs={args.epochs}",
                                                                "trainer.figure_every=0"])
    print(f"{model}: validation accuracy {model.metrics['viterbi_accuracy']:.3f} (Viterbi, labels matched)")

    new, new_z = make_sequences([50], seed=1)
    states = model.predict(new[0])  # (T,) most probable path
    probs = model.predict_proba(new[0])  # (T, K) p(c_t = k | X)
    print(f"new sequence: states {states[:12]}..., p(c_1) = {np.round(probs[0], 3)}")
    print(f"log p(X) per step {model.score(new, per_step=True):.3f}; BIC {model.bic(xs):.1f}, AIC {model.aic(xs):.1f}")
    sampled_states, sampled_x = model.sample(2, 20, seed=0)  # in the units of xs
    print(f"sampled: states {sampled_states[0][:10]}..., x mean {sampled_x.mean(axis=(0, 1)).round(1)}")

    with tempfile.TemporaryDirectory() as tmp:
        path = model.save((args.out or Path(tmp)) / "model.pt")  # python -m pyro_dssm.decode reads it too
        again = pyro_dssm.load(path)
        assert np.array_equal(again.predict(new[0]), states)
        print(f"saved to {path} and loaded back: same predictions")


if __name__ == "__main__":
    main()
