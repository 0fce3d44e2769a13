"""Every bad input through the CLI: exit code, one line on stderr naming the value, nothing overwritten.

Each case runs ``python -m pyro_dssm.train`` or ``python -m pyro_dssm.decode`` in a child process
(:class:`~tests.helpers.CLIServer`) against real files: an existing run directory, or an existing
decode output and plot, whose bytes and modification times must be the same afterwards. A fresh
interpreter (no warnings or import noise on stderr either) is checked by test_train.py and by the
SIGTERM test of test_faults.py.
"""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from pyro_dssm.config import TrainerConfig
from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.data.readers import read_csv
from pyro_dssm.train import train

from .helpers import compose_config

MARKER = "pwned"  # created by the malicious checkpoints if they are ever unpickled
FEATURES = ["acc_x", "acc_y"]
FAST = ["trainer.n_epochs=1", "trainer.batch_size=4", "trainer.init=none", "trainer.guide_warmup_steps=0",
        "trainer.figure_every=0", "trainer.device=cpu"]
TINY_SYNTHETIC = ["data.n_train=8", "data.n_val=4", "data.seq_len=5", "data.n_states=2", "data.obs_dim=2"]


def csv_rows(cells=None, lengths=(6, 6, 5, 6)):
    """Rows of a 2-feature CSV: sequences a, b, c, d; ``cells`` {(row, column): text} replaces values."""
    rng = np.random.default_rng(0)
    rows = [["sequence", "t", *FEATURES, "label"]]
    for s, T in zip("abcd", lengths):
        for t in range(T):
            x = rng.normal(size=2) + (t // 3) * 3
            rows.append([s, str(t), f"{x[0]:.4f}", f"{x[1]:.4f}", "walk" if t // 3 else "rest"])
    for (r, c), text in (cells or {}).items():
        rows[r][rows[0].index(c)] = text
    return rows


def write_csv(path, rows):
    path.write_text("".join(",".join(r) + "\n" for r in rows))
    return path


def csv_data(path):
    return ["data=csv", f"data.path={path}", "data.time_column=t", "data.val_fraction=0", "data.n_states=2"]


class Evil:
    """Unpickling this creates the marker file: the stand-in for arbitrary code."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return open, (self.marker, "w")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Input files for every case, a trained run to protect (and resume from), and broken checkpoints."""
    d = tmp_path_factory.mktemp("inputs")
    f = {"dir": d, "marker": d / MARKER}
    f["good"] = write_csv(d / "good.csv", csv_rows())
    f["nan"] = write_csv(d / "nan.csv", csv_rows({(9, "acc_y"): "inf"}))  # row 9 = sequence b, t=2 (NaN: missing)
    f["holed"] = write_csv(d / "holed.csv", csv_rows({(9, "acc_y"): ""}))  # a missing value, refused if asked
    f["unobserved"] = write_csv(d / "unobserved.csv", csv_rows({(r, c): "" for r in range(13, 18) for c in FEATURES}))
    f["text"] = write_csv(d / "text.csv", csv_rows({(4, "acc_x"): "n.a."}))  # row 4 = sequence a, t=3 (N/A: missing)
    f["short"] = write_csv(d / "short.csv", csv_rows(lengths=(1, 1, 1)))
    f["header"] = write_csv(d / "header.csv", csv_rows()[:1])
    f["no_acc_y"] = write_csv(d / "no_acc_y.csv", [r[:3] + r[4:] for r in csv_rows()])
    (d / "empty.csv").write_text("")
    f["empty"] = d / "empty.csv"
    (d / "empty.npz").write_bytes(b"")
    f["empty_npz"] = d / "empty.npz"
    x = np.random.default_rng(1).normal(size=(3, 6, 2))
    np.savez(d / "good.npz", x=x)
    f["good_npz"] = d / "good.npz"
    x_inf = x.copy()
    x_inf[1, 4, 0] = np.inf
    np.savez(d / "inf.npz", x=x_inf)
    f["inf_npz"] = d / "inf.npz"
    np.savez(d / "rank.npz", x=x[..., None])
    f["rank_npz"] = d / "rank.npz"
    np.savez(d / "none.npz", x=np.zeros((0, 6, 2)))
    f["none_npz"] = d / "none.npz"
    np.savez(d / "d3.npz", x=np.random.default_rng(2).normal(size=(3, 6, 3)))
    f["d3_npz"] = d / "d3.npz"
    (d / "a_directory").mkdir()
    f["a_directory"] = d / "a_directory"
    (d / "dir.csv").mkdir()
    f["dir_csv"] = d / "dir.csv"
    f["a_file"] = d / "a_file"
    f["a_file"].write_text("not a directory\n")

    run = d / "run"
    train(compose_config([*csv_data(f["good"]), *FAST]), run)
    f["run"] = run
    good = run / "checkpoints" / "last.pt"
    data = good.read_bytes()
    (d / "truncated.pt").write_bytes(data[: len(data) // 2])
    f["truncated"] = d / "truncated.pt"
    payload = load_checkpoint(good)
    torch.save({**payload, "format_version": 99}, d / "v99.pt")
    f["v99"] = d / "v99.pt"
    torch.save({**payload, "model_config": {**payload["model_config"], "rnn_hidden": 7}}, d / "mismatch.pt")
    f["mismatch"] = d / "mismatch.pt"
    torch.save(torch.zeros(3), d / "tensor.pt")
    f["tensor"] = d / "tensor.pt"
    torch.save({**payload, "model": Evil(str(f["marker"]))}, d / "evil_torch.pt")
    f["evil_torch"] = d / "evil_torch.pt"
    with open(d / "evil_pickle.pt", "wb") as fh:
        pickle.dump({"format_version": 2, "model": Evil(str(f["marker"]))}, fh, protocol=2)
    f["evil_pickle"] = d / "evil_pickle.pt"
    return f


# (id, arguments, expected exit code, texts the stderr line must contain). {name} is a path from `files`.
TRAIN_CASES = [
    # data
    ("nan", [*csv_data("{nan}")], 2, ["'inf'", "sequence 'b'", "t='2'", "acc_y"]),
    ("missing refused", [*csv_data("{holed}"), "data.missing=error"], 2,
     ["''", "sequence 'b'", "t='2'", "acc_y", "data.missing=marginalise"]),
    ("missing policy", [*csv_data("{holed}"), "data.missing=skip"], 2, ["data.missing must be one of", "'skip'"]),
    ("all cells missing", [*csv_data("{unobserved}")], 2, ["sequence 'c' has no observed value", "5 steps"]),
    ("inf", ["data=npz", "data.path={inf_npz}", "data.val_fraction=0"], 2, ["inf", "sequence '1'", "time step 4"]),
    ("wrong rank", ["data=npz", "data.path={rank_npz}"], 2, ["(N, T, D)", "(3, 6, 2, 1)"]),
    ("empty csv", [*csv_data("{empty}")], 2, ["empty.csv", "empty file"]),
    ("empty npz", ["data=npz", "data.path={empty_npz}"], 2, ["empty.npz", "empty file"]),
    ("no rows csv", [*csv_data("{header}")], 2, ["header.csv", "no data rows"]),
    ("no rows npz", ["data=npz", "data.path={none_npz}"], 2, ["(0, 6, 2)", "N >= 1"]),
    ("non-numeric feature column", [*csv_data("{good}"), "data.feature_columns=[acc_x,label]"], 2,
     ["'label'", "'rest'", "finite number", "sequence 'a'"]),
    ("numbers mixed with text", [*csv_data("{text}")], 2, ["'acc_x'", "'n.a.'", "sequence 'a'", "t='3'"]),
    ("missing feature column", [*csv_data("{good}"), "data.feature_columns=[acc_x,acc_z]"], 2, ["['acc_z']"]),
    ("missing id column", [*csv_data("{good}"), "data.id_column=subject"], 2, ["data.id_column='subject'"]),
    ("sequences under 2 steps", [*csv_data("{short}")], 2, ["fewer than 2 time steps", "longest: 1"]),
    ("missing file", [*csv_data("{dir}/nope.csv")], 2, ["nope.csv", "does not exist"]),
    ("directory as file", [*csv_data("{a_directory}")], 2, ["a_directory", "is a directory"]),
    ("binary as csv", [*csv_data("{tensor}")], 2, ["tensor.pt", "not a CSV text file"]),
    # config
    ("K < 2", [*TINY_SYNTHETIC, "data.n_states=1"], 2, ["data.n_states", "got 1"]),
    ("model K < 2", [*csv_data("{good}"), "model.n_states=1"], 2, ["model.n_states", "got 1"]),
    ("D < 1", [*TINY_SYNTHETIC, "data.obs_dim=0"], 2, ["data.obs_dim", "got 0"]),
    ("T < 2", [*TINY_SYNTHETIC, "data.seq_len=1"], 2, ["data.seq_len", "got 1"]),
    ("transition_bias 1", [*TINY_SYNTHETIC, "data.transition_bias=1.0"], 2, ["data.transition_bias", "(0, 1)", "1.0"]),
    ("transition_bias 0", [*TINY_SYNTHETIC, "data.transition_bias=0"], 2, ["data.transition_bias", "got 0"]),
    ("noise_std 0", [*TINY_SYNTHETIC, "data.noise_std=0"], 2, ["data.noise_std", "> 0", "got 0"]),
    ("noise_std < 0 (file data)", [*csv_data("{good}"), "data.noise_std=-1"], 2, ["noise_std", "got -1"]),
    ("tau_init 0", ["trainer.tau_init=0"], 2, ["trainer.tau_init", "got 0"]),
    ("tau_min > tau_init", ["trainer.tau_init=0.5", "trainer.tau_min=0.8"], 2, ["trainer.tau_min", "0.8", "0.5"]),
    ("batch_size 0", ["trainer.batch_size=0"], 2, ["trainer.batch_size", "got 0"]),
    ("lr 0", ["trainer.lr=0"], 2, ["trainer.lr", "> 0", "got 0"]),
    ("lr not a number", ["trainer.lr=fast"], 2, ["trainer.lr", "'fast'"]),
    ("unknown objective", ["trainer.objective=elbo2"], 2, ["trainer.objective", "'elbo2'", "analytic"]),
    ("unknown device", ["trainer.device=tpu"], 2, ["trainer.device", "'tpu'"]),
    ("max_consecutive_skips 0", ["trainer.max_consecutive_skips=0"], 2, ["trainer.max_consecutive_skips", "got 0"]),
    ("seed not an integer", ["seed=abc"], 2, ["seed", "'abc'"]),
    ("unknown key", ["trainer.bogus=1"], 2, ["trainer.bogus", "not a trainer setting", "'n_epochs'"]),
    ("added unknown key", ["+trainer.bogus=1"], 2, ["trainer.bogus", "not a trainer setting"]),
    ("K not an integer", ["data.n_states=2.5"], 2, ["data.n_states must be an integer, got 2.5"]),
    ("unknown data option", ["data=nonexistent"], 2, ["data=nonexistent is not a data option", "'csv'"]),
    ("run dir not writable", ["hydra.run.dir={a_file}/run"], 2, ["hydra.run.dir", "a_file", "writable directory"]),
    # checkpoint
    ("resume missing", ["trainer.resume={dir}/nope.pt"], 2, ["trainer.resume", "nope.pt"]),
    ("resume truncated", [*csv_data("{good}"), "trainer.resume={truncated}"], 2, ["truncated.pt", "truncated"]),
    ("resume not a checkpoint", [*csv_data("{good}"), "trainer.resume={good}"], 2, ["good.csv", "not a torch checkpoint"]),
    ("resume a tensor", [*csv_data("{good}"), "trainer.resume={tensor}"], 2, ["tensor.pt", "not a pyro_dssm checkpoint"]),
    ("resume other version", [*csv_data("{good}"), "trainer.resume={v99}"], 2, ["v99.pt", "format version 99"]),
    ("resume other model config", [*csv_data("{good}"), "model.rnn_hidden=7", "trainer.resume={run}"], 2,
     ["trainer.resume", "rnn_hidden=32", "model.rnn_hidden=7"]),
    ("resume nothing left", [*csv_data("{good}"), "trainer.resume={run}"], 2, ["epoch 1", "n_epochs=1"]),
    ("resume malicious torch file", [*csv_data("{good}"), "trainer.resume={evil_torch}"], 2,
     ["evil_torch.pt", "could run code"]),
    ("resume malicious pickle", [*csv_data("{good}"), "trainer.resume={evil_pickle}"], 2,
     ["evil_pickle.pt", "could run code"]),
]

DECODE_CASES = [
    ("nan", ["input={nan}"], 2, ["'inf'", "sequence 'b'", "t='2'"]),
    ("inf", ["input={inf_npz}"], 2, ["inf", "sequence '1'", "time step 4"]),
    ("D does not match", ["input={d3_npz}"], 2, ["D=3", "D=2", "acc_x"]),
    ("missing column", ["input={no_acc_y}"], 2, ["input=", "no_acc_y.csv", "['acc_y']"]),
    ("empty file", ["input={empty}"], 2, ["input=", "empty file"]),
    ("no rows", ["input={header}"], 2, ["header.csv", "no data rows"]),
    ("missing input", ["input={dir}/nope.csv"], 2, ["input=", "does not exist"]),
    ("directory as input", ["input={dir_csv}"], 2, ["dir.csv", "is a directory"]),
    ("checkpoint missing", ["checkpoint={dir}/nope.pt"], 2, ["nope.pt", "does not exist"]),
    ("checkpoint truncated", ["checkpoint={truncated}"], 2, ["truncated.pt", "truncated"]),
    ("not a checkpoint", ["checkpoint={good}"], 2, ["good.csv", "not a torch checkpoint"]),
    ("checkpoint other version", ["checkpoint={v99}"], 2, ["v99.pt", "format version 99"]),
    ("checkpoint other config", ["checkpoint={mismatch}"], 2, ["mismatch.pt", "'rnn_hidden': 7", "size mismatch"]),
    ("malicious torch file", ["checkpoint={evil_torch}"], 2, ["evil_torch.pt", "could run code"]),
    ("malicious pickle", ["checkpoint={evil_pickle}"], 2, ["evil_pickle.pt", "could run code"]),
    ("output is the input", ["output={good}"], 2, ["output=", "is the input"]),
    ("output not writable", ["output={a_file}/states.csv"], 2, ["a_file", "writable directory"]),
    ("output a directory", ["output={a_directory}"], 2, ["a_directory"]),
    ("plot format", ["plot={dir}/states.gif"], 2, ["plot=", "states.gif", ".png"]),
    ("unknown argument", ["colour=red"], 2, ["'colour=red'"]),
]


def snapshot(root: Path) -> dict:
    """Every file under ``root``: relative path -> (bytes, mtime in ns)."""
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def fill(args, files):
    return [a.format(**{k: str(v) for k, v in files.items()}) for a in args]


def assert_one_line(proc, rc, texts):
    assert proc.returncode == rc, (proc.returncode, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    lines = proc.stderr.strip().splitlines()
    if rc == 2:  # our own check, also of what Hydra would refuse: exactly one line
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    for text in texts:
        assert text in proc.stderr, (text, proc.stderr)


@pytest.mark.parametrize("args, rc, texts", [c[1:] for c in TRAIN_CASES], ids=[c[0] for c in TRAIN_CASES])
def test_train_cli_bad_input(cli, files, tmp_path, args, rc, texts):
    run_dir = tmp_path / "run"
    shutil.copytree(files["run"], run_dir)  # an existing run that a bad command must leave alone
    before = snapshot(run_dir)
    args = fill(args, files)
    if not any(a.startswith("hydra.run.dir=") for a in args):
        args.append(f"hydra.run.dir={run_dir}")
    synthetic = not any(a.startswith("data=") for a in args)
    proc = cli.run("pyro_dssm.train", [*(TINY_SYNTHETIC if synthetic else []), *FAST, *args])
    assert_one_line(proc, rc, texts)
    assert snapshot(run_dir) == before
    assert not files["marker"].exists()


@pytest.mark.parametrize("args, rc, texts", [c[1:] for c in DECODE_CASES], ids=[c[0] for c in DECODE_CASES])
def test_decode_cli_bad_input(cli, files, tmp_path, args, rc, texts):
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    (out_dir / "states.csv").write_text("sequence,t,guide_state\na,0,1\n")  # earlier results
    (out_dir / "states.png").write_bytes(b"\x89PNG earlier plot")
    before = snapshot(out_dir)
    given = dict(a.split("=", 1) for a in fill(args, files) if "=" in a)
    defaults = {"checkpoint": files["run"], "input": files["good"], "output": out_dir / "states.csv",
                "plot": out_dir / "states.png"}
    argv = [f"{k}={given.get(k, v)}" for k, v in defaults.items()]
    argv += [a for a in fill(args, files) if a.split("=", 1)[0] not in defaults]
    proc = cli.run("pyro_dssm.decode", argv)
    assert_one_line(proc, rc, texts)
    assert snapshot(out_dir) == before
    assert not files["marker"].exists()


def test_cuda_requested_without_a_gpu_is_one_line_and_auto_picks_the_cpu(cli, files, tmp_path):
    if torch.cuda.is_available():
        pytest.skip("a GPU is present: trainer.device=cuda is valid here")
    proc = cli.run("pyro_dssm.train", [*TINY_SYNTHETIC, *FAST, "trainer.device=cuda", f"hydra.run.dir={tmp_path}/a"])
    assert_one_line(proc, 2, ["trainer.device='cuda'", "CUDA is not available"])
    proc = cli.run("pyro_dssm.train", [*TINY_SYNTHETIC, *FAST, "trainer.device=auto", f"hydra.run.dir={tmp_path}/b"])
    assert proc.returncode == 0, proc.stderr
    assert "on cpu" in proc.stdout and proc.stderr == ""


def test_full_error_shows_the_traceback(cli, files, tmp_path):
    for module, args in (("pyro_dssm.train", [*csv_data(files["nan"]), *FAST, f"hydra.run.dir={tmp_path}"]),
                         ("pyro_dssm.decode", [f"checkpoint={files['evil_torch']}", f"input={files['good']}",
                                               f"output={tmp_path / 'o.csv'}"])):
        proc = cli.run(module, args, env={"HYDRA_FULL_ERROR": "1"})
        assert proc.returncode == 1 and "Traceback" in proc.stderr and "ValueError" in proc.stderr
    assert not files["marker"].exists()


def test_library_functions_raise_the_same_messages(files):
    with pytest.raises(ValueError, match=r"sequence 'b' at t='2'.*got 'inf'"):
        read_csv(files["nan"], "sequence", "t", FEATURES)
    with pytest.raises(ValueError, match=r"sequence 'b' at t='2'.*got ''.*data.missing=marginalise"):
        read_csv(files["holed"], "sequence", "t", FEATURES, missing="error")
    assert np.isnan(read_csv(files["holed"], "sequence", "t", FEATURES).x[1][2, 1])  # marginalise: NaN
    for name in ("evil_torch", "evil_pickle"):
        with pytest.raises(ValueError, match="could run code"):
            load_checkpoint(files[name])
    with pytest.raises(ValueError, match="trainer.lr must be a number > 0, got 'fast'"):
        TrainerConfig(lr="fast")  # from Python: the composed config cannot hold a string there
    with pytest.raises(ValueError, match="trainer.lr must be a number > 0, got 0.0"):
        train(compose_config([*TINY_SYNTHETIC, "trainer.lr=0"]), files["dir"] / "unused")
    assert not files["marker"].exists()
    assert not (files["dir"] / "unused").exists()
