"""benchmarks/bee_ceiling.py: its Viterbi against brute force, its supervised fit on data with a known truth, and
the claim it supports in RESULTS.md (no family it fits reaches 0.95 on the bee dances even with every label)."""

import importlib.util
import itertools

import numpy as np
import pytest

from .conftest import SHARED_DATA
from .helpers import REPO


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bee_ceiling", REPO / "benchmarks" / "bee_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_viterbi_is_the_best_of_all_paths(bench):
    rng = np.random.default_rng(0)
    log_lik, log_trans = rng.normal(size=(5, 3)), np.log(rng.dirichlet(np.ones(3), size=3))

    def score(path):
        return log_lik[0, path[0]] + sum(log_trans[a, b] + log_lik[t + 1, b] for t, (a, b) in
                                         enumerate(zip(path[:-1], path[1:])))

    best = max(itertools.product(range(3), repeat=5), key=score)
    assert tuple(bench.viterbi(log_lik, log_trans)) == best


def _switching_ar(rng, T=400):
    """Two AR(1) regimes with the same mean and different dynamics, segments of 40 steps."""
    z = np.repeat(rng.integers(2, size=T // 40), 40)
    x, coef = np.zeros((T, 2)), (np.array([[0.9, 0.0], [0.0, 0.9]]), np.array([[0.0, -0.9], [0.9, 0.0]]))
    for t in range(1, T):
        x[t] = coef[z[t]] @ x[t - 1] + 0.3 * rng.normal(size=2)
    return x, z


@pytest.mark.parametrize("kind", ["diag", "full"])
def test_a_supervised_ar_family_decodes_regimes_that_differ_only_in_dynamics(bench, kind):
    rng = np.random.default_rng(1)
    train, test = [_switching_ar(rng) for _ in range(3)], _switching_ar(rng)
    right, scored = bench.Family(kind, 1, 2).fit(train).hits(*test)
    assert scored == 399 and right / scored > 0.9


@pytest.mark.skipif(not (SHARED_DATA / "bee").is_dir(), reason="shared bee data not present at ../shared/data/bee")
def test_no_family_reaches_0_95_on_the_bee_dances_with_every_label(bench):
    records = bench.ceiling(bench.load(SHARED_DATA / "bee" / "bee.npz"))
    assert len(records) == len(bench.FAMILIES)
    for r in records:
        right, scored = (sum(v[i] for v in r["all"].values()) for i in (0, 1))
        assert 0.85 < right / scored < 0.95, r["family"]
