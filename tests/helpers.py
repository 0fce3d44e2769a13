"""Shared test helpers: Hydra composition and CLI subprocess runs."""

import os
import subprocess
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# small, fast settings for end-to-end runs
TINY = ["data.n_train=64", "data.n_val=32", "data.seq_len=30", "data.n_states=3", "data.obs_dim=4",
        "trainer.n_epochs=2", "trainer.batch_size=32"]


def compose_config(overrides=(), return_hydra_config=False):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def run_cli(module: str, args, cwd=None, timeout=300, env=None):
    """Run ``python -m module args`` in a subprocess; returns CompletedProcess with text output."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("HYDRA_FULL_ERROR", None)
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


def read_scalars(logdir) -> dict:
    """All scalar series under a TensorBoard log dir: tag -> list of (step, value)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = {}
    for events in sorted(Path(logdir).rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events.parent), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            out.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return out
