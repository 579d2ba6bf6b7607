"""mspipe-bench: a benchmark suite for training memory-based temporal GNNs (TGN, JODIE, APAN) on DGL
under interchangeable schedules (sequential, presample, fixed-staleness, MSPipe).

Layers (each imports only the ones before it):
data -> sampling -> models -> stages -> trainers -> harness.
"""

import os as _os

_os.environ.setdefault("DGLBACKEND", "pytorch")

__version__ = "0.1.0"
