"""Peak memory of training on a memory-mapped .npy file (``data=npy``) against the file's size.

    python benchmarks/streaming.py --gb 3 --dir /tmp      # writes benchmarks/results/streaming.md and .json

Writes an (N, T, D) float32 file of about ``--gb`` GB (synthetic Gaussian-HMM
sequences, drawn chunk by chunk, never whole in memory), then:

1. trains on it, ``python -m pyro_dssm.train data=npy`` for ``--epochs``
   epochs (every row read once per epoch), in a child process whose peak
   resident set is reported;
2. for comparison, reads every row once through a plain
   ``np.load(mmap_mode="r")`` in another child, without dropping pages: the
   resident set a memory map reaches when nothing releases it.

The file is deleted at the end unless ``--keep``, the training run's
directory always. A failed run is reported.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from machine_info import cpu_model  # noqa: E402

from pyro_dssm.data.synthetic import make_hmm_params, sample_hmm  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

PLAIN_MMAP = """
import sys, numpy as np
a = np.load(sys.argv[1], mmap_mode="r")
total = 0.0
for lo in range(0, a.shape[0], 64):
    total += float(np.asarray(a[lo:lo + 64]).sum())
"""


def write_file(path: Path, n: int, T: int, D: int, K: int, seed: int = 0, chunk: int = 100) -> None:
    gen = torch.Generator().manual_seed(seed)
    params = make_hmm_params(K, D, 0.9, 1.0, gen)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, T, D))
    for lo in range(0, n, chunk):
        out[lo: lo + chunk] = sample_hmm(params, min(chunk, n - lo), T, gen).x.numpy()
    out.flush()
    del out


def _status_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "RssAnon", "RssFile"):
            fields[key] = int(value.split()[0])
    return fields


def child_peak_mb(cmd: list[str], env: dict) -> tuple[subprocess.CompletedProcess, dict, float]:
    """Run ``cmd``, polling its /proc status every 0.1 s: peak resident set (VmHWM), and the largest
    anonymous and file-backed parts seen, in MB; and the wall seconds.

    (The child's ``ru_maxrss`` would not do: Linux carries the forking parent's high-water mark across exec.)
    """
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    peak = {"VmHWM": 0, "RssAnon": 0, "RssFile": 0}
    reader = threading.Thread(target=lambda: setattr(proc, "output", proc.stdout.read()))
    reader.start()
    while proc.poll() is None:
        try:
            for key, value in _status_kb(proc.pid).items():
                peak[key] = max(peak[key], value)
        except (OSError, ValueError):  # exited between poll and read
            pass
        time.sleep(0.1)
    reader.join()
    mb = {"peak_rss_mb": peak["VmHWM"] / 1024, "max_anon_mb": peak["RssAnon"] / 1024,
          "max_file_mb": peak["RssFile"] / 1024}
    return subprocess.CompletedProcess(cmd, proc.returncode, proc.output), mb, time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gb", type=float, default=3.0, help="file size to write")
    p.add_argument("--T", type=int, default=100)
    p.add_argument("--D", type=int, default=2000, help="wide rows: many bytes per SVI step")
    p.add_argument("--K", type=int, default=5)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--dir", type=Path, default=Path("/tmp"), help="where the file is written")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "streaming.md")
    args = p.parse_args(argv)
    n = int(args.gb * 1e9 / (args.T * args.D * 4))
    path = args.dir / f"pyro_dssm_stream_{n}x{args.T}x{args.D}.npy"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    record = {"n": n, "T": args.T, "D": args.D, "epochs": args.epochs, "batch": args.batch}
    try:
        start = time.perf_counter()
        write_file(path, n, args.T, args.D, args.K)
        record.update(file_gb=path.stat().st_size / 1e9, write_seconds=time.perf_counter() - start)
        print(f"wrote {path} ({record['file_gb']:.2f} GB) in {record['write_seconds']:.0f} s", flush=True)
        train_cmd = [sys.executable, "-m", "pyro_dssm.train", "data=npy", f"data.path={path}", "data.n_val=50",
                     f"data.n_states={args.K}", f"trainer.n_epochs={args.epochs}", f"trainer.batch_size={args.batch}",
                     "trainer.init_restarts=1", "trainer.guide_warmup_steps=20", "trainer.figure_every=0",
                     "trainer.device=cpu", f"hydra.run.dir={args.dir / 'pyro_dssm_stream_run'}",
                     "overwrite=true"]  # a scratch run: the previous benchmark's is replaced
        proc, mem, wall = child_peak_mb(train_cmd, env)
        record.update(train_ok=proc.returncode == 0, train_wall_seconds=wall,
                      **{f"train_{k}": v for k, v in mem.items()})
        if proc.returncode == 0:
            metrics = json.loads((args.dir / "pyro_dssm_stream_run" / "metrics.json").read_text())
            svi = metrics["train_seconds"] - metrics["history"][0]["train_seconds"]
            record.update(svi_seconds=svi, steps=metrics["steps"],
                          time_steps_per_second=(n - 50) * args.T * args.epochs / svi)
        else:
            record["train_error"] = proc.stdout[-1500:]
        proc, mem, wall = child_peak_mb([sys.executable, "-c", PLAIN_MMAP, str(path)], env)
        record.update(plain_mmap_ok=proc.returncode == 0, plain_mmap_seconds=wall,
                      **{f"plain_mmap_{k}": v for k, v in mem.items()})
    finally:
        if not args.keep and path.exists():
            path.unlink()
        shutil.rmtree(args.dir / "pyro_dssm_stream_run", ignore_errors=True)
    machine = (f"{cpu_model()}, {os.cpu_count()} cores, "
               f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB RAM; "
               f"torch {torch.__version__}, 1 thread; python {platform.python_version()}")
    record["machine"] = machine
    gb = record.get("file_gb", float("nan"))
    train_row = (f"| `data=npy` training, {args.epochs} epoch(s), batch {args.batch} | "
                 f"{record['train_peak_rss_mb']:,.0f} | {record['train_max_anon_mb']:,.0f} / "
                 f"{record['train_max_file_mb']:,.0f} | {record['train_peak_rss_mb'] / 1024 / gb:.2f} | "
                 f"{record.get('time_steps_per_second', float('nan')):,.0f} time steps/s "
                 f"({record.get('steps', 0)} steps, {record['train_wall_seconds']:.0f} s wall) |"
                 if record.get("train_ok") else
                 f"| `data=npy` training | FAILED | | | {record.get('train_error', '')[-200:]!r} |")
    text = "\n".join([
        "# Training on a memory-mapped .npy file (benchmarks/streaming.py)", "",
        f"Command: `python benchmarks/streaming.py {' '.join(argv if argv is not None else sys.argv[1:])}`", "",
        f"Machine: {machine}", "",
        f"File: {n:,} sequences x T={args.T} x D={args.D} float32 = {gb:.2f} GB "
        f"(written in {record.get('write_seconds', float('nan')):.0f} s); K={args.K}, default networks.", "",
        "Peak RSS: the child's VmHWM; anonymous / file-backed: the largest RssAnon / RssFile seen (polled every "
        "0.1 s). File-backed pages are clean copies of the file that the kernel can drop at any time.", "",
        "| what | peak RSS (MB) | largest anonymous / file-backed (MB) | peak RSS / file size | throughput |",
        "|---|---|---|---|---|",
        train_row,
        f"| every row read once through a plain `np.load(mmap_mode='r')` (no page release) | "
        f"{record['plain_mmap_peak_rss_mb']:,.0f} | {record['plain_mmap_max_anon_mb']:,.0f} / "
        f"{record['plain_mmap_max_file_mb']:,.0f} | {record['plain_mmap_peak_rss_mb'] / 1024 / gb:.2f} | "
        f"{record['plain_mmap_seconds']:.0f} s |", ""])
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
