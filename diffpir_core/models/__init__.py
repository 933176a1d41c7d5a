"""Diffusion priors: the guided-diffusion UNet, the x0 adapter, presets and checkpoint loading."""

from diffpir_core.models.checkpoint import (
    CheckpointError,
    CheckpointInfo,
    Prior,
    inspect_checkpoint,
    load_prior,
    prior_card,
    prior_image_size,
    prior_path,
    read_checkpoint,
    recommended_sampler,
    save_prior,
)
from diffpir_core.models.download import ChecksumError, DownloadError, download, download_preset
from diffpir_core.models.inference import InferenceOptions, optimize_for_inference
from diffpir_core.models.presets import MODEL_DIR_ENV, PRESETS, Preset, PresetError, default_model_dir, get_preset
from diffpir_core.models.unet import UNET_DEFAULTS, UNetModel, build_unet, random_unet, resolve_unet_config
from diffpir_core.models.x0 import X0Predictor

__all__ = [
    "MODEL_DIR_ENV",
    "PRESETS",
    "UNET_DEFAULTS",
    "CheckpointError",
    "CheckpointInfo",
    "ChecksumError",
    "DownloadError",
    "InferenceOptions",
    "Preset",
    "PresetError",
    "Prior",
    "UNetModel",
    "X0Predictor",
    "build_unet",
    "default_model_dir",
    "download",
    "download_preset",
    "get_preset",
    "inspect_checkpoint",
    "load_prior",
    "optimize_for_inference",
    "prior_card",
    "prior_image_size",
    "prior_path",
    "random_unet",
    "read_checkpoint",
    "recommended_sampler",
    "resolve_unet_config",
    "save_prior",
]
