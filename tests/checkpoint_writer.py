"""``python -m tests.checkpoint_writer DIR``: write DIR/last.pt over and over until killed.

Each checkpoint holds a large tensor filled with its index, so a reader can
tell a complete file from a torn one; test_faults.py kills this at random moments.
"""

import sys
from pathlib import Path

import torch

from pyro_dssm.io.checkpoint import save_checkpoint

if __name__ == "__main__":
    directory = Path(sys.argv[1])
    i = 0
    while True:
        save_checkpoint(directory / "last.pt", {"index": i, "weights": torch.full((1_000_000,), float(i))})
        i += 1
