"""Your own CSV / NPZ data end to end: train on a file, decode it with the CLI, read the output back."""

import csv
import itertools
import json

import numpy as np
import pytest

from pyro_dssm.decode import parse_args, run
from pyro_dssm.train import train

from .conftest import SHARED_DATA
from .helpers import compose_config, run_cli

LENGTHS = [1, 20, 35, 12, 35, 28]  # one sequence of length 1, two of length T_max = 35
NAMES = ["rest", "walk", "run"]
FAST = ["trainer.n_epochs=2", "trainer.batch_size=8", "trainer.init=none", "trainer.guide_warmup_steps=5",
        "trainer.figure_every=0", "trainer.device=cpu"]


def write_csv(path, labels=True, seed=0):
    """Three well-separated 2-d states with string labels; rows of all sequences interleaved."""
    rng = np.random.default_rng(seed)
    means = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])
    rows = []
    for s, T in enumerate(LENGTHS):
        z = rng.integers(3)
        for t in range(T):
            if rng.random() < 0.1:
                z = rng.integers(3)
            x = means[z] + 0.3 * rng.standard_normal(2)
            rows.append([f"unit-{s}", t * 0.5, f"{x[0]:.5f}", f"{x[1]:.5f}"] + ([NAMES[z]] if labels else []))
    rows = [rows[i] for i in rng.permutation(len(rows))]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["unit", "seconds", "acc_x", "acc_y"] + (["activity"] if labels else []))
        w.writerows(rows)
    return len(rows)


def csv_overrides(path, labels=True):
    return ["data=csv", f"data.path={path}", "data.id_column=unit", "data.time_column=seconds",
            "data.val_fraction=0.34"] + (["data.label_column=activity"] if labels else [])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def best_relabelled_accuracy(true, pred):
    """Oracle: the best accuracy over all 3! ways to name the states "0", "1", "2" by the classes of ``true``."""
    return max(sum(dict(zip("012", perm))[p] == t for t, p in zip(true, pred)) / len(true)
               for perm in itertools.permutations(NAMES))


