"""Diffusion priors: the guided-diffusion UNet, the x0 adapter, presets and checkpoint loading."""

from diffpir_core.models.unet import UNET_DEFAULTS, UNetModel, build_unet, resolve_unet_config
from diffpir_core.models.x0 import X0Predictor

__all__ = ["UNET_DEFAULTS", "UNetModel", "X0Predictor", "build_unet", "resolve_unet_config"]
