"""Inputs in the emission (``model.emission_inputs``): a GLM-HMM whose states only the inputs reveal, with its oracle.

Two sticky states (stay 0.95), one input u_t ~ N(0, 1), one channel x_t = w_{c_t} u_t + 0.3 eps with
w = (+1.5, -1.5): x alone is N(0, 2.34) in both states. 24 training sequences of 120 steps, scored on 24 new
ones (Hungarian-matched Viterbi accuracy). The oracle is the Viterbi path of the true HMM (its own
table log N(x_t; w_k u_t, 0.3^2) and matrix). Per seed, this project with ``model.emission=autoregressive``
with and without ``model.emission_inputs=true`` (the inputs given to both: without, only the guide reads them).

    OMP_NUM_THREADS=1 python benchmarks/glm_inputs.py --seeds 0 1 2 3 4 5 6 7 8 9
"""

from __future__ import annotations

import argparse
import json
import logging
import platform

import numpy as np
import torch

import pyro_dssm
from pyro_dssm.evaluation.evaluate import hungarian_accuracy
from pyro_dssm.model import hmm

STAY, NOISE, SLOPES = 0.95, 0.3, (1.5, -1.5)


def draw(n: int, length: int, rng: np.random.Generator):
    """n sequences: features (length, 1), inputs (length, 1) and states (length,)."""
    xs, us, zs = [], [], []
    for _ in range(n):
        z = np.zeros(length, dtype=int)
        z[0] = rng.integers(2)
        for t in range(1, length):
            z[t] = z[t - 1] if rng.random() < STAY else 1 - z[t - 1]
        u = rng.normal(size=(length, 1))
        xs.append(np.asarray(SLOPES)[z][:, None] * u + NOISE * rng.normal(size=(length, 1)))
        us.append(u)
        zs.append(z)
    return xs, us, zs


def oracle_paths(xs, us) -> list[np.ndarray]:
    """Viterbi paths of the true GLM-HMM."""
    log_trans = torch.tensor([[STAY, 1 - STAY], [1 - STAY, STAY]]).log()
    paths = []
    for x, u in zip(xs, us):
        mean = torch.as_tensor(u) * torch.tensor(SLOPES)  # (T, K)
        table = torch.distributions.Normal(mean, NOISE).log_prob(torch.as_tensor(x)).float()[None]
        paths.append(hmm.viterbi(hmm.uniform_log_init(2, table), log_trans, table)[0][0].numpy())
    return paths


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", default="benchmarks/results/glm_inputs.json")
    args = parser.parse_args(argv)
    logging.disable(logging.INFO)
    records = []
    for seed in args.seeds:
        rng = np.random.default_rng(seed)
        (xs, us, _), (xv, uv, zv) = draw(24, 120, rng), draw(24, 120, rng)
        truth = np.concatenate(zv)
        row = {"seed": seed, "oracle": hungarian_accuracy(truth, np.concatenate(oracle_paths(xv, uv)), 2)}
        for name, extra in (("emission_inputs", ["model.emission_inputs=true"]), ("guide_only", [])):
            model = pyro_dssm.fit(xs, n_states=2, inputs=us, overrides=["model.emission=autoregressive",
                                                                         f"seed={seed}", *extra])
            row[name] = hungarian_accuracy(truth, np.concatenate(model.predict(xv, inputs=uv)), 2)
        records.append(row)
        print(json.dumps(row), flush=True)
    summary = {"machine": platform.processor() or platform.machine(), "torch": torch.__version__, "records": records}
    with open(args.out, "w") as f:
        json.dump(summary, f, indent=1)


if __name__ == "__main__":
    main()
