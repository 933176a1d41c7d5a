"""Tuning a job's sampler settings: the objectives a tuning job optimises (:mod:`diffpir_core.tuning.objectives`)."""

from diffpir_core.tuning.objectives import OBJECTIVES, Objective, objective_problem

__all__ = ["OBJECTIVES", "Objective", "objective_problem"]
