from mspipe_bench.stages.stages import (
    STAGE_FUNCTIONS,
    STAGE_NAMES,
    Batch,
    StageContext,
    StageError,
    Timeline,
    make_context,
    run_stage,
)

__all__ = [
    "STAGE_FUNCTIONS",
    "STAGE_NAMES",
    "Batch",
    "StageContext",
    "StageError",
    "Timeline",
    "make_context",
    "run_stage",
]
