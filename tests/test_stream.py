"""Streaming decode (``python -m pyro_dssm.decode input=- | follow=true``, pyro_dssm.stream): the rows it writes as
CSV arrives, against FittedDSSM.filter over each whole sequence (one pass), and its one-line errors."""

import csv
import io
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from pyro_dssm import online, stream
from pyro_dssm.decode import main
from pyro_dssm.fitted import FittedDSSM
from pyro_dssm.io.checkpoint import load_checkpoint, save_checkpoint
from pyro_dssm.train import train

from .helpers import REPO, cli_env, compose_config
from .test_decode import FAST, csv_overrides, write_csv

K = 3
COLUMNS = ["unit", "seconds", "acc_x", "acc_y", "note"]  # "note": a column the model does not read
MEANS = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]])  # the states of test_decode.write_csv


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A model trained in-process on test_decode's CSV (3 states), with ``diff`` features so that the carry holds
    the previous raw row."""
    tmp = tmp_path_factory.mktemp("stream")
    write_csv(tmp / "train.csv", labels=False)
    train(compose_config([*csv_overrides(tmp / "train.csv", labels=False), *FAST, "data.features=[raw,diff]"]),
          tmp / "run")
    return tmp / "run"


@pytest.fixture(scope="module")
def fitted(run_dir):
    return FittedDSSM.load(run_dir)


def sequences(lengths=(25, 18), seed=3):
    """{id: (T, 2) rows}: regimes of the training states, so the filter has something to find."""
    rng = np.random.default_rng(seed)
    out = {}
    for s, T in enumerate(lengths):
        z = np.repeat(rng.integers(3, size=T // 6 + 1), 6)[:T]
        out[f"unit-{s}"] = MEANS[z] + 0.5 * rng.standard_normal((T, 2))
    return out


def interleaved(seqs, seed=4):
    """CSV lines (header first): the rows of all sequences, merged in a random order that keeps each in time order."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(np.concatenate([np.full(len(x), name) for name, x in seqs.items()]))
    step = dict.fromkeys(seqs, 0)
    lines = [",".join(COLUMNS)]
    for name in order:
        t = step[name]
        step[name] += 1
        lines.append(f"{name},{t * 0.5},{seqs[name][t, 0]:.6f},{seqs[name][t, 1]:.6f},x")
    return [line + "\n" for line in lines]


def rounded(seqs):
    """The sequences as the CSV writes them (6 decimals), for the oracle."""
    return {name: np.round(x, 6) for name, x in seqs.items()}


def parse(text):
    """Output CSV -> header, {id: (times, states, probs (T, K))}."""
    reader = csv.reader(io.StringIO(text))
    header = next(reader)
    out = {}
    for row in reader:
        times, states, probs = out.setdefault(row[0], ([], [], []))
        times.append(float(row[1]))
        states.append(int(row[2]))
        probs.append([float(v) for v in row[3:]])
    return header, {k: (np.array(t), np.array(s), np.array(p)) for k, (t, s, p) in out.items()}


def check_rows(decoded, expected):
    """Each sequence's rows: in time order, states the argmax, probabilities as ``expected[id]`` (T, K) to 1e-5."""
    assert sorted(decoded) == sorted(expected)
    for name, want in expected.items():
        times, states, probs = decoded[name]
        np.testing.assert_array_equal(times, 0.5 * np.arange(len(want)))
        np.testing.assert_allclose(probs, want, atol=1e-5, err_msg=name)
        np.testing.assert_array_equal(states, want.argmax(-1))


def start(args):
    """``python -m pyro_dssm.decode args`` as a real process, its standard input a pipe; stdout lines to a queue."""
    proc = subprocess.Popen([sys.executable, "-m", "pyro_dssm.decode", *map(str, args)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=cli_env())
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout] + [lines.put(None)], daemon=True).start()
    return proc, lines


def take(lines, n, timeout=60):
    """The next n lines of the queue (the process start included in the timeout)."""
    return [lines.get(timeout=timeout) for _ in range(n)]


def test_stdin_streams_each_row_as_it_arrives_equal_to_one_pass(run_dir, fitted):
    seqs = sequences()
    lines = interleaved(seqs)
    proc, out = start([f"checkpoint={run_dir}", "input=-", "output=-"])
    # the header, 10 rows and half a row: the 10 rows come out while standard input is still open
    proc.stdin.write("".join(lines[:11]) + lines[11][:7])
    proc.stdin.flush()
    first = take(out, 11)
    assert first[0].strip().split(",") == ["unit", "seconds", "filter_state"] + [f"p_{k}" for k in range(K)]
    time.sleep(0.3)
    assert out.empty()  # the half row waits for its newline
    proc.stdin.write(lines[11][7:] + "".join(lines[12:]))
    proc.stdin.close()
    rest = take(out, len(lines) - 11 + 1)  # the remaining rows, then the end
    assert rest[-1] is None and proc.wait(60) == 0, proc.stderr.read()[-2000:]
    _, decoded = parse("".join(first + rest[:-1]))
    check_rows(decoded, {name: fitted.filter(x)[0] for name, x in rounded(seqs).items()})


