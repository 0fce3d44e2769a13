"""benchmarks/speed.py --quick runs end to end and writes its table and records."""

import json
import os
import subprocess
import sys

from .helpers import REPO


def test_speed_benchmark_quick(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "speed.py"), "--quick", "--out", str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads((tmp_path / "speed.json").read_text())
    records = report["records"]
    assert {(r["T"], r["B"], r["objective"]) for r in records} == {
        (T, B, o) for T in (8, 16) for B in (4, 8) for o in ("trace", "analytic", "concrete")}
    for r in records:
        assert "error" not in r, r
        assert r["ratio"] > 0 and r["package_ms"] > 0 and r["hand_ms"] > 0
        # the hand-written step is the same ELBO: equal losses on the same random numbers
        assert abs(r["loss_package"] - r["loss_hand"]) <= 1e-4 * abs(r["loss_hand"]) + 1e-5
    assert all(e["exact_step_ms"] > 0 for e in report["exact"])
    assert {e["what"] for e in report["eval"]} == {"exact log p(X)", "Viterbi", "guide decoding"}
    assert report["fit_T"] and report["per_sequence"]
    table = (tmp_path / "speed.md").read_text()
    assert report["machine"]["cpu"] in table and "| 16 | 8 | analytic |" in table
