"""The training loop: its learning-rate schedule against the formula, the state's round trip, old checkpoints,
and the layering of the inference modules."""

import json
import math
import subprocess
import sys

import pytest
import torch
from torch import nn

from pyro_dssm.config import ModelConfig, TrainerConfig
from pyro_dssm.inference.faults import Interrupted, SkippedSteps
from pyro_dssm.inference.loop import SGDStep, train_epochs
from pyro_dssm.inference.schedule import exponential_decay
from pyro_dssm.inference.state import TrainingState
from pyro_dssm.io.checkpoint import load_checkpoint
from pyro_dssm.io.tracking import Tracker
from pyro_dssm.model.dssm import DSSM

from .helpers import REPO
from .test_faults import fit_tiny


def test_the_rate_of_step_s_is_lr_times_f_to_the_s_over_S_skipped_steps_included(tmp_path):
    """6 sequences in batches of 2 for 2 epochs (S = 6 steps), step 2 not finite; the state saved after
    epoch 1 and loaded into a fresh optimiser continues the same rates."""
    torch.manual_seed(0)
    module, x = nn.Linear(2, 1), torch.randn(6, 3, 2)
    rates = []

    def loss_fn(xb, mb, step):
        rates.append(optim.param_groups[0]["lr"])  # the rate this step's update will use
        loss = module(xb).pow(2).mean()
        return (loss * math.nan if step == 2 else loss), {}

    def new_state():
        return TrainingState(optim, torch.Generator().manual_seed(0), SkippedSteps(10),
                             exponential_decay(optim, 0.1, 6))

    optim = torch.optim.Adam(module.parameters(), lr=0.5)
    state = new_state()
    step = SGDStep(module, loss_fn, x, None, 10.0, Tracker(tmp_path, enabled=False))
    train_epochs(state, step, 1, 2)
    saved = state.state_dict()
    optim = torch.optim.Adam(module.parameters(), lr=0.5)
    state = new_state()
    state.load_state_dict(saved)
    train_epochs(state, step, 2, 2)
    assert rates == [0.5 * 0.1 ** (s / 6) for s in range(6)]
    assert state.step == 6 and state.skips.total == 1
    assert int(optim.state_dict()["state"][0]["step"]) == 5  # Adam never saw the skipped step


def test_a_checkpoint_without_scheduler_state_resumes_on_the_same_schedule(tmp_path):
    """Format 2 checkpoints kept no scheduler (the trainer set the rate inside the loss) and a stale rate in the
    optimiser's state: resuming one must give the uninterrupted run."""
    _, run = fit_tiny(tmp_path / "full")
    full = run()
    model, run = fit_tiny(tmp_path / "cut")
    steps = []
    model.emitter.net[0].weight.register_hook(lambda grad: steps.append(1))
    with pytest.raises(Interrupted):
        run(stop=lambda: len(steps) >= 6)
    old = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    del old["scheduler"]
    old["format_version"] = 2
    for group in old["optimizer"]["param_groups"]:
        del group["initial_lr"]
        group["lr"] = 123.0  # never used: the rate is rebuilt from the step
    model, run = fit_tiny(tmp_path / "cut")
    resumed = run(resume=old)
    for key in ("val_elbo_per_step", "val_accuracy", "final_loss", "steps", "tau"):
        assert resumed[key] == full[key], key
    assert [h["val_elbo_per_step"] for h in resumed["history"]] == [h["val_elbo_per_step"] for h in full["history"]]


