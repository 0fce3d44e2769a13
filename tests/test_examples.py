"""The example scripts run as documented (small sizes)."""

import re
import subprocess
import sys

from .helpers import REPO, cli_env


def test_quickstart_fits_predicts_scores_saves_and_loads(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "quickstart.py"), "--epochs", "2", "--out",
                           str(tmp_path)], cwd=tmp_path, capture_output=True, text=True, timeout=600, env=cli_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    # three far-apart regimes: a working fit and Viterbi decoding recover them
    accuracy = float(re.search(r"validation accuracy ([\d.]+)", proc.stdout).group(1))
    assert accuracy > 0.95, proc.stdout
    assert "loaded back: same predictions" in proc.stdout
    assert (tmp_path / "model.pt").is_file()
