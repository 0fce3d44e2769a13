"""Input hygiene through the CLI: files as spreadsheets save them, overflowing values, run
directories that cannot be created or already hold a run.

Each case either works or ends with exit code 2 and one line on stderr naming the problem, with an
existing run directory left byte-identical (:func:`tests.test_errors.snapshot`). Every metrics.json
written must be standard JSON: :func:`strict_load` refuses the ``NaN`` / ``Infinity`` Python writes by default.
"""

import json
import math
import shutil

import numpy as np
import pytest

from pyro_dssm.data.features import Preprocessing
from pyro_dssm.data.readers import read_csv
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.train import train

from .helpers import compose_config
from .test_errors import FAST, assert_one_line, csv_data, csv_rows, snapshot, write_csv


def strict_load(path):
    """json.load that refuses NaN, Infinity and -Infinity (not JSON, though Python reads and writes them)."""
    def refuse(name):
        raise ValueError(f"{path} holds {name}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


@pytest.fixture(scope="module")
def previous_run(tmp_path_factory):
    """A finished run (checkpoints/, metrics.json) that a refused command must leave as it was."""
    d = tmp_path_factory.mktemp("hygiene")
    good = write_csv(d / "good.csv", csv_rows())
    train(compose_config([*csv_data(good), *FAST]), d / "run")
    return d / "run"


def train_cli(cli, run_dir, args):
    return cli.run("pyro_dssm.train", [*FAST, *args, f"hydra.run.dir={run_dir}"])


def test_csv_utf8_with_byte_order_mark_trains(cli, tmp_path):
    # Excel's "CSV UTF-8" writes EF BB BF first: read as plain utf-8, the first column is '\ufeffsequence'
    path = tmp_path / "bom.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(",".join(r) + "\n" for r in csv_rows()).encode())
    proc = train_cli(cli, tmp_path / "run", csv_data(path))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert math.isfinite(strict_load(tmp_path / "run" / "metrics.json")["final_loss"])


def test_semicolon_separated_csv_trains_and_the_log_says_so(cli, tmp_path):
    # where the decimal mark is a comma, spreadsheets separate fields with ';'
    path = tmp_path / "semicolon.csv"
    path.write_text("".join(";".join(r) + "\n" for r in csv_rows()))
    proc = train_cli(cli, tmp_path / "run", csv_data(path))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert "';'-separated" in proc.stdout
    comma = read_csv(write_csv(tmp_path / "comma.csv", csv_rows()), "sequence", "t")
    semicolon = read_csv(path, "sequence", "t")
    assert semicolon.delimiter == ";" and comma.delimiter == ","
    for a, b in zip(comma.x, semicolon.x):
        np.testing.assert_array_equal(a, b)


def test_tab_separated_csv_reads_as_its_cells(tmp_path):
    path = tmp_path / "tab.csv"
    path.write_text("id\tt\tx;y\ta,b\n" "s\t1\t0.5\t2\n" "s\t0\t-1\t3e2\n")  # ';' and ',' inside names
    seqs = read_csv(path, "id", "t")
    assert seqs.delimiter == "\t" and seqs.feature_names == ["x;y", "a,b"]
    np.testing.assert_array_equal(seqs.x[0], [[-1.0, 300.0], [0.5, 2.0]])  # ordered by t, by hand


def test_row_with_more_fields_than_the_header_names_its_line(cli, previous_run, tmp_path):
    rows = csv_rows()
    rows[7] = rows[7] + ["0.25"]  # row 7 = sequence b, t=0: line 8 of the file
    path = write_csv(tmp_path / "extra.csv", rows)
    run_dir = tmp_path / "run"
    shutil.copytree(previous_run, run_dir)
    before = snapshot(run_dir)
    proc = train_cli(cli, run_dir, csv_data(path))
    assert_one_line(proc, 2, ["extra.csv", "line 8", "6 fields", "header has 5"])
    assert snapshot(run_dir) == before


def test_short_row_after_a_blank_line_is_named_by_its_line_in_the_file(tmp_path):
    lines = ["sequence,t,acc_x", "a,0,1.0", "", "a,1,2.0", "a,2", "a,3,4.0"]  # line 5 lacks a field
    (tmp_path / "short_row.csv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ValueError, match=r"short_row.csv line 5: 2 fields, but the header has 3"):
        read_csv(tmp_path / "short_row.csv", "sequence", "t")
    del lines[4]
    (tmp_path / "ok.csv").write_text("\n".join(lines) + "\n")  # the blank line alone is skipped
    np.testing.assert_array_equal(read_csv(tmp_path / "ok.csv", "sequence", "t").x[0], [[1.0], [2.0], [4.0]])


@pytest.mark.parametrize("value, features, name", [("1e308", "[raw]", "'acc_y'"),
                                                    ("-1.7e308", "[raw,diff]", "'acc_y'")])
def test_features_that_overflow_are_refused_naming_them(cli, previous_run, tmp_path, value, features, name):
    path = write_csv(tmp_path / "huge.csv", csv_rows({(r, "acc_y"): value for r in (2, 9, 14)}))
    run_dir = tmp_path / "run"
    shutil.copytree(previous_run, run_dir)
    before = snapshot(run_dir)
    proc = train_cli(cli, run_dir, [*csv_data(path), f"data.features={features}"])
    assert_one_line(proc, 2, [f"feature {name}", "overflows", "not finite"])
    assert snapshot(run_dir) == before


def test_a_difference_that_overflows_names_the_derived_feature():
    x = np.array([[1.0, 1e308], [2.0, -1e308], [3.0, 0.0]])  # finite values, but a step of -2e308
    with pytest.raises(ValueError, match=r"feature 'diff\(b\)' overflows"):
        Preprocessing.fit([x], ["diff"], ["a", "b"])
    # the variance squares: by hand, (1e155)^2 = 1e310 > 1.8e308, the largest double, while 1e153 passes
    Preprocessing.fit([x[:, :1], 1e153 * x[:, :1]], ["raw"], ["a"])
    with pytest.raises(ValueError, match=r"feature 'absdiff\(a\)' overflows.*statistics"):
        Preprocessing.fit([x[:, :1], 1e155 * x[:, :1]], ["absdiff", "raw"], ["a"])
    prep = Preprocessing.fit([np.array([[0.0], [1e-6], [2e-6]])], ["raw"], ["a"])  # std 8e-7
    with pytest.raises(ValueError, match=r"feature 'a' overflows.*float32"):
        prep.apply(np.array([[1e35]]))  # finite in float64, beyond float32 once standardised


def test_metrics_json_is_strict_json_with_null_for_non_finite(tmp_path):
    tracker = Tracker(tmp_path, enabled=True)
    tracker.finish({"seed": 0}, {"val_accuracy": float("nan"), "val_elbo_per_step": -float("inf"), "final_loss": 1.5,
                                 "history": [{"loss": float("inf"), "epoch": 1}]})
    written = strict_load(tmp_path / "metrics.json")
    assert written == {"val_accuracy": None, "val_elbo_per_step": None, "final_loss": 1.5,
                       "history": [{"loss": None, "epoch": 1}]}


@pytest.mark.parametrize("module", ["pyro_dssm.train", "pyro_dssm.decode"])
def test_directory_that_cannot_be_created_is_one_line(cli, previous_run, tmp_path, module):
    # /proc refuses mkdir even to root, for whom os.access says "writable"
    if module == "pyro_dssm.train":
        proc = cli.run(module, [*csv_data(tmp_path / "unused.csv"), *FAST, "hydra.run.dir=/proc/pyro_dssm/run"])
        texts = ["hydra.run.dir", "/proc/pyro_dssm/run"]
    else:
        good = write_csv(tmp_path / "good.csv", csv_rows())
        proc = cli.run(module, [f"checkpoint={previous_run}", f"input={good}", "output=/proc/pyro_dssm/states.csv"])
        texts = ["output=", "/proc/pyro_dssm/states.csv"]
    assert_one_line(proc, 2, [*texts, "cannot be created"])


def test_existing_run_is_not_replaced_without_resume_or_overwrite(cli, previous_run, tmp_path):
    good = write_csv(tmp_path / "good.csv", csv_rows())
    run_dir = tmp_path / "run"
    shutil.copytree(previous_run, run_dir)
    before = snapshot(run_dir)
    proc = train_cli(cli, run_dir, csv_data(good))
    assert_one_line(proc, 2, [str(run_dir), "already holds a run", f"trainer.resume={run_dir}", "overwrite=true"])
    assert snapshot(run_dir) == before
    proc = train_cli(cli, run_dir, [*csv_data(good), "overwrite=maybe"])
    assert_one_line(proc, 2, ["overwrite must be true or false", "'maybe'"])
    assert snapshot(run_dir) == before
    proc = train_cli(cli, run_dir, [*csv_data(good), "overwrite=true"])
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    after = snapshot(run_dir)
    assert after["checkpoints/last.pt"] != before["checkpoints/last.pt"]  # replaced, as asked
    assert strict_load(run_dir / "metrics.json")["final_loss"] is not None


def test_run_dir_with_only_a_failed_start_is_reused(cli, tmp_path):
    # a directory without checkpoints/ or metrics.json holds no results to lose
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / "train.log").write_text("a run that stopped before its first checkpoint\n")
    proc = train_cli(cli, run_dir, csv_data(write_csv(tmp_path / "good.csv", csv_rows())))
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr
    assert math.isfinite(strict_load(run_dir / "metrics.json")["final_loss"])
