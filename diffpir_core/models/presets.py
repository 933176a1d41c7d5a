"""Known priors: the two official guided-diffusion checkpoints DiffPIR uses, and the project's demo prior.

A preset says how to build the network (the ``create_model`` keyword arguments of guided-diffusion),
what the file is called, where it can be fetched and how to recognise it (size, sha256). The model
directory, where downloaded checkpoints live, is ``$DIFFPIR_MODEL_DIR`` or a per-user cache folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODEL_DIR_ENV = "DIFFPIR_MODEL_DIR"
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"


class PresetError(LookupError):
    """A preset name is unknown, or a preset's files are not where they should be."""


@dataclass(frozen=True)
class Source:
    """One place a checkpoint can be fetched from.

    ``kind`` is ``"http"`` for a plain HTTP(S) file (ranged requests work) or ``"gdrive"`` for a
    Google-Drive file, which may answer with an HTML page (quota or virus-scan notice) instead of data.
    """

    url: str
    kind: str
    note: str


@dataclass(frozen=True)
class Preset:
    """A named prior: its architecture, its file, where to get it and how to check it.

    ``config`` holds the ``create_model`` kwargs; for the demo prior it is ``None`` and read from the
    model card ``card`` next to the shipped weights. ``param_bytes`` is the float32 size of all
    parameters: a checkpoint file of this model is at least that large (plus a few hundred kB of
    pickle framing). ``sha256`` is ``None`` until a digest of the official file is recorded.
    """

    name: str
    description: str
    filename: str
    config: dict[str, Any] | None
    num_params: int | None = None
    sources: tuple[Source, ...] = ()
    sha256: str | None = None
    shipped: Path | None = None
    card: Path | None = None
    aliases: tuple[str, ...] = field(default=())

    @property
    def param_bytes(self) -> int | None:
        return None if self.num_params is None else 4 * self.num_params

    def path(self, model_dir: Path | None = None) -> Path:
        """Where this preset's weights file is (shipped file) or goes (model directory)."""
        if self.shipped is not None:
            return self.shipped
        return (model_dir or default_model_dir()) / self.filename

    def load_config(self) -> dict[str, Any]:
        """The ``create_model`` kwargs, from the preset itself or from its model card."""
        if self.config is not None:
            return dict(self.config)
        if self.card is None:
            raise PresetError(f"preset {self.name!r} has neither a config nor a model card: give it one of them")
        if not self.card.is_file():
            raise PresetError(
                f"preset {self.name!r} has no model card at {self.card}: the demo prior is produced by "
                "the project's prior training (see docs/quality.md) and shipped in "
                f"{WEIGHTS_DIR}; build it, or use another preset ({', '.join(downloadable_names())})"
            )
        card = json.loads(self.card.read_text())
        if not isinstance(card.get("config"), dict):
            raise PresetError(f"model card {self.card} has no 'config' object with create_model kwargs")
        return dict(card["config"])


def _guided_config(**overrides: Any) -> dict[str, Any]:
    """DiffPIR's ``create_argparser`` defaults for a 256x256 guided-diffusion UNet, with overrides."""
    base: dict[str, Any] = {
        "image_size": 256,
        "num_channels": 128,
        "num_res_blocks": 1,
        "channel_mult": "",
        "learn_sigma": True,
        "class_cond": False,
        "use_checkpoint": False,
        "attention_resolutions": "16",
        "num_heads": 4,
        "num_head_channels": 64,
        "num_heads_upsample": -1,
        "use_scale_shift_norm": True,
        "dropout": 0.1,
        "resblock_updown": True,
        "use_fp16": False,
        "use_new_attention_order": False,
    }
    base.update(overrides)
    return base


FFHQ_GDRIVE_ID = "1BGwhRWUoguF-D8wlZ65tf227gp3cDUDh"

PRESETS: dict[str, Preset] = {
    "ffhq_256": Preset(
        name="ffhq_256",
        description=(
            "FFHQ 256x256 unconditional guided-diffusion model (ffhq_10m.pt of DPS and DiffPIR), the face prior"
        ),
        filename="diffusion_ffhq_10m.pt",
        config=_guided_config(),
        num_params=93_563_910,
        sources=(
            Source(
                url="https://huggingface.co/deepinv/diffunet/resolve/main/diffusion_ffhq_10m.pt",
                kind="http",
                note="third-party mirror published by the deepinv project on Hugging Face",
            ),
            Source(
                url=f"https://drive.usercontent.google.com/download?id={FFHQ_GDRIVE_ID}&export=download&confirm=t",
                kind="gdrive",
                note=f"official: Google-Drive file id {FFHQ_GDRIVE_ID} used by DiffPIR's download.sh "
                "(often answers with a quota page; then download it in a browser)",
            ),
        ),
        aliases=("diffusion_ffhq_10m", "ffhq_10m"),
    ),
    "imagenet_256": Preset(
        name="imagenet_256",
        description="ImageNet 256x256 unconditional guided-diffusion model (Dhariwal & Nichol, 2021)",
        filename="256x256_diffusion_uncond.pt",
        config=_guided_config(num_channels=256, num_res_blocks=2, attention_resolutions="8,16,32"),
        num_params=552_814_086,
        sources=(
            Source(
                url="https://openaipublic.blob.core.windows.net/diffusion/jul-2021/256x256_diffusion_uncond.pt",
                kind="http",
                note="official: OpenAI's guided-diffusion release",
            ),
        ),
        aliases=("256x256_diffusion_uncond",),
    ),
    "demo": Preset(
        name="demo",
        description="small prior trained by this project, shipped with the package for the demo and CI",
        filename="demo.safetensors",
        config=None,
        shipped=WEIGHTS_DIR / "demo.safetensors",
        card=WEIGHTS_DIR / "demo.json",
    ),
}


def downloadable_names() -> list[str]:
    """Presets that have download sources (the official checkpoints)."""
    return [name for name, preset in PRESETS.items() if preset.sources]


def get_preset(name: str) -> Preset:
    """The preset called ``name`` (or one of its aliases, e.g. DiffPIR's ``diffusion_ffhq_10m``)."""
    for preset in PRESETS.values():
        if name == preset.name or name in preset.aliases:
            return preset
    raise PresetError(f"unknown prior {name!r}: known presets are {', '.join(PRESETS)}; or pass a file path")


def default_model_dir() -> Path:
    """``$DIFFPIR_MODEL_DIR`` if set, else ``$XDG_CACHE_HOME/diffpir-flow/models`` (``~/.cache/...``)."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "diffpir-flow" / "models"