def test_a_checkpoint_with_one_parameter_group_resumes_on_the_same_path(tmp_path):
    """Checkpoints before trainer.guide_lr_factor kept one Adam group for all weights; with the factor at 1 one
    is resumed into the two groups (generative, guide) and continues exactly as the uninterrupted run."""
    _, run = fit_tiny(tmp_path / "full", guide_lr_factor=1.0)
    full = run()
    model, run = fit_tiny(tmp_path / "cut", guide_lr_factor=1.0)
    steps = []
    model.emitter.net[0].weight.register_hook(lambda grad: steps.append(1))
    with pytest.raises(Interrupted):
        run(stop=lambda: len(steps) >= 6)
    old = load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")
    groups = old["optimizer"]["param_groups"]
    assert len(groups) == 2
    old["optimizer"]["param_groups"] = [{**groups[0], "params": groups[0]["params"] + groups[1]["params"]}]
    del old["scheduler"]  # a one-group scheduler state: rebuilt from the step instead
    model, run = fit_tiny(tmp_path / "cut", guide_lr_factor=1.0)
    resumed = run(resume=old)
    for key in ("val_elbo_per_step", "val_accuracy", "final_loss", "steps", "tau"):
        assert resumed[key] == full[key], key


def test_the_guide_learns_at_lr_times_guide_lr_factor(tmp_path):
    model, run = fit_tiny(tmp_path, n_epochs=1, guide_lr_factor=3.0)
    run()
    optim_state = load_checkpoint(tmp_path / "checkpoints" / "last.pt")["optimizer"]
    generative, guide = optim_state["param_groups"]
    assert guide["initial_lr"] == pytest.approx(3 * generative["initial_lr"])
    n_guide = sum(1 for name, _ in model.named_parameters() if name.startswith("posterior."))
    assert len(guide["params"]) == n_guide > 0


@pytest.mark.parametrize("emission, init, warmup, expected", [
    ("gaussian", "em", 100, 1.0),          # the guide's evidence holds the messages: it starts at the exact posterior
    ("gaussian", "kmeans", 0, 1.0),        # ... with or without a warm-up
    ("gaussian", "random", 100, 3.0),      # a random start: the guide has to catch up
    ("gaussian", "none", 100, 3.0),
    ("autoregressive", "em", 100, 1.0),    # no messages by default, but the warm-up fits it to the posterior
    ("autoregressive", "em", 0, 3.0),      # no messages and no warm-up: it starts where it was built
])
def test_guide_lr_factor_auto_is_one_only_where_the_guide_starts_at_the_posterior(emission, init, warmup, expected):
    from pyro_dssm.inference.trainer import guide_lr_factor

    net = DSSM(ModelConfig(n_states=3, obs_dim=2, emission=emission))
    assert guide_lr_factor(net, TrainerConfig(init=init, guide_warmup_steps=warmup)) == expected
    assert guide_lr_factor(net, TrainerConfig(init=init, guide_lr_factor=2.5)) == 2.5  # a number is taken as it is
    with pytest.raises(ValueError, match="trainer.guide_lr_factor must be auto or a number > 0, got 'fast'"):
        TrainerConfig(guide_lr_factor="fast")


def test_data_parallelism_and_the_batches_do_not_import_the_trainer(tmp_path):
    """The loop, its hooks and the trainer sit above distributed.py and batches.py, never the reverse."""
    code = ("import json, sys, pyro_dssm.inference.distributed, pyro_dssm.inference.batches; "
            "print(json.dumps(sorted(m for m in sys.modules if m.startswith('pyro_dssm.inference.'))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True).stdout
    assert json.loads(out) == ["pyro_dssm.inference.batches", "pyro_dssm.inference.distributed"]


def test_auto_threads_are_one_for_small_work_every_core_for_large_and_restored_after():
    from pyro_dssm.inference.threads import PARALLEL_WORK, available_cores, choose_threads, intra_op_threads

    cpu = torch.device("cpu")
    assert choose_threads("auto", cpu, 64, 32) == 1
    assert choose_threads("auto", cpu, PARALLEL_WORK // 32, 32) == available_cores()
    assert choose_threads(3, cpu, 64, 32) == 3
    before = torch.get_num_threads()
    with intra_op_threads(before + 1):
        assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before


def test_num_threads_setting_is_checked():
    from pyro_dssm.config import TrainerConfig

    with pytest.raises(ValueError, match="trainer.num_threads must be auto or an integer >= 1, got 0"):
        TrainerConfig(num_threads=0)
    assert TrainerConfig(num_threads=2).num_threads == 2
