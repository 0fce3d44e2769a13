"""benchmarks/standin_12.py writes the held-out set's shape: 6 sequences of 205-446 steps, 12 channels, 12 regimes
(labels the true states of data=periodic's source, segments counted from them)."""

import csv
import importlib.util

import numpy as np

from .helpers import REPO


def test_the_stand_in_has_the_held_out_shape(tmp_path):
    spec = importlib.util.spec_from_file_location("standin_12", REPO / "benchmarks" / "standin_12.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "s.csv"
    segments = module.write(0, out)
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0]) == ["sequence", "t", *(f"c{j}" for j in range(12)), "label"]
    lengths = {s: sum(r["sequence"] == s for r in rows) for s in dict.fromkeys(r["sequence"] for r in rows)}
    assert len(lengths) == 6 and all(205 <= n <= 446 for n in lengths.values())
    labels = np.array([int(r["label"]) for r in rows])
    assert set(labels.tolist()) <= set(range(12)) and len(set(labels.tolist())) >= 10
    starts = np.cumsum([0, *lengths.values()])[:-1]
    counted = [int((np.diff(labels[a:a + n]) != 0).sum() + 1) for a, n in zip(starts, lengths.values())]
    assert counted == segments and 20 <= sum(segments) <= 80  # regimes of ~50 steps
