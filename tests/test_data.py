import pytest
import torch

from pyro_dssm.data.sequences import lengths_to_mask
from pyro_dssm.data.synthetic import make_synthetic


def test_self_transition_rate_near_bias():
    data = make_synthetic(n_states=4, obs_dim=3, seq_len=200, n_train=300, n_val=10, transition_bias=0.8, seed=1)
    c = data.train.states
    stay = (c[:, 1:] == c[:, :-1]).float().mean().item()
    # 300 * 199 transitions: binomial std ~ 0.0013
    assert abs(stay - 0.8) < 0.01


def test_empirical_means_near_true_means():
    data = make_synthetic(n_states=3, obs_dim=4, seq_len=100, n_train=200, n_val=10, noise_std=0.5, seed=2)
    x, c = data.train.x, data.train.states
    for k in range(3):
        emp = x[c == k].mean(0)
        assert torch.allclose(emp, data.params.means[k], atol=0.02)
    resid = x - data.params.means[c]
    assert abs(resid.std().item() - 0.5) < 0.01


def test_train_and_val_share_parameters_and_seed_reproduces():
    a = make_synthetic(n_train=20, n_val=20, seed=3)
    b = make_synthetic(n_train=20, n_val=20, seed=3)
    assert torch.equal(a.train.x, b.train.x) and torch.equal(a.val.states, b.val.states)
    assert not torch.equal(a.train.x, a.val.x)
    # validation data are explained by the same means as training data
    resid = a.val.x - a.params.means[a.val.states]
    assert abs(resid.std().item() - 1.0) < 0.05
    assert a.train.x.shape == (20, 100, 10) and a.train.states.shape == (20, 100)
    assert torch.allclose(a.params.transition.sum(-1), torch.ones(5))


def test_other_seed_other_parameters():
    assert not torch.equal(make_synthetic(n_train=2, n_val=2, seed=0).params.means,
                           make_synthetic(n_train=2, n_val=2, seed=1).params.means)


@pytest.mark.parametrize(
    "kwargs, word",
    [({"n_states": 1}, "n_states"), ({"transition_bias": 1.0}, "transition_bias"),
     ({"noise_std": 0.0}, "noise_std"), ({"seq_len": 1}, "seq_len"), ({"obs_dim": 0}, "obs_dim")],
)
def test_bad_arguments_name_the_value(kwargs, word):
    with pytest.raises(ValueError, match=word):
        make_synthetic(**kwargs)


def test_lengths_to_mask():
    m = lengths_to_mask(torch.tensor([1, 3]), 3)
    assert m.tolist() == [[True, False, False], [True, True, True]]
