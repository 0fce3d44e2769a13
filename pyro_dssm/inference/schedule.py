r"""The learning-rate schedule: exponential decay to ``lr * lr_final_fraction`` at the last step.

.. math:: \eta_s = \eta \, f^{s / S}

for step s = 0 .. S-1 of S steps in all (f = ``trainer.lr_final_fraction``).
A :class:`torch.optim.lr_scheduler.LambdaLR`, stepped by the training loop
after every step, skipped or not, on every process: so the rate is a function
of the step count alone, and data-parallel ranks can never disagree on it.
"""

from __future__ import annotations

import torch
from torch.optim.lr_scheduler import LambdaLR


def exponential_decay(optim: torch.optim.Optimizer, final_fraction: float, total_steps: int) -> LambdaLR:
    """Scale ``optim``'s learning rates by ``final_fraction ** (step / total_steps)``."""
    return LambdaLR(optim, lambda step: final_fraction ** (step / total_steps))


def restore_schedule(scheduler: LambdaLR, saved: dict | None, step: int) -> LambdaLR:
    """``scheduler`` continuing a checkpoint taken after ``step`` steps, with ``saved`` its state dict.

    Call after loading the optimiser's state. A checkpoint older than format 3
    kept no scheduler state (its trainer set the same rate inside the loss); the
    schedule is then rebuilt at ``step``, giving the same rates.
    """
    if saved is not None:
        scheduler.load_state_dict(saved)
        return scheduler
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["initial_lr"] = base_lr  # dropped by loading an optimiser state saved without a scheduler
    # the constructor steps once more, to `step`: the next step then gets the rate of step `step`
    return LambdaLR(scheduler.optimizer, scheduler.lr_lambdas, last_epoch=step - 1)