def test_lag_rows_come_lag_behind_and_sigterm_flushes_the_rest(run_dir, fitted):
    lag, seqs = 3, sequences()
    lines = interleaved(seqs)
    proc, out = start([f"checkpoint={run_dir}", "input=-", "output=-", f"lag={lag}"])
    proc.stdin.write("".join(lines))  # standard input stays open: the stream goes on
    proc.stdin.flush()
    first = take(out, 1 + len(lines) - 1 - lag * len(seqs))  # all but each sequence's last L rows
    time.sleep(0.3)
    assert out.empty()
    proc.send_signal(signal.SIGTERM)
    rest = take(out, lag * len(seqs) + 1)  # flushed, then the end
    assert rest[-1] is None and proc.wait(60) == 0, proc.stderr.read()[-2000:]
    proc.stdin.close()
    _, decoded = parse("".join(first + rest[:-1]))
    expected = {}
    for name, x in rounded(seqs).items():
        probs, carry = fitted.filter(x, lag=lag)
        expected[name] = np.concatenate([probs[lag:], fitted.flush(carry)])
    check_rows(decoded, expected)


def test_follow_a_growing_file_to_a_file_ends_when_idle(run_dir, fitted, tmp_path):
    """The file grows in pieces written by another thread, one ending in half a line; the output file grows with
    it and ends with the rows of one pass."""
    seqs = sequences(seed=5)
    lines = interleaved(seqs, seed=6)
    source, target = tmp_path / "live.csv", tmp_path / "states.csv"
    source.write_text("")  # exists, still empty

    def n_written():
        return len(target.read_text().splitlines()) if target.exists() else 0

    def wait_for(n, timeout=30):
        deadline = time.monotonic() + timeout
        while n_written() < n and time.monotonic() < deadline:
            time.sleep(0.02)
        return n_written()

    seen = []

    def writer():
        with source.open("a") as f:
            for piece, n_lines in (("".join(lines[:8]), 8), ("".join(lines[8:20]) + lines[20][:5], 20)):
                f.write(piece)
                f.flush()
                seen.append(wait_for(n_lines))  # written as the input grows, not at the end
            time.sleep(0.3)
            seen.append(n_written())  # still without the half line
            f.write(lines[20][5:] + "".join(lines[21:]))

    thread = threading.Thread(target=writer)
    thread.start()
    code = main([f"checkpoint={run_dir}", f"input={source}", f"output={target}", "follow=true", "poll=0.05",
                 "idle=1.5"])
    thread.join()
    assert code == 0 and seen == [8, 20, 20]
    _, decoded = parse(target.read_text())
    check_rows(decoded, {name: fitted.filter(x)[0] for name, x in rounded(seqs).items()})


def test_one_filter_call_per_sequence_and_batch(run_dir, fitted, monkeypatch):
    calls = []
    real = online.filter_chunk
    monkeypatch.setattr(online, "filter_chunk", lambda model, prep, x, *a, **kw: calls.append(len(x)) or real(
        model, prep, x, *a, **kw))
    seqs = sequences()
    lines = [line.rstrip("\n") for line in interleaved(seqs)]
    header = stream.parse_header(lines[0], stream.csv_settings(fitted.payload, "-"), fitted.feature_names, "-")
    decoder = stream.StreamDecoder(fitted.model, fitted.preprocessing, header, 0, "-")
    rows, error = decoder.parse(lines[1:], 2)
    assert error is None and len(decoder.step(rows)) == len(rows)
    assert sorted(calls) == sorted(len(x) for x in seqs.values())


def test_a_time_going_back_is_one_line_exit_2_after_the_rows_before(run_dir):
    text = "unit,seconds,acc_x,acc_y\na,0,0.1,0.2\nb,0,3,0\na,1,0.1,0.3\na,0.5,0,0\nb,1,3,0.1\n"
    proc = subprocess.run([sys.executable, "-m", "pyro_dssm.decode", f"checkpoint={run_dir}", "input=-", "output=-"],
                          input=text, capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        "error: input='-' line 5: sequence 'a' goes back in time, seconds='0.5' after '1'; "
        "rows must come in time order per sequence"]
    assert [row[:2] for row in csv.reader(io.StringIO(proc.stdout))] == [
        ["unit", "seconds"], ["a", "0"], ["b", "0"], ["a", "1"]]


