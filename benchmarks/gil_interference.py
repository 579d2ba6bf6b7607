"""Run from the repository root: .venv/bin/python benchmarks/gil_interference.py [MODEL] (needs
../shared/datasets/wikipedia; MODEL defaults to tgn).

Why T slows down beside the other stages: T of MODEL/Wikipedia in a worker thread, alone, beside a thread
running the real S stage in a loop, beside another *process* running the same S loop (same CPU load, no
shared GIL), beside a thread holding the GIL in pure Python, and beside a GIL-free numpy sort in a thread
and in another process. The process cases share no GIL with T: what they cost T is the two vCPUs' shared
hardware (caches, memory bandwidth, and the host's scheduling of the vCPUs). The GIL switch interval is the
executor's."""
import subprocess, sys, threading, time, numpy as np, torch
torch.set_num_threads(1)
from mspipe_bench.harness.run import tune_allocator
from mspipe_bench.trainers.executor import GIL_SWITCH_S
tune_allocator()
sys.setswitchinterval(GIL_SWITCH_S)
MODEL = sys.argv[1] if len(sys.argv) > 1 else "tgn"
CHILD = sys.argv[2] if len(sys.argv) > 2 else None  # "sample" | "sort": a background process of a case below
big = np.random.rand(4_000_000)
if CHILD == "sort":
    print("ready", flush=True)
    while True: np.sort(big)
from mspipe_bench.data.loaders import load_dataset
from mspipe_bench.models.config import load_config
from mspipe_bench.stages import make_context, run_stage
from mspipe_bench.stages.stages import train_step, sample
g = load_dataset("../shared/datasets/wikipedia")
ctx = make_context(g, load_config(MODEL), seed=0)
bs = ctx.batches("train", 0, g.split().train_end)
for b in bs[:30]:
    for s in "SFMTU": run_stage(ctx, s, b)
if CHILD == "sample":  # the child of the "S loop (process)" case: loop S until killed
    print("ready", flush=True)
    while True: sample(ctx, bs[31])
b = bs[30]
for s in "SFM": run_stage(ctx, s, b)
rows = b.rows
def t_once():
    b.rows = rows; t = time.perf_counter(); train_step(ctx, b); return time.perf_counter() - t
stop = threading.Event()
def bg_sample():
    bb = bs[31]
    while not stop.is_set(): sample(ctx, bb)
def bg_python():
    while not stop.is_set(): sum(i * i for i in range(2000))
def bg_numpy():
    while not stop.is_set(): np.sort(big)
def measure(bg, n=12 if MODEL == "tgn" else 60):
    stop.clear()
    th = proc = None
    if bg in ("sample", "sort"):
        proc = subprocess.Popen([sys.executable, __file__, MODEL, bg], stdout=subprocess.PIPE, text=True)
        proc.stdout.readline()
    elif bg:
        th = threading.Thread(target=bg)
        th.start()
    out = []
    def work():
        torch.set_num_threads(1)  # as the executor's workers do: a new thread does not inherit it everywhere
        for _ in range(n): out.append(t_once())
    w = threading.Thread(target=work); w.start(); w.join()
    stop.set()
    if th: th.join()
    if proc: proc.kill(); proc.wait()
    return np.median(out[2:]) * 1e3
res = {}
for rnd in range(3):
    for name, bg in [("alone", None), ("beside S loop (thread)", bg_sample), ("beside S loop (process)", "sample"),
                     ("beside pure-Python (GIL held)", bg_python), ("beside numpy sort (GIL free)", bg_numpy), ("beside numpy sort (process)", "sort")]:
        res.setdefault(name, []).append(measure(bg))
for k, v in res.items(): print(f"T {MODEL} {k:32s} {np.mean(v):6.1f} ms  (rounds: {', '.join(f'{x:.1f}' for x in v)})")
