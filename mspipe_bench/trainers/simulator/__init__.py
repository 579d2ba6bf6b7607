"""Schedule simulator: the five stages under each trainer's rules, from given stage times. Every number it
produces is **simulated**, never measured.

- :mod:`.inputs`: stage times (constants, per-iteration lists, ``--tau`` text, result files);
- :mod:`.profiles`: what-if profiles from YAML files that carry their source (pydantic-validated);
- :mod:`.contention`: how much stages that overlap on one device slow each other down;
- :mod:`.engine`: the discrete-event simulation, its metrics and contention sweeps.

Which stage may start when comes only from :mod:`mspipe_bench.trainers.rules`, shared with the executor.
"""

from mspipe_bench.trainers.simulator.contention import Contention, parse_contention, parse_factors
from mspipe_bench.trainers.simulator.engine import (
    WARMUP_MODES,
    SimResult,
    contention_for_speedup,
    simulate,
    simulate_trainers,
    summarize,
    sweep_contention,
)
from mspipe_bench.trainers.simulator.inputs import (StageTimes, comm_from_result, data_parallel, parse_comm, parse_tau,
                                                    stage_times, timeline_from_result)
from mspipe_bench.trainers.simulator.profiles import Profile, ProfileFile, load_profile

__all__ = [
    "WARMUP_MODES",
    "Contention",
    "Profile",
    "ProfileFile",
    "SimResult",
    "StageTimes",
    "contention_for_speedup",
    "load_profile",
    "parse_contention",
    "parse_factors",
    "parse_tau",
    "simulate",
    "simulate_trainers",
    "stage_times",
    "summarize",
    "sweep_contention",
    "timeline_from_result",
]
