"""Training of the project's own small diffusion prior (the ``demo`` preset).

DDPM ε-objective with a learned variance (hybrid loss) on the linear 1000-step schedule, the
guided-diffusion UNet of ``diffpir_core.models``, images bundled with scikit-image (no download), EMA
weights, checkpoint and exact resume. ``export_prior`` writes the safetensors file and its model card.
"""

from diffpir_core.training.config import DEMO_MODEL_CONFIG, TrainConfig
from diffpir_core.training.data import HELD_OUT_IMAGES, TRAIN_IMAGES, PatchSampler, held_out_tiles, load_rgb_u8
from diffpir_core.training.export import export_prior
from diffpir_core.training.objective import DiffusionObjective
from diffpir_core.training.trainer import TrainState, load_checkpoint, train

__all__ = [
    "DEMO_MODEL_CONFIG",
    "HELD_OUT_IMAGES",
    "TRAIN_IMAGES",
    "DiffusionObjective",
    "PatchSampler",
    "TrainConfig",
    "TrainState",
    "export_prior",
    "held_out_tiles",
    "load_checkpoint",
    "load_rgb_u8",
    "train",
]
