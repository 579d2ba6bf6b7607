from mspipe_bench.sampling.blocks import SampledBlocks, sample_blocks
from mspipe_bench.sampling.negatives import NegativeSampler
from mspipe_bench.sampling.sampler import STRATEGIES, NeighborSample, TemporalSampler

__all__ = ["SampledBlocks", "sample_blocks", "NegativeSampler", "STRATEGIES", "NeighborSample", "TemporalSampler"]
