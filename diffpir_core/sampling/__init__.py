"""DiffPIR sampling: the noise schedule, the run configuration, task presets and the sampler itself."""

from diffpir_core.sampling.config import DiffPIRConfig
from diffpir_core.sampling.diffpir import StepCallback, diffpir_sample, reference_schedule
from diffpir_core.sampling.presets import TASK_PRESETS, task_preset
from diffpir_core.sampling.schedule import Schedule, rho_weight, visited_timesteps

__all__ = [
    "TASK_PRESETS",
    "DiffPIRConfig",
    "Schedule",
    "StepCallback",
    "diffpir_sample",
    "reference_schedule",
    "rho_weight",
    "task_preset",
    "visited_timesteps",
]
