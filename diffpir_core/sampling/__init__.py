"""DiffPIR sampling: the noise schedule, the run configuration and its layers, and the sampler itself."""

from diffpir_core.sampling.config import DiffPIRConfig
from diffpir_core.sampling.diffpir import StepCallback, diffpir_sample, reference_schedule
from diffpir_core.sampling.schedule import Schedule, network_calls, rho_weight, visited_timesteps
from diffpir_core.sampling.settings import ResolvedSampler, SamplerOverrides, resolve_sampler

__all__ = [
    "DiffPIRConfig",
    "ResolvedSampler",
    "SamplerOverrides",
    "Schedule",
    "StepCallback",
    "diffpir_sample",
    "network_calls",
    "reference_schedule",
    "resolve_sampler",
    "rho_weight",
    "visited_timesteps",
]
