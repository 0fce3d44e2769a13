import itertools

import numpy as np
import pytest
import torch

from pyro_dssm.evaluation.metrics import adjusted_rand_index, clustering_scores, confusion_matrix, hungarian_accuracy, hungarian_match, normalized_mutual_info


@pytest.mark.parametrize("seed", range(5))
def test_any_relabelling_of_the_truth_scores_one(seed):
    g = torch.Generator().manual_seed(seed)
    true = torch.randint(0, 6, (4, 50), generator=g)
    perm = torch.randperm(6, generator=g)
    assert hungarian_accuracy(true, perm[true], 6) == 1.0


@pytest.mark.parametrize("seed", range(5))
def test_matches_brute_force_over_all_permutations(seed):
    rng = np.random.default_rng(seed)
    K = 4
    true = rng.integers(0, K, size=(3, 40))
    pred = np.where(rng.random((3, 40)) < 0.6, (true + 1) % K, rng.integers(0, K, size=(3, 40)))
    best = max((np.array(p)[pred] == true).mean() for p in itertools.permutations(range(K)))
    assert hungarian_accuracy(true, pred, K) == pytest.approx(best)


def test_mask_excludes_padding():
    true = torch.tensor([[0, 1, 1, -1]])
    pred = torch.tensor([[1, 0, 0, 1]])
    mask = torch.tensor([[True, True, True, False]])
    assert hungarian_accuracy(true, pred, 2, mask) == 1.0


def test_confusion_matrix_by_hand():
    cm = confusion_matrix([0, 0, 1, 2], [1, 1, 0, 2], 3, 3)
    assert cm.tolist() == [[0, 2, 0], [1, 0, 0], [0, 0, 1]]
    assert hungarian_match(cm).tolist() == [1, 0, 2]


def test_out_of_range_states_are_rejected():
    with pytest.raises(ValueError, match="predicted states"):
        hungarian_accuracy([0, 1], [0, 5], 2)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_true, n_pred", [(3, 3), (2, 4), (5, 3)])
def test_nmi_ari_and_rectangular_accuracy_match_sklearn_and_brute_force(seed, n_true, n_pred):
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_true, size=(3, 30))
    pred = np.where(rng.random((3, 30)) < 0.7, true % n_pred, rng.integers(0, n_pred, size=(3, 30)))
    mask = rng.random((3, 30)) < 0.8
    scores = clustering_scores(true, pred, n_pred, mask)
    t, p = true[mask], pred[mask]
    assert scores["nmi"] == pytest.approx(normalized_mutual_info_score(t, p))
    assert scores["ari"] == pytest.approx(adjusted_rand_score(t, p))
    # one-to-one matching on the smaller side, by brute force over injections
    small, large = sorted((n_true, n_pred))
    best = 0.0
    for image in itertools.permutations(range(large), small):
        if n_true <= n_pred:  # class i <- state image[i]
            best = max(best, sum(((t == i) & (p == j)).sum() for i, j in enumerate(image)) / t.size)
        else:  # state j -> class image[j]
            best = max(best, sum(((p == j) & (t == i)).sum() for j, i in enumerate(image)) / t.size)
    assert scores["accuracy"] == pytest.approx(best)
    assert hungarian_accuracy(true, pred, n_pred, mask) == pytest.approx(best)


def test_degenerate_partitions_score_like_sklearn():
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    for t, p in [([0, 0, 0], [1, 1, 1]), ([0, 0, 0], [0, 1, 2]), ([0, 1, 2], [2, 0, 1]), ([1], [0])]:
        cm = confusion_matrix(t, p, 3, 3)
        assert normalized_mutual_info(cm) == pytest.approx(normalized_mutual_info_score(t, p)), (t, p)
        assert adjusted_rand_index(cm) == pytest.approx(adjusted_rand_score(t, p)), (t, p)


def test_unlabelled_steps_are_not_scored():
    true = torch.tensor([[0, 1, -1, 1]])
    pred = torch.tensor([[2, 0, 1, 0]])
    labelled = true >= 0
    assert clustering_scores(true, pred, 3, labelled) == {"accuracy": 1.0, "nmi": 1.0, "ari": 1.0}
