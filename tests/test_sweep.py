"""Sweeps on Hydra's launchers: a joblib multirun, the gathered table, the sweeper's return value, the Slurm config."""

import importlib.util
import json
import shutil

import pytest
from hydra.core.hydra_config import HydraConfig
from omegaconf import open_dict

from pyro_dssm import gather
from pyro_dssm.train import main

from .helpers import REPO, compose_config, run_cli

FAST = ["data.n_train=16", "data.n_val=4", "data.seq_len=10", "data.n_states=3", "data.obs_dim=4",
        "trainer.n_epochs=2", "trainer.init=kmeans", "trainer.init_restarts=1", "trainer.guide_warmup_steps=0",
        "trainer.figure_every=0"]


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_joblib_launcher") is None,
                    reason="hydra-joblib-launcher not installed (pip install -e .[dev])")
def test_joblib_multirun_two_jobs_and_gathered_table(tmp_path, capsys):
    sweep = tmp_path / "sweep"
    proc = run_cli("pyro_dssm.train", ["-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2",
                                       f"hydra.sweep.dir={sweep}", "seed=0,1", *FAST],
                   env={"PYTHONPATH": str(REPO)})  # the joblib workers import the package from this tree
    assert proc.returncode == 0, proc.stderr[-2000:]
    metrics = [json.loads((sweep / str(n) / "metrics.json").read_text()) for n in (0, 1)]
    assert all(m["epochs"] == 2 and 0 < m["val_accuracy"] <= 1 for m in metrics)
    assert [(sweep / str(n) / ".hydra" / "overrides.yaml").read_text().count(f"seed={n}") for n in (0, 1)] == [1, 1]
    assert "JoblibLauncher" in (sweep / "multirun.yaml").read_text()

    # a third run that failed before writing metrics.json keeps its row
    shutil.copytree(sweep / "1" / ".hydra", sweep / "2" / ".hydra")
    (sweep / "2" / ".hydra" / "overrides.yaml").write_text((sweep / "2" / ".hydra" / "overrides.yaml").read_text()
                                                           .replace("seed=1", "seed=2"))
    assert gather.main([f"dir={sweep}", "metrics=val_accuracy,epochs", f"csv={tmp_path / 't.csv'}"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0] == "| run | seed | status | val_accuracy | epochs |"
    assert lines[2] == f"| 0 | 0 | ok | {metrics[0]['val_accuracy']:.4g} | 2 |"
    assert lines[3] == f"| 1 | 1 | ok | {metrics[1]['val_accuracy']:.4g} | 2 |"
    assert lines[4] == "| 2 | 2 | no metrics.json |  |  |"
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == "run,seed,status,val_accuracy,epochs"


def test_gather_errors_name_the_directory(tmp_path, capsys):
    assert gather.main([str(tmp_path / "missing")]) == 2
    assert gather.main([f"dir={tmp_path}"]) == 2
    assert "no runs under" in capsys.readouterr().err
    assert gather.main([f"dir={tmp_path}", "metric=epochs"]) == 2  # unknown key, as train refuses one
    assert capsys.readouterr().err.strip() == ("error: expected arguments key=value with key in ('dir', 'metrics', "
                                               "'csv'), got 'metric=epochs'")
    assert gather.main(["metrics=epochs"]) == 2
    assert capsys.readouterr().err.strip() == "error: missing dir=... (required)"


def test_gather_key_value_and_older_form_give_one_table(tmp_path, capsys):
    """Two hand-made runs (overrides, metrics.json) and one without metrics: the table by hand."""
    for n, (lr, acc) in enumerate([("0.01", 0.91234), ("0.1", 0.5), ("1.0", None)]):
        (tmp_path / str(n) / ".hydra").mkdir(parents=True)
        (tmp_path / str(n) / ".hydra" / "overrides.yaml").write_text(f"- seed=0\n- trainer.lr={lr}\n")
        if acc is not None:
            (tmp_path / str(n) / "metrics.json").write_text(json.dumps({"val_accuracy": acc, "epochs": 3,
                                                                        "history": []}))
    expected = ["| run | trainer.lr | status | val_accuracy | epochs |", "|---|---|---|---|---|",
                "| 0 | 0.01 | ok | 0.9123 | 3 |", "| 1 | 0.1 | ok | 0.5 | 3 |", "| 2 | 1.0 | no metrics.json |  |  |"]
    assert gather.main([f"dir={tmp_path}", "metrics=val_accuracy,epochs", f"csv={tmp_path / 'a.csv'}"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == expected
    assert gather.main([str(tmp_path), "--metrics", "val_accuracy,epochs", f"--csv={tmp_path / 'b.csv'}"]) == 0
    assert capsys.readouterr().out.strip().splitlines() == expected
    assert (tmp_path / "a.csv").read_text() == (tmp_path / "b.csv").read_text()
    assert (tmp_path / "a.csv").read_text().splitlines()[2] == "1,0.1,ok,0.5,3"


def test_main_returns_the_validation_metric_for_sweepers(tmp_path):
    """Sweepers (e.g. Optuna) optimise the float the task function returns: val_accuracy here."""
    cfg = compose_config([*FAST, "hydra.run.dir=unused"], return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(tmp_path)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    try:
        value = main.__wrapped__(cfg)
    finally:
        HydraConfig.instance().cfg = None
    assert type(value) is float
    assert value == json.loads((tmp_path / "metrics.json").read_text())["val_accuracy"]


@pytest.mark.skipif(importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is None,
                    reason="hydra-submitit-launcher not installed (pip install -e .[slurm])")
def test_slurm_launcher_config_composes():
    """The shipped Slurm config (not run here: no cluster) extends submitit's with its defaults."""
    launcher = compose_config(["hydra/launcher=slurm"], return_hydra_config=True).hydra.launcher
    assert launcher._target_.endswith("SlurmLauncher")
    assert (launcher.timeout_min, launcher.cpus_per_task, launcher.mem_gb, launcher.tasks_per_node) == (60, 2, 4, 1)
