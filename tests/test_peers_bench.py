"""benchmarks/peers.py's records on a tiny synthetic problem, with the peers that import here.

A peer whose library is missing must still be a record (``"skipped"`` with the reason); the ones present
run for real at a few EM iterations. The schema of the JSON the script writes is checked key by key.
"""

import importlib.util
import json
import sys

import numpy as np
import pytest

from .helpers import REPO

METHODS = ["pyro_dssm-exact", "pyro_dssm-dssm", "hmmlearn", "dynamax", "pomegranate"]
PACKAGES = {"pyro_dssm-exact": "pyro_dssm", "pyro_dssm-dssm": "pyro_dssm", "hmmlearn": "hmmlearn",
            "dynamax": "dynamax", "pomegranate": "pomegranate"}
TINY = ["data.n_train=24", "data.n_val=12", "data.seq_len=20", "data.n_states=2", "data.obs_dim=3",
        "trainer.n_epochs=1", "trainer.batch_size=12", "trainer.guide_warmup_steps=5", "trainer.init_restarts=1",
        "trainer.init_em_iters=3", "baseline.n_epochs=1"]
REQUIRED = {"data", "method", "seconds_to_target", "accuracy", "reached", "target", "oracle_accuracy"}


@pytest.fixture(scope="module")
def peers():
    """benchmarks/peers.py as a module, with benchmarks/ importable as when run as a script."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location("peers_bench", REPO / "benchmarks" / "peers.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclass resolves its annotations through sys.modules
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop("peers_bench", None)
        sys.path.remove(str(REPO / "benchmarks"))


def test_iterations_to_target_finds_the_fewest(peers):
    """The doubling and bisection search against a fit whose accuracy is known for every n_iter: the
    target is first reached at n = 11 (seconds = n), found between the probes 8 and 16 (then 12, 10, 11)."""
    problem = peers.Problem("toy", 2, [], [], [np.array([0, 0, 1, 1])], 0.9, None, [], "diag", "diag", 1)
    right = [np.array([0, 0, 1, 1])]
    wrong = [np.array([0, 1, 1, 1])]
    out = peers.iterations_to_target(lambda n: (right if n >= 11 else wrong, float(n)), problem, max_iter=100)
    assert out["iterations_to_target"] == 11 and out["seconds_to_target"] == 11.0 and out["reached"]
    assert out["seconds_total"] == 100.0 and out["accuracy"] == 1.0
    assert [p[0] for p in out["probes"]] == [1, 2, 4, 8, 10, 11, 12, 16, 100]
    never = peers.iterations_to_target(lambda n: (wrong, float(n)), problem, max_iter=5)
    assert never["seconds_to_target"] is None and not never["reached"] and never["accuracy"] == 0.75


def test_records_schema_on_tiny_data(peers, tmp_path):
    out = tmp_path / "peers.json"
    records = peers.main(["--data", "default", "--repeats", "1", "--max-iter", "2", "--out", str(out),
                          "--methods", *METHODS, "--", *TINY])
    written = json.loads(out.read_text())
    assert written == json.loads(json.dumps(records))  # what was printed is what was written
    assert [(r["data"], r["method"]) for r in written] == [("default", m) for m in METHODS]
    for r in written:
        assert REQUIRED <= set(r), (r["method"], REQUIRED - set(r))
        assert "error" not in r, r.get("error")
        assert 0.0 < r["oracle_accuracy"] <= 1.0 and r["target"] == pytest.approx(0.98 * r["oracle_accuracy"])
        if importlib.util.find_spec(PACKAGES[r["method"]]) is None:
            assert "not installed" in r["skipped"] and r["accuracy"] is None and r["reached"] is False
            continue
        assert "skipped" not in r and 0.0 < r["accuracy"] <= 1.0 and r["seconds_total"] > 0
        assert isinstance(r["reached"], bool)
        assert (r["seconds_to_target"] is not None) == r["reached"]
        if r["reached"] and r["method"] in ("pyro_dssm-exact", "pyro_dssm-dssm", "dynamax"):  # one run or trace
            assert 0 < r["seconds_to_target"] <= r["seconds_total"]
        assert ("compile_seconds" in r) == (r["method"] == "dynamax")
    exact = written[0]["runs"][0]
    assert exact["epochs"] == 1 and exact["seconds_evaluating"] > 0  # baseline.n_epochs reached the baseline
    # timed as hmmlearn: probes of at most n EM iterations (n < --max-iter 2: n = 1) and the configured run (3)
    assert [p[0] for p in exact["probes"]] == [1, 3]
    reached = [(p[1], p[0]) for p in exact["probes"] if p[1] is not None]
    assert (exact["seconds_to_target"], exact["iterations_to_target"]) == (min(reached) if reached else (None, None))
    assert exact["default_seconds_to_target"] == exact["probes"][-1][1]


def test_a_rerun_replaces_only_its_rows(peers, tmp_path):
    out = tmp_path / "peers.json"
    out.write_text(json.dumps([{"data": "bee", "method": "hmmlearn", "keep": True},
                               {"data": "default", "method": "hmmlearn", "keep": True}]))
    merged = peers.merge(out, [{"data": "default", "method": "hmmlearn"}, {"data": "default", "method": "dynamax"}])
    assert [(r["data"], r["method"], r.get("keep")) for r in merged] == [
        ("default", "hmmlearn", None), ("default", "dynamax", None), ("bee", "hmmlearn", True)]
