"""The built wheel runs anywhere: installed into a fresh virtual environment, trained and decoded from
another folder, without the repository on the path.

The wheel is built from a copy of the sources (``pip wheel`` reuses ``build/`` beside pyproject.toml,
where a module deleted since the last build would linger), installed with ``--no-deps`` into a venv
that sees the test's own site-packages through a ``.pth`` line (torch and co. come from the environment
running the tests, a venv or not, and nothing is downloaded; the repository's editable install stays
invisible, as a path line in a ``.pth`` file runs no further ``.pth`` hooks), and run with ``cwd`` and
``PYTHONPATH`` away from the repository.
"""

import json
import os
import shutil
import subprocess
import sys
import venv
import zipfile
from pathlib import Path

import pytest

from .test_errors import csv_rows, write_csv

REPO = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "pyro_dssm", "configs")


def run(args, cwd, timeout=300):
    """Run a command with an environment that does not point at the repository."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "HYDRA_FULL_ERROR")}
    env["OMP_NUM_THREADS"] = "1"
    proc = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{args}: exit {proc.returncode}\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    return proc


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """(python of a fresh venv holding the wheel, the wheel's path)."""
    root = tmp_path_factory.mktemp("install")
    (root / "src").mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, root / "src" / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(REPO / name, root / "src" / name)
    run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-q", "-w", root / "dist"],
        cwd=root / "src")
    wheel, = (root / "dist").glob("pyro_dssm-*.whl")
    venv.create(root / "venv", with_pip=False)  # pip, too, comes from the test's environment
    python = root / "venv" / "bin" / "python"
    inner = run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], cwd=root).stdout.strip()
    outer = [p for p in sys.path if p.endswith("site-packages")]
    (Path(inner) / "outer_environment.pth").write_text("\n".join(outer) + "\n")
    # --force-reinstall: pip sees the outer environment, where pyro_dssm is installed (editable) already
    run([python, "-m", "pip", "install", "--no-deps", "--force-reinstall", "-q", wheel], cwd=root)
    return python, wheel


def test_wheel_holds_every_module_and_config(installed):
    _, wheel = installed
    names = set(zipfile.ZipFile(wheel).namelist())
    modules = {str(p.relative_to(REPO)) for p in (REPO / "pyro_dssm").rglob("*.py")}
    configs = {"pyro_dssm/conf/" + str(p.relative_to(REPO / "configs")) for p in (REPO / "configs").rglob("*.yaml")}
    assert modules - names == set()  # a subpackage missing from [tool.setuptools] packages shows here
    assert configs - names == set()


def test_installed_wheel_trains_and_decodes_from_another_folder(installed, tmp_path):
    python, _ = installed
    work = tmp_path / "elsewhere"
    work.mkdir()
    # pyro_dssm.config.location alone: the import of torch would cost a fresh interpreter seconds
    where = run([python, "-c", "import pyro_dssm, pyro_dssm.config.location as c; print(pyro_dssm.__file__, c.CONFIG_DIR)"],
                cwd=work).stdout.split()
    venv_dir = python.parent.parent.resolve()
    assert Path(where[0]).resolve().is_relative_to(venv_dir), where  # the installed copy, not the repository
    assert Path(where[1]).resolve() == (Path(where[0]).parent / "conf").resolve(), where
    data = write_csv(work / "walks.csv", csv_rows())
    run([python, "-m", "pyro_dssm.train", "data=csv", f"data.path={data}", "data.time_column=t", "data.label_column=label",
         "data.n_states=2", "data.val_fraction=0", "trainer.n_epochs=1", "trainer.batch_size=4", "trainer.guide_warmup_steps=0",
         "trainer.figure_every=0", "trainer.device=cpu", "hydra.run.dir=run"], cwd=work)
    metrics = json.loads((work / "run" / "metrics.json").read_text())
    assert 0 <= metrics["val_accuracy"] <= 1
    proc = run([python, "-m", "pyro_dssm.decode", "checkpoint=run", f"input={data}", "output=states.csv"], cwd=work)
    assert "decoded 4 sequences, 23 steps" in proc.stdout
    header = (work / "states.csv").read_text().splitlines()[0]
    assert header == "sequence,t,guide_state,viterbi_state,p_0,p_1,label"
