import itertools

import numpy as np
import pytest
import torch

from pyro_dssm.evaluation.metrics import clustering_scores, confusion_matrix, hungarian_accuracy, hungarian_match


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
def test_rectangular_accuracy_matches_brute_force_and_scores_ignore_masked_steps(seed, n_true, n_pred):
    rng = np.random.default_rng(seed)
    true = rng.integers(0, n_true, size=(3, 30))
    pred = np.where(rng.random((3, 30)) < 0.7, true % n_pred, rng.integers(0, n_pred, size=(3, 30)))
    mask = rng.random((3, 30)) < 0.8
    scores = clustering_scores(true, pred, n_pred, mask)
    t, p = true[mask], pred[mask]
    # masked steps count nowhere: the same scores as on the valid steps alone, in any order
    order = rng.permutation(t.size)
    assert clustering_scores(t[order], p[order], n_pred) == pytest.approx(scores)
    # NMI and ARI are symmetric and blind to the states' names
    relabelled = rng.permutation(n_pred)[p]
    assert clustering_scores(t, relabelled, n_pred) == pytest.approx(scores)
    swapped = clustering_scores(p, t, max(n_true, n_pred))
    assert (swapped["nmi"], swapped["ari"]) == pytest.approx((scores["nmi"], scores["ari"]))
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


def test_nmi_and_ari_of_a_small_confusion_matrix_by_hand():
    """true 000111 vs predicted 001122: confusion matrix [[2, 1, 0], [0, 1, 2]], n = 6.

    ARI: sum_ij C(n_ij, 2) = 1 + 1 = 2; rows sum_i C(3, 2) = 6; columns 3 C(2, 2) = 3;
    expected index 6 * 3 / C(6, 2) = 1.2; ARI = (2 - 1.2) / ((6 + 3) / 2 - 1.2) = 8 / 33.
    NMI: the two cells of 2 give p_ij log(p_ij / (p_i p_j)) = 1/3 log 2 each, the cells of 1
    give log 1 = 0: I = 2/3 log 2; H(true) = log 2, H(pred) = log 3;
    NMI = I / ((H(true) + H(pred)) / 2) = 4/3 log 2 / log 6.
    """
    true, pred = [0, 0, 0, 1, 1, 1], [0, 0, 1, 1, 2, 2]
    assert confusion_matrix(true, pred, 2, 3).tolist() == [[2, 1, 0], [0, 1, 2]]
    scores = clustering_scores(true, pred, 3)
    assert scores["ari"] == pytest.approx(8 / 33, rel=1e-12)
    assert scores["nmi"] == pytest.approx(4 / 3 * np.log(2) / np.log(6), rel=1e-12)
    assert scores["accuracy"] == pytest.approx(4 / 6)


@pytest.mark.parametrize("true, pred, nmi, ari", [
    ([0, 0, 0], [1, 1, 1], 1.0, 1.0),  # neither labelling splits the data: identical partitions
    ([0, 0, 0], [0, 1, 2], 0.0, 0.0),  # I = 0; ARI: no pair together in both, expected 0 -> 0 / (3/2 - 0)
    ([0, 1, 2], [2, 0, 1], 1.0, 1.0),  # a relabelling
    ([1], [0], 1.0, 1.0),  # one step: one partition
])
def test_degenerate_partitions_by_hand(true, pred, nmi, ari):
    scores = clustering_scores(true, pred, 3)
    assert (scores["nmi"], scores["ari"]) == pytest.approx((nmi, ari))


def test_unlabelled_steps_are_not_scored():
    true = torch.tensor([[0, 1, -1, 1]])
    pred = torch.tensor([[2, 0, 1, 0]])
    labelled = true >= 0
    assert clustering_scores(true, pred, 3, labelled) == {"accuracy": 1.0, "nmi": 1.0, "ari": 1.0}
