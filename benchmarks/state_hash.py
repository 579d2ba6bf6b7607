"""Hash of the training state after a short run: the proof that a refactor is bit-identical.

For each model preset, trains the first ``--iterations`` iterations of one epoch under a deterministic trainer
(``sequential`` in the calling thread and ``presample`` in the pipelined executor's threads, both with
staleness mitigation on so that its code path is covered too; ``fixed-staleness`` and ``mspipe`` are left out
because what their memory fetch sees depends on timing), evaluates on the first validation batches, and prints one SHA-256 over the parameters, the
optimiser state, the node memory and mailbox, and the validation scores. Run it before and after a refactor
on the same machine; the two outputs must be equal line for line.

    .venv/bin/python benchmarks/state_hash.py [--dataset ../shared/datasets/wikipedia] [--iterations 25]

The dataset defaults to the shared Wikipedia copy when it exists, else the embedded synthetic one.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import torch

from mspipe_bench.models.config import PRESETS

WIKIPEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "wikipedia"
TRAINERS = ("sequential", "presample")


def _update(h, t) -> None:
    if isinstance(t, torch.Tensor):
        h.update(t.detach().contiguous().cpu().numpy().tobytes())
    elif isinstance(t, np.ndarray):
        h.update(np.ascontiguousarray(t).tobytes())
    elif isinstance(t, dict):
        for k in sorted(t, key=str):
            h.update(str(k).encode())
            _update(h, t[k])
    elif isinstance(t, (list, tuple)):
        for v in t:
            _update(h, v)
    else:
        h.update(repr(t).encode())


def state_hash(model: str, trainer: str, dataset: str, iterations: int) -> str:
    from mspipe_bench.harness.run import RunSpec, run_context

    spec = RunSpec(model=model, dataset=dataset, trainer=trainer, mitigation=True,
                   epochs=1, max_iterations=iterations, seed=0)
    ctx, result = run_context(spec)
    h = hashlib.sha256()
    _update(h, ctx.model.state_dict())
    _update(h, ctx.optimizer.state_dict()["state"])
    # recent_unit is derived from recent_mem (normalised rows): hashed through recent_mem
    _update(h, {k: v for k, v in ctx.store.snapshot().items() if k != "recent_unit"})
    _update(h, {k: v for k, v in sorted(result["metrics"].items()) if k.startswith(("val_", "test_"))})
    return h.hexdigest()[:16]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default=str(WIKIPEDIA) if WIKIPEDIA.exists() else "synthetic")
    p.add_argument("--iterations", type=int, default=25)
    p.add_argument("--models", default=",".join(PRESETS))
    args = p.parse_args()
    torch.set_num_threads(1)
    for model in args.models.split(","):
        for trainer in TRAINERS:
            print(f"{model:6s} {trainer:16s} {state_hash(model, trainer, args.dataset, args.iterations)}",
                  flush=True)


if __name__ == "__main__":
    main()
