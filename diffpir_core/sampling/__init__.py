"""Sampling: the noise schedule, DiffPIR with its run configuration and layers, and the comparison
methods DPS, DDRM and DPIR behind one registry (``methods.METHODS``)."""

from diffpir_core.sampling.common import Step, StepCallback
from diffpir_core.sampling.config import DiffPIRConfig
from diffpir_core.sampling.ddrm import DDRMConfig, ddrm_sample
from diffpir_core.sampling.diffpir import diffpir_sample, reference_schedule
from diffpir_core.sampling.dpir import DPIRPnPConfig, dpir_pnp_sample
from diffpir_core.sampling.dps import DPSConfig, dps_sample
from diffpir_core.sampling.methods import (
    METHODS,
    Method,
    MethodName,
    check_operator,
    get_method,
    method_config,
    restore_with,
)
from diffpir_core.sampling.schedule import Schedule, network_calls, rho_weight, visited_timesteps
from diffpir_core.sampling.settings import (
    ResolvedSampler,
    allowed_settings,
    check_overrides,
    resolve_job_sampler,
    resolve_sampler,
)

__all__ = [
    "DDRMConfig",
    "DPIRPnPConfig",
    "DPSConfig",
    "DiffPIRConfig",
    "METHODS",
    "Method",
    "MethodName",
    "ResolvedSampler",
    "Schedule",
    "Step",
    "StepCallback",
    "allowed_settings",
    "check_operator",
    "check_overrides",
    "ddrm_sample",
    "diffpir_sample",
    "dpir_pnp_sample",
    "dps_sample",
    "get_method",
    "method_config",
    "network_calls",
    "reference_schedule",
    "resolve_job_sampler",
    "resolve_sampler",
    "restore_with",
    "rho_weight",
    "visited_timesteps",
]
