"""CSV / NPZ readers, features, standardisation, splits and windows against hand-built data."""

import csv

import numpy as np
import pytest
import torch

from pyro_dssm.data.files import FileDataConfig, load_file_data, pad_sequences, split_indices, window_starts
from pyro_dssm.data.npz import read_npz
from pyro_dssm.data.readers import read_csv
from pyro_dssm.data.features import Preprocessing, add_features, moving_average

from .conftest import SHARED_DATA

LENGTHS = {"a": 1, "b": 7, "c": 4}  # a length-1 sequence and one of length T_max = 7
CLASSES = ["rest", "run", "walk"]


def ragged(seed=0, D=2):
    """Sequences name -> (x (T, D), labels (T,) of class names, "" = unlabelled)."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, T in LENGTHS.items():
        labels = [CLASSES[k] for k in rng.integers(0, 3, T)]
        if name == "c":
            labels[1] = ""  # one unlabelled step
        out[name] = (np.round(rng.normal(size=(T, D)), 4), labels)
    return out


def write_long_csv(path, seqs, shuffle_seed=1):
    """Rows in random order; the time column restores the order."""
    rows = [(name, t, *x[t], z[t]) for name, (x, z) in seqs.items() for t in range(len(x))]
    order = np.random.default_rng(shuffle_seed).permutation(len(rows))
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "time", "f0", "f1", "note", "state"])
        for i in order:
            name, t, x0, x1, z = rows[i]
            w.writerow([name, t, x0, x1, "text", z])


def test_csv_round_trip_ragged_with_string_labels(tmp_path):
    seqs = ragged()
    write_long_csv(tmp_path / "d.csv", seqs)
    got = read_csv(tmp_path / "d.csv", "id", "time", None, "state")
    assert got.feature_names == ["f0", "f1"]  # the text column "note" is not a feature
    assert got.label_names == CLASSES
    assert sorted(got.names) == sorted(LENGTHS)
    for name, x, t, z in zip(got.names, got.x, got.times, got.labels):
        want_x, want_z = seqs[name]
        np.testing.assert_array_equal(x, want_x)
        assert t.tolist() == list(range(LENGTHS[name]))
        assert [CLASSES[k] if k >= 0 else "" for k in z] == want_z


def test_padded_data_masks_and_standardises_with_training_statistics(tmp_path):
    seqs = ragged()
    write_long_csv(tmp_path / "d.csv", seqs)
    cfg = FileDataConfig(path=str(tmp_path / "d.csv"), id_column="id", time_column="time", label_column="state",
                         val_fraction=0)
    data = load_file_data(cfg, seed=0)
    steps = np.concatenate([x for x, _ in seqs.values()])
    mean, std = steps.mean(0), steps.std(0)
    assert data.train.x.shape == (3, 7, 2)
    for i, name in enumerate(data.val_names):  # val_fraction 0: the training sequences, in file order
        x, z = seqs[name]
        T = len(x)
        assert int(data.train.lengths[i]) == T
        np.testing.assert_allclose(data.train.x[i, :T].numpy(), (x - mean) / std, rtol=1e-5, atol=1e-6)
        assert (data.train.x[i, T:] == 0).all()  # padding
        assert data.train.states[i, T:].eq(-1).all()
        assert [CLASSES[k] if k >= 0 else "" for k in data.train.states[i, :T].tolist()] == z
    assert int(data.train.label_mask.sum()) == sum(LENGTHS.values()) - 1  # the unlabelled step is not scored


@pytest.mark.parametrize("layout", ["per_sequence", "stacked"])
def test_npz_round_trip_ragged(tmp_path, layout):
    rng = np.random.default_rng(0)
    xs = {n: rng.normal(size=(T, 3)) for n, T in LENGTHS.items()}
    zs = {n: rng.integers(0, 2, T) for n, T in LENGTHS.items()}
    if layout == "per_sequence":
        np.savez(tmp_path / "d.npz", **{f"x_{n}": x for n, x in xs.items()}, **{f"z_{n}": z for n, z in zs.items()})
    else:
        full, lab = np.zeros((3, 7, 3)), np.full((3, 7), -1)
        for i, n in enumerate(LENGTHS):
            full[i, : LENGTHS[n]], lab[i, : LENGTHS[n]] = xs[n], zs[n]
        np.savez(tmp_path / "d.npz", x=full, z=lab, lengths=np.array(list(LENGTHS.values())))
    got = read_npz(tmp_path / "d.npz")
    assert len(got) == 3 and got.label_names == ["0", "1"]
    for x, z, n in zip(got.x, got.labels, LENGTHS):
        np.testing.assert_array_equal(x, xs[n])
        np.testing.assert_array_equal(z, zs[n])
    data = load_file_data(FileDataConfig(name="npz", path=str(tmp_path / "d.npz"), val_fraction=0), seed=0)
    assert data.train.lengths.tolist() == list(LENGTHS.values())
    assert data.train.mask.sum() == sum(LENGTHS.values())


def test_npz_without_labels_has_no_states(tmp_path):
    np.savez(tmp_path / "d.npz", np.zeros((2, 5, 1)) + np.arange(5)[:, None])
    data = load_file_data(FileDataConfig(name="npz", path=str(tmp_path / "d.npz"), val_fraction=0), seed=0)
    assert data.train.states is None and data.label_names == []


def test_integer_like_labels_sort_numerically(tmp_path):
    (tmp_path / "d.csv").write_text("id,v,z\n1,0.5,10\n1,0.1,2\n1,0.3,\n")
    got = read_csv(tmp_path / "d.csv", "id", label_column="z")
    assert got.label_names == ["2", "10"] and got.labels[0].tolist() == [1, 0, -1]
    assert got.feature_names == ["v"]


def test_diff_features_by_hand():
    x = np.array([[1.0, 0.0], [3.0, 1.0], [2.0, 5.0]])
    np.testing.assert_array_equal(add_features(x, ["raw", "diff"]),
                                  [[1, 0, 0, 0], [3, 1, 2, 1], [2, 5, -1, 4]])
    np.testing.assert_array_equal(add_features(x, ["absdiff"]), [[0, 0], [2, 1], [1, 4]])


def test_window_features_by_hand():
    """Mean and standard deviation over a centred window of 3 steps, the ends repeated: at t = 0 the window
    holds x_0, x_0, x_1; at t = 2 (the last) x_1, x_2, x_2."""
    x = np.array([[1.0, 0.0], [4.0, 2.0], [1.0, 2.0]])
    windows = [x[[0, 0, 1]], x[[0, 1, 2]], x[[1, 2, 2]]]
    np.testing.assert_allclose(add_features(x, ["window_mean"], window=3), [w.mean(0) for w in windows])
    np.testing.assert_allclose(add_features(x, ["window_std"], window=3), [w.std(0) for w in windows], atol=1e-7)
    assert add_features(np.full((4, 1), 7.0), ["window_std"], window=2).tolist() == [[0.0]] * 4  # never NaN


def test_window_features_need_a_window_and_keep_it_in_the_checkpoint(tmp_path):
    with pytest.raises(ValueError, match=r"need data.feature_window >= 2 .*got 1"):
        FileDataConfig(path="x.csv", features=["raw", "window_std"])
    prep = Preprocessing.fit([np.random.default_rng(0).normal(size=(20, 2))], ["window_mean", "window_std"],
                             ["a", "b"], window=5)
    assert prep.output_names() == ["window_mean(a)", "window_mean(b)", "window_std(a)", "window_std(b)"]
    torch.save(prep.state_dict(), tmp_path / "p.pt")
    back = Preprocessing.from_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    x = np.random.default_rng(1).normal(size=(9, 2))
    assert back.window == 5
    np.testing.assert_array_equal(back.apply(x), prep.apply(x))


def test_moving_average_by_hand():
    x = np.array([[1.0], [2.0], [6.0], [3.0]])
    np.testing.assert_allclose(moving_average(x, 3), [[4 / 3], [3], [11 / 3], [4]])  # edges repeat the end value
    np.testing.assert_allclose(moving_average(x, 2), [[1], [1.5], [4], [4.5]])
    assert moving_average(x, 1) is x


def test_preprocessing_survives_a_weights_only_round_trip(tmp_path):
    prep = Preprocessing.fit([np.arange(6.0).reshape(3, 2) ** 2], ["raw", "diff"], ["a", "b"], smooth=2)
    torch.save(prep.state_dict(), tmp_path / "p.pt")
    back = Preprocessing.from_state_dict(torch.load(tmp_path / "p.pt", weights_only=True))
    x = np.array([[1.0, 2.0], [0.0, 7.0]])
    np.testing.assert_array_equal(back.apply(x), prep.apply(x))


def test_split_by_whole_sequences_is_seeded_and_disjoint():
    a = split_indices(10, 0.3, seed=4)
    assert a == split_indices(10, 0.3, seed=4)
    train, val = a
    assert len(val) == 3 and sorted(train + val) == list(range(10))
    assert any(split_indices(10, 0.3, seed=s)[1] != val for s in range(5, 10))
    assert split_indices(3, 0.0, seed=0) == ([0, 1, 2], [0, 1, 2])
    with pytest.raises(ValueError, match="val_fraction"):
        split_indices(1, 0.5, seed=0)


def test_standardisation_uses_the_training_split_only(tmp_path):
    rows = ["id,v"] + [f"s{i},{i * 10 + t}" for i in range(5) for t in range(3)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    data = load_file_data(FileDataConfig(path=str(tmp_path / "d.csv"), id_column="id", val_fraction=0.4), seed=2)
    train_ids = sorted(set(range(5)) - {int(n[1:]) for n in data.val_names})
    train_values = np.array([i * 10 + t for i in train_ids for t in range(3)], dtype=float)
    assert data.preprocessing.mean == pytest.approx([train_values.mean()])
    assert data.preprocessing.std == pytest.approx([train_values.std()])
    assert len(data.val) == 2 and len(data.train) == 3


def test_windows_cover_every_step():
    assert window_starts(10, 4, 3) == [0, 3, 6]
    assert window_starts(11, 4, 3) == [0, 3, 6, 7]
    assert window_starts(3, 4, 2) == [0]
    for T, w, s in [(50, 7, 3), (23, 5, 5), (9, 9, 1)]:
        covered = set()
        for start in window_starts(T, w, s):
            covered |= set(range(start, min(start + w, T)))
        assert covered == set(range(T))


def test_windowed_training_split(tmp_path):
    rows = ["id,v"] + [f"s{i},{t}" for i in range(2) for t in range(10)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    cfg = FileDataConfig(path=str(tmp_path / "d.csv"), window=4, stride=3, val_fraction=0.5, id_column="id")
    data = load_file_data(cfg, seed=0)
    assert data.train.x.shape[:2] == (3, 4)  # windows at 0, 3, 6 of the one training sequence
    prep = data.preprocessing
    raw = data.train.x[:, :, 0].numpy() * prep.std[0] + prep.mean[0]
    np.testing.assert_allclose(raw, [[0, 1, 2, 3], [3, 4, 5, 6], [6, 7, 8, 9]], atol=1e-5)
    assert data.val.x.shape[:2] == (1, 10)  # validation stays whole


@pytest.mark.parametrize("kwargs, word", [
    ({"id_column": "nope"}, "id_column='nope'"),
    ({"time_column": "when"}, "time_column='when'"),
    ({"feature_columns": ["f0", "zz"]}, "zz"),
    ({"feature_columns": ["note"]}, "'note' must hold a finite number"),
    ({"label_column": "lab"}, "label_column='lab'"),
])
def test_bad_columns_name_the_value(tmp_path, kwargs, word):
    write_long_csv(tmp_path / "d.csv", ragged())
    args = {"id_column": "id", "time_column": "time", "feature_columns": None, "label_column": None, **kwargs}
    with pytest.raises(ValueError, match=word):
        read_csv(tmp_path / "d.csv", **args)


def test_duplicate_time_is_rejected(tmp_path):
    (tmp_path / "d.csv").write_text("id,t,v\na,0,1\na,0,2\n")
    with pytest.raises(ValueError, match="two rows at t=0"):
        read_csv(tmp_path / "d.csv", "id", "t")


@pytest.mark.parametrize("kwargs, word", [
    ({"path": None}, "data.path"), ({"features": ["raw", "cube"]}, "data.features"),
    ({"window": 1}, "data.window"), ({"val_fraction": 1.0}, "data.val_fraction"), ({"stride": 2}, "data.stride"),
    ({"smooth": 0}, "data.smooth"), ({"name": "parquet"}, "data.name"),
])
def test_bad_config_names_the_value(kwargs, word):
    with pytest.raises(ValueError, match=word):
        FileDataConfig(**{"path": "x.csv", **kwargs})


@pytest.mark.skipif(not (SHARED_DATA / "bee").is_dir(), reason="shared bee data not present at ../shared/data/bee")
def test_bee_csv_and_npz_agree():
    a = read_csv(SHARED_DATA / "bee" / "bee.csv", "sequence", "t", None, "label")
    b = read_npz(SHARED_DATA / "bee" / "bee.npz")
    assert a.names == b.names == ["seq4", "seq5", "seq6"]
    assert a.feature_names == ["x", "y", "theta"]
    for xa, xb, za, zb in zip(a.x, b.x, a.labels, b.labels):
        np.testing.assert_allclose(xa, xb, atol=1e-7)
        # csv names sort as turn_left, turn_right, waggle: the npz codes 0, 1, 2
        np.testing.assert_array_equal(za, zb)


def test_pad_sequences_by_hand():
    xs = [np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[5.0, 6.0]]), np.array([[7.0, 8.0], [9.0, 10.0], [11.0, 12.0]])]
    batch = pad_sequences(xs, [np.array([0, 1]), np.array([-1]), np.array([2, 2, 1])])
    assert batch.lengths.tolist() == [2, 1, 3]
    assert batch.x.dtype == torch.float32 and batch.x.tolist() == [
        [[1, 2], [3, 4], [0, 0]], [[5, 6], [0, 0], [0, 0]], [[7, 8], [9, 10], [11, 12]]]
    assert batch.states.dtype == torch.long and batch.states.tolist() == [[0, 1, -1], [-1, -1, -1], [2, 2, 1]]
    assert pad_sequences(xs).states is None
    assert pad_sequences(xs, [np.full(len(x), -1) for x in xs]).states is None  # no labelled step
