"""Test-only entry point: the training CLI under torchrun, plus what each rank holds, in $DDP_PROBE_DIR.

``torchrun ... tests/ddp_probe.py <overrides>`` runs exactly ``python -m pyro_dssm.train``;
the wrapper around ``fit`` only saves, outside the run dir, ``rank<r>_rng.pt`` (torch's global
generator when training starts: the rank's Gumbel noise stream) and ``rank<r>.pt`` (the final
state dict), so that a test can compare the ranks and replay their noise in one process.
"""

import os
from pathlib import Path

import hydra
import torch

from pyro_dssm import train as train_module

_fit = train_module.fit


def fit_and_save(model, *args, **kwargs):
    out = Path(os.environ["DDP_PROBE_DIR"])
    rank = os.environ["RANK"]
    torch.save(torch.get_rng_state(), out / f"rank{rank}_rng.pt")
    metrics = _fit(model, *args, **kwargs)
    torch.save(model.state_dict(), out / f"rank{rank}.pt")
    return metrics


train_module.fit = fit_and_save

if __name__ == "__main__":
    # the same task function; the config path made absolute (Hydra resolves a relative one from this script)
    configs = str(Path(__file__).resolve().parents[1] / "configs")
    hydra.main(version_base="1.3", config_path=configs, config_name="config")(train_module.main.__wrapped__)()
