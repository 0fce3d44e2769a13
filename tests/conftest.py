from pathlib import Path

import pyro
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True)
def _fresh_pyro_state():
    """Clear the param store, enable validation and fix seeds before every test."""
    pyro.clear_param_store()
    pyro.enable_validation(True)
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


# One intra-op thread, as run_cli gives the CLI subprocesses: the tensors are small, and on a
# shared 2-core machine two OpenMP threads wait on each other (a tiny run measured 12x slower).
torch.set_num_threads(1)


@pytest.fixture(scope="session")
def cli(tmp_path_factory):
    """A warm :class:`~tests.helpers.CLIServer`: ``cli.run("pyro_dssm.train", args)`` runs the CLI in a child process."""
    from .helpers import CLIServer

    server = CLIServer(tmp_path_factory.mktemp("cli_logs"))
    yield server
    server.close()
