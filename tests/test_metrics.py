import itertools

import numpy as np
import pytest
import torch

from pyro_dssm.metrics import confusion_matrix, hungarian_accuracy, hungarian_match


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