@pytest.fixture
def stdin_from(monkeypatch, tmp_path):
    """Make standard input the given text (a file: the reader takes its descriptor)."""
    files = []

    def feed(text):
        (tmp_path / "stdin.csv").write_text(text)
        files.append(open(tmp_path / "stdin.csv"))
        monkeypatch.setattr(sys, "stdin", files[-1])
    yield feed
    for f in files:
        f.close()


def one_error(capsys, argv):
    """``main(argv)`` must exit 2 with one line on stderr; returns that line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: "), (code, err)
    return err[0]


@pytest.mark.parametrize("args, message", [
    (["input=-", "output=-", "follow=true"], "follow=true follows a growing file; input=- "),
    (["input=-", "output=-", "lag=-1"], "lag must be an integer >= 0 (steps of lookahead), got -1"),
    (["input=-", "output=-", "idle=0"], "idle must be a number of seconds > 0, got 0.0"),
    (["input=-", "output=o.npz"], "output='o.npz': streaming writes CSV rows"),
    (["input=-", "output=-", "plot=p.png"], "plot='p.png' draws whole sequences"),
    (["input=a.csv", "output=o.csv", "lag=2"], "lag=2 is for streaming decoding (input=- or follow=true)"),
    (["input=a.csv", "output=-"], "output='-' is for streaming decoding"),
    (["input=nope.csv", "output=-", "follow=true"], "input='nope.csv' does not exist; follow=true needs a file"),
])
def test_bad_arguments_are_one_line_exit_2(capsys, tmp_path, args, message):
    assert message in one_error(capsys, ["checkpoint=x", *args])


@pytest.mark.parametrize("text, message", [
    ("id,seconds,acc_x,acc_y\na,0,1,2\n", "data.id_column='unit' of the model is not a column of input='-' "
                                          "(header: ['id', 'seconds', 'acc_x', 'acc_y'])"),
    ("unit,seconds,acc_x\na,0,1\n", "input='-' lacks the feature column(s) ['acc_y'] the model reads"),
    ("unit;seconds;acc_x;acc_y\na;0;1;2\na;1;1;x\n", "input='-' line 3: column 'acc_y' must hold a number"),
    ("unit,seconds,acc_x,acc_y\na,0,1,2,3\n", "input='-' line 2: 5 fields, but the header has 4"),
    ("\n\n", "input='-' ended without a header line"),
])
def test_bad_input_is_one_line_exit_2(run_dir, capsys, stdin_from, text, message):
    stdin_from(text)
    assert message in one_error(capsys, [f"checkpoint={run_dir}", "input=-", "output=-"])


def test_features_that_read_ahead_are_refused(run_dir, tmp_path, capsys, stdin_from):
    """A model=motion style transform (a centred window of 5 steps) cannot be filtered: the reason, exit 2."""
    payload = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    payload.pop("format_version")
    payload["preprocessing"].update(features=["window_mean", "window_std"], window=5)  # D stays 2 x 2
    save_checkpoint(tmp_path / "motion.pt", payload)
    stdin_from("unit,seconds,acc_x,acc_y\na,0,1,2\n")
    assert "filter needs causal features (that read no later rows); window_mean (data.feature_window=5)" in (
        one_error(capsys, [f"checkpoint={tmp_path / 'motion.pt'}", "input=-", "output=-"]))


def test_missing_cells_pass_as_nan(run_dir, fitted, capsys, stdin_from):
    """A row with every cell missing carries no evidence: its filtered marginals are the prediction
    sum_j alpha_{t-1}(j) A_jk (oracle by hand); a row with one cell missing is a distribution."""
    x = sequences(lengths=(12,))["unit-0"].round(6)
    cells = [[f"{v:.6f}" for v in row] for row in x]
    cells[5] = ["", "NaN"]
    cells[8][1] = ""
    text = "unit,seconds,acc_x,acc_y\n" + "".join(f"a,{t},{c[0]},{c[1]}\n" for t, c in enumerate(cells))
    stdin_from(text)
    assert main([f"checkpoint={run_dir}", "input=-", "output=-"]) == 0
    _, decoded = parse(capsys.readouterr().out)
    probs = decoded["a"][2]
    assert probs.shape == (12, K) and np.isfinite(probs).all()
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    np.testing.assert_allclose(probs[:5], fitted.filter(x[:5])[0], atol=1e-5)
    A = np.exp(fitted.model.transition_parameters()[1].detach().double().numpy())
    np.testing.assert_allclose(probs[5], probs[4] @ A, atol=1e-5)