def test_train_and_decode_cli_on_a_labelled_csv(tmp_path):
    n_rows = write_csv(tmp_path / "data.csv")
    run_dir = tmp_path / "run"
    # the default init (not FAST's random one): on three states 10 sigma apart it must find them
    fast = [o for o in FAST if not o.startswith("trainer.init=")]
    proc = run_cli("pyro_dssm.train", [f"hydra.run.dir={run_dir}", *csv_overrides(tmp_path / "data.csv"), *fast])
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in ("val_accuracy", "val_nmi", "val_ari", "viterbi_accuracy"):
        assert 0 <= metrics[key] <= 1, key
    assert "oracle_accuracy" not in metrics  # no true HMM for a file
    out, png = tmp_path / "decoded.csv", tmp_path / "states.png"
    proc = run_cli("pyro_dssm.decode", [f"checkpoint={run_dir}", f"input={tmp_path / 'data.csv'}", f"output={out}",
                                        f"plot={png}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = read_rows(out)
    assert len(rows) == n_rows  # one row per input time step
    assert list(rows[0]) == ["unit", "seconds", "guide_state", "viterbi_state", "p_0", "p_1", "p_2", "activity"]
    inputs = {(r["unit"], float(r["seconds"])): r["activity"] for r in read_rows(tmp_path / "data.csv")}
    assert {(r["unit"], float(r["seconds"])): r["activity"] for r in rows} == inputs
    for r in rows:
        assert r["guide_state"] in {"0", "1", "2"} and r["viterbi_state"] in {"0", "1", "2"}
        assert sum(float(r[f"p_{k}"]) for k in range(3)) == pytest.approx(1.0, abs=1e-4)
    # the decoded states find the well-separated classes (a constant or shuffled decoder scores about 0.4),
    # and the accuracies the command prints are the oracle's
    printed = dict(item.split() for item in proc.stdout.split("labels: ")[1].splitlines()[0].split(", "))
    for which, least in (("viterbi", 0.95), ("guide", 0.85)):  # the guide measured 0.91 after 2 epochs
        accuracy = best_relabelled_accuracy([r["activity"] for r in rows], [r[f"{which}_state"] for r in rows])
        assert accuracy >= least, (which, accuracy)
        assert float(printed[f"{which}_accuracy"]) == pytest.approx(accuracy, abs=1e-4)
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"


def test_unlabelled_csv_trains_and_decodes_to_npz(tmp_path):
    n_rows = write_csv(tmp_path / "data.csv", labels=False)
    metrics = train(compose_config([*csv_overrides(tmp_path / "data.csv", labels=False), *FAST]), tmp_path / "run")
    assert "val_accuracy" not in metrics and np.isfinite(metrics["val_elbo_per_step"])
    out = tmp_path / "decoded.npz"
    scores = run(parse_args([f"checkpoint={tmp_path / 'run' / 'checkpoints' / 'last.pt'}",
                             f"input={tmp_path / 'data.csv'}", f"output={out}", f"plot={tmp_path / 'p.png'}"]))
    assert scores == {}
    with np.load(out, allow_pickle=False) as f:
        assert "label" not in f.files
        assert len(f["sequence"]) == len(f["time"]) == len(f["viterbi_state"]) == n_rows
        assert f["probs"].shape == (n_rows, 3)
        np.testing.assert_allclose(f["probs"].sum(-1), 1.0, atol=1e-6)
        assert set(np.unique(f["guide_state"])) <= {0, 1, 2}
        assert sorted(np.unique(f["sequence"])) == sorted(f"unit-{s}" for s in range(len(LENGTHS)))


def test_npz_training_data_with_more_label_classes_than_states(tmp_path):
    rng = np.random.default_rng(0)
    arrays = {}
    for s, T in enumerate(LENGTHS):
        z = rng.integers(0, 4, T)
        arrays[f"x_{s}"], arrays[f"z_{s}"] = rng.normal(size=(T, 2)) + z[:, None], z
    np.savez(tmp_path / "d.npz", **arrays)
    cfg = compose_config(["data=npz", f"data.path={tmp_path / 'd.npz'}", "data.n_states=2", "data.val_fraction=0",
                          "data.features=[raw,diff]", *FAST])
    metrics = train(cfg, tmp_path / "run")
    assert 0 < metrics["val_accuracy"] <= 1 and metrics["val_ari"] <= 1
    scores = run(parse_args([f"checkpoint={tmp_path / 'run'}", f"input={tmp_path / 'd.npz'}",
                             f"output={tmp_path / 'o.csv'}"]))
    assert set(scores) >= {"viterbi_accuracy", "viterbi_nmi", "guide_ari"}
    rows = read_rows(tmp_path / "o.csv")
    assert len(rows) == sum(LENGTHS) and list(rows[0])[:2] == ["sequence", "t"]


def test_decode_cli_bad_arguments_are_one_line_exit_2(tmp_path):
    proc = run_cli("pyro_dssm.decode", [f"checkpoint={tmp_path / 'nope.pt'}", "input=a.csv", "output=b.csv"])
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: checkpoint")
    proc = run_cli("pyro_dssm.decode", ["checkpoint=a", "input=a.csv", "output=b.csv", "seed=1"])
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: expected arguments key=value with key in ('checkpoint', 'input', 'output', 'lag', 'follow', 'poll', "
        "'idle', 'plot', 'plot_states'), got 'seed=1'"]
    with pytest.raises(ValueError, match="output='b.txt'"):
        parse_args(["checkpoint=a", "input=b", "output=b.txt"])
    with pytest.raises(ValueError, match=r"missing input=\.\.\. \(required\)"):
        parse_args(["checkpoint=a", "output=b.csv"])
    with pytest.raises(ValueError, match="'plot', 'plot_states'\\), got 'seed=1'"):
        parse_args(["checkpoint=a", "input=b", "output=b.csv", "seed=1"])
    with pytest.raises(ValueError, match="plot_states must be one of"):
        parse_args(["checkpoint=a", "input=b", "output=b.csv", "plot_states=best"])
    # values are file names as typed: no number or interpolation parsing
    args = parse_args([f"checkpoint={tmp_path}/1e3", "input=007", f"output={tmp_path}/${{x}}.csv"])
    assert (args.checkpoint, args.input, args.output) == (f"{tmp_path}/1e3", "007", f"{tmp_path}/${{x}}.csv")


@pytest.mark.skipif(not (SHARED_DATA / "bee").is_dir(), reason="shared bee data not present at ../shared/data/bee")
def test_bee_csv_one_epoch_finds_the_dance_phases(tmp_path):
    """One epoch on the features of benchmarks/bee.py; the largest class is 41% of the steps, a random
    init scores about that, and 5 full runs score 0.86-0.88 (benchmarks/RESULTS.md)."""
    bee = SHARED_DATA / "bee" / "bee.csv"
    cfg = compose_config(["data=csv", f"data.path={bee}", "data.time_column=t", "data.label_column=label",
                          "data.val_fraction=0", "data.window=100", "data.stride=100", "data.features=[raw,absdiff]",
                          "data.smooth=9", "trainer.n_epochs=1", "trainer.batch_size=8",
                          "trainer.guide_warmup_steps=5", "trainer.figure_every=0", "trainer.device=cpu"])
    metrics = train(cfg, tmp_path / "run")
    assert metrics["val_accuracy"] >= 0.75, metrics["val_accuracy"]  # measured 0.85
    # validation is every sequence, whole: decoding the file gives the guide states it scored
    run(parse_args([f"checkpoint={tmp_path / 'run'}", f"input={bee}", f"output={tmp_path / 'o.csv'}"]))
    rows = read_rows(tmp_path / "o.csv")
    accuracy = max(sum(dict(zip("012", perm))[r["guide_state"]] == r["label"] for r in rows) / len(rows)
                   for perm in itertools.permutations(["waggle", "turn_left", "turn_right"]))
    assert metrics["val_accuracy"] == pytest.approx(accuracy, abs=1e-9)


def test_a_run_directory_resolves_to_best_for_decoding_and_last_for_resuming(tmp_path):
    from pyro_dssm.io.checkpoint import resolve_checkpoint

    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, prefer="best") == tmp_path / "checkpoints" / "last.pt"  # no best.pt yet
    (tmp_path / "checkpoints" / "best.pt").write_bytes(b"x")
    assert resolve_checkpoint(tmp_path, prefer="best") == tmp_path / "checkpoints" / "best.pt"
    assert resolve_checkpoint(tmp_path, prefer="last") == tmp_path / "checkpoints" / "last.pt"
    best = tmp_path / "checkpoints" / "best.pt"
    assert resolve_checkpoint(best, prefer="last") == best  # a file is taken as given
    (tmp_path / "checkpoints" / "last.pt").unlink()
    with pytest.raises(ValueError, match=r"trainer.resume='.*' is a directory without checkpoints/last.pt$"):
        resolve_checkpoint(tmp_path, prefer="last", key="trainer.resume")  # never rewinds to best.pt
    with pytest.raises(ValueError, match="checkpoint='.*nope.pt' does not exist"):
        resolve_checkpoint(tmp_path / "nope.pt", prefer="best")
    with pytest.raises(ValueError, match="prefer must be one of"):
        resolve_checkpoint(tmp_path, prefer="first")
