"""Shared test helpers: Hydra composition, CLI subprocess runs, the guide's evidence by hand."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

import pyro_dssm.config  # noqa: F401 (registers the schema that configs/*.yaml start from)

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"

# small, fast settings for end-to-end runs
TINY = ["data.n_train=64", "data.n_val=32", "data.seq_len=30", "data.n_states=3", "data.obs_dim=4",
        "trainer.n_epochs=2", "trainer.batch_size=32"]


def compose_config(overrides=(), return_hydra_config=False):
    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=return_hydra_config)


def hand_messages(local, log_trans, lengths=None):
    r"""The backward messages the guide's evidence adds, by hand: (B, T, K) :math:`\log \beta_t(k)`, normalised over k.

    :math:`\beta_t(i) = \sum_j A_{ij}\, p(x_{t+1} \mid j)\, \beta_{t+1}(j)` in probabilities, one
    sequence and one step at a time, from :math:`\beta = 1` at each sequence's last valid step
    (and on its padding). ``local`` (B, T, K) log p(x_t | k) (any per-step shift), ``log_trans`` (K, K),
    ``lengths`` (B,) valid steps (None: all).
    """
    B, T, K = local.shape
    out = torch.zeros(B, T, K, dtype=local.dtype)
    for b in range(B):
        n = T if lengths is None else int(lengths[b])
        beta = torch.ones(K, dtype=local.dtype)
        for t in range(n - 2, -1, -1):
            lik = (local[b, t + 1] - local[b, t + 1].max()).exp()
            beta = log_trans.exp() @ (lik * beta)
            beta = beta / beta.sum()
            out[b, t] = beta.log()
    return out.log_softmax(-1)


def data_driven_init(net, x, mask, gen, method="em", restarts=1, em_iters=20, max_sequences=300):
    """The package's one init entry point (pyro_dssm.inference.init.initialise) with these trainer settings."""
    from pyro_dssm.config import TrainerConfig
    from pyro_dssm.inference.init import initialise

    cfg = TrainerConfig(init=method, init_restarts=restarts, init_em_iters=em_iters, init_max_sequences=max_sequences)
    return initialise(net, x, mask, cfg, gen)


def run_cli(module: str, args, cwd=None, timeout=300, env=None):
    """Run ``python -m module args`` in a subprocess; returns CompletedProcess with text output."""
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd or REPO, capture_output=True, text=True,
                          timeout=timeout, env=cli_env(env))


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


def cli_env(env=None) -> dict:
    """The environment of a CLI run: this repository first on the path, one torch thread, no HYDRA_FULL_ERROR."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [full_env.get("PYTHONPATH")])])
    if "HYDRA_FULL_ERROR" not in (env or {}):
        full_env.pop("HYDRA_FULL_ERROR", None)
    return full_env


# The server of CLIServer: imports the package once, then forks one child per command. A child runs the module
# as `python -m` does (runpy, run_name="__main__", sys.argv set) with its own stdout / stderr files and exits
# with the code the interpreter would give (SystemExit code; traceback and 1 for an uncaught exception).
_SERVER = r"""
import json, os, runpy, signal, sys, traceback
import pyro_dssm.train, pyro_dssm.decode  # the expensive imports (torch, pyro, hydra), paid once
import torch._dynamo  # imported by the first torch.optim optimiser: another 4-7 s

def child(req):
    code = 1
    try:
        os.chdir(req["cwd"])
        for fd, name in ((1, "stdout"), (2, "stderr")):
            out = os.open(req[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(out, fd)
            os.close(out)
        sys.stdin = open(os.devnull)
        os.environ.clear()
        os.environ.update(req["env"])
        sys.argv = [req["module"], *req["args"]]
        sys.modules.pop(req["module"], None)  # as in a fresh `python -m`, the module is not imported yet
        runpy.run_module(req["module"], run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as exc:
        if exc.code is None or isinstance(exc.code, int):
            code = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

def reply(obj):
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()

children = set()
reply({"ready": True})
for line in sys.stdin:
    req = json.loads(line)
    if req["op"] == "start":
        pid = os.fork()
        if pid == 0:
            child(req)
        children.add(pid)
        reply({"pid": pid})
    else:
        _, status = os.waitpid(req["pid"], 0)
        children.discard(req["pid"])
        reply({"rc": os.waitstatus_to_exitcode(status)})
for pid in children:
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
os._exit(0)  # skip the interpreter's teardown of torch (seconds)
"""


class CLIServer:
    """Runs ``python -m MODULE ARGS`` as forked children of one warm interpreter.

    Every command is a real child process with its own exit code, stdout,
    stderr and signal handling, started as ``python -m`` starts a module; only
    the imports are shared. A fresh interpreter spends 4-8 s importing torch,
    pyro and hydra on a loaded 2-core machine, which made dozens of one-line
    error cases cost minutes.
    """

    def __init__(self, log_dir):
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.count = 0
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, cwd=REPO, env=cli_env())
        assert json.loads(self.proc.stdout.readline())["ready"]

    def _ask(self, request: dict) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def start(self, module: str, args, cwd=None, env=None) -> "CLIRun":
        self.count += 1
        out = {name: str(self.log_dir / f"{self.count}.{name}") for name in ("stdout", "stderr")}
        pid = self._ask({"op": "start", "module": module, "args": [str(a) for a in args], "cwd": str(cwd or REPO),
                         "env": cli_env(env), **out})["pid"]
        return CLIRun(self, pid, out)

    def run(self, module: str, args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
        """Run to the end; like :func:`run_cli`."""
        return self.start(module, args, cwd, env).wait(timeout)

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=60)


class CLIRun:
    """One command started by :class:`CLIServer`: ``pid`` to signal, :meth:`wait` for the result."""

    def __init__(self, server: CLIServer, pid: int, files: dict):
        self.server, self.pid, self.files = server, pid, files

    def stdout(self) -> str:
        return Path(self.files["stdout"]).read_text()

    def wait(self, timeout=300) -> subprocess.CompletedProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _alive(self.pid):
            time.sleep(0.05)
        if _alive(self.pid):
            os.kill(self.pid, signal.SIGKILL)
        rc = self.server._ask({"op": "wait", "pid": self.pid})["rc"]
        return subprocess.CompletedProcess([self.pid], rc, Path(self.files["stdout"]).read_text(),
                                           Path(self.files["stderr"]).read_text())


def _alive(pid: int) -> bool:
    """Whether the child ``pid`` still runs (a zombie, exited but not yet reaped, counts as ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
