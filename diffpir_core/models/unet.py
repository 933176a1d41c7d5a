"""The guided-diffusion UNet (Dhariwal & Nichol 2021) used by DiffPIR as its prior.

``build_unet`` takes the keyword arguments of the reference ``script_util.create_model`` and builds a
network whose ``state_dict`` has the reference key names, order and shapes, so the official
``ffhq_10m.pt`` and ``256x256_diffusion_uncond.pt`` load with ``strict=True``.
"""

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from diffpir_core.models.layers import (
    AttentionBlock,
    AttentionImpl,
    Downsample,
    GroupNorm32,
    ResBlock,
    TimestepEmbedSequential,
    Upsample,
    timestep_embedding,
    zero_module,
)

# guided-diffusion's model defaults (script_util.model_and_diffusion_defaults), used for omitted kwargs.
UNET_DEFAULTS: dict[str, Any] = {
    "image_size": 64,
    "num_channels": 128,
    "num_res_blocks": 2,
    "channel_mult": "",
    "attention_resolutions": "16,8",
    "num_heads": 4,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "learn_sigma": False,
    "use_scale_shift_norm": True,
    "resblock_updown": False,
    "use_new_attention_order": False,
    "dropout": 0.0,
    "class_cond": False,
    "use_fp16": False,
    "use_checkpoint": False,
}

NUM_CLASSES = 1000

_DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}


class UNetModel(nn.Module):
    """ε-predicting UNet: ``model(x, t)`` with x (B, C, H, W) and integer timesteps t (B,).

    Returns (B, out_channels, H, W); with ``learn_sigma`` the channels are [ε̂ | variance values].
    H and W must be divisible by ``2 ** (len(channel_mult) - 1)``.
    """

    def __init__(
        self,
        image_size: int,
        in_channels: int,
        model_channels: int,
        out_channels: int,
        num_res_blocks: int,
        attention_resolutions: Iterable[int],
        dropout: float = 0.0,
        channel_mult: Sequence[float] = (1, 2, 4, 8),
        conv_resample: bool = True,
        num_classes: int | None = None,
        use_checkpoint: bool = False,
        use_fp16: bool = False,
        num_heads: int = 1,
        num_head_channels: int = -1,
        num_heads_upsample: int = -1,
        use_scale_shift_norm: bool = False,
        resblock_updown: bool = False,
        use_new_attention_order: bool = False,
    ) -> None:
        super().__init__()
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        attention_ds = set(attention_resolutions)
        self.image_size = image_size
        self.model_channels = model_channels
        self.out_channels = out_channels
        self.channel_mult = tuple(channel_mult)
        self.num_classes = num_classes

        emb_dim = model_channels * 4
        self.time_embed = nn.Sequential(nn.Linear(model_channels, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        if num_classes is not None:
            self.label_emb = nn.Embedding(num_classes, emb_dim)

        def res(ch_in: int, ch_out: int, **kw: bool) -> ResBlock:
            return ResBlock(ch_in, emb_dim, dropout, ch_out, use_scale_shift_norm, use_checkpoint=use_checkpoint, **kw)

        def attn(ch: int, heads: int) -> AttentionBlock:
            return AttentionBlock(ch, heads, num_head_channels, use_new_attention_order, use_checkpoint)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = nn.ModuleList([TimestepEmbedSequential(nn.Conv2d(in_channels, ch, 3, padding=1))])
        skip_chans = [ch]
        ds = 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers: list[nn.Module] = [res(ch, int(mult * model_channels))]
                ch = int(mult * model_channels)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                skip_chans.append(ch)
            if level != len(channel_mult) - 1:
                down = res(ch, ch, down=True) if resblock_updown else Downsample(ch, conv_resample, ch)
                self.input_blocks.append(TimestepEmbedSequential(down))
                skip_chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(res(ch, ch), attn(ch, num_heads), res(ch, ch))

        self.output_blocks = nn.ModuleList([])
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [res(ch + skip_chans.pop(), int(model_channels * mult))]
                ch = int(model_channels * mult)
                if ds in attention_ds:
                    layers.append(attn(ch, num_heads_upsample))
                if level and i == num_res_blocks:
                    layers.append(res(ch, ch, up=True) if resblock_updown else Upsample(ch, conv_resample, ch))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = nn.Sequential(
            GroupNorm32(ch), nn.SiLU(), zero_module(nn.Conv2d(input_ch, out_channels, 3, padding=1))
        )
        if use_fp16:
            self.convert_to_fp16()

    @property
    def torso_dtype(self) -> torch.dtype:
        """The dtype the blocks compute in (float16 after ``convert_to_fp16``, else the weights' dtype)."""
        return self.input_blocks[0][0].weight.dtype

    @property
    def downsample_factor(self) -> int:
        """H and W must be multiples of this."""
        return 2 ** (len(self.channel_mult) - 1)

    def convert_to_fp16(self) -> None:
        """Cast the torso's convolutions to float16, as the reference ``use_fp16`` does."""
        for blocks in (self.input_blocks, self.middle_block, self.output_blocks):
            for m in blocks.modules():
                if isinstance(m, (nn.Conv1d, nn.Conv2d)):
                    m.half()

    def set_attention_impl(self, impl: AttentionImpl) -> None:
        """Choose ``reference`` (einsum, the bit-compatible default) or ``sdpa`` attention."""
        for m in self.modules():
            if isinstance(m, AttentionBlock):
                m.impl = impl

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        if (y is not None) != (self.num_classes is not None):
            raise ValueError("pass class labels y exactly when the model is class-conditional")
        t_emb = timestep_embedding(timesteps, self.model_channels)
        emb = self.time_embed(t_emb.to(self.time_embed[0].weight.dtype))
        if self.num_classes is not None:
            emb = emb + self.label_emb(y)
        hs = []
        h = x.type(self.torso_dtype)
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h.type(x.dtype))


def _parse_ints(value: str | Iterable[int | float | str], what: str) -> tuple[float, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    try:
        return tuple(float(v) for v in items if str(v).strip() != "")
    except ValueError:
        raise ValueError(
            f"{what}={value!r} is not a comma-separated list of numbers, e.g. '16' or '32,16,8'"
        ) from None


def resolve_unet_config(**kwargs: Any) -> dict[str, Any]:
    """Fill defaults and normalise ``create_model`` kwargs (strings or tuples) into one canonical dict."""
    unknown = set(kwargs) - set(UNET_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown UNet argument(s) {sorted(unknown)}; accepted: {sorted(UNET_DEFAULTS)}")
    cfg = {**UNET_DEFAULTS, **kwargs}
    size = int(cfg["image_size"])
    mult = _parse_ints(cfg["channel_mult"], "channel_mult")
    if not mult:
        if size not in _DEFAULT_CHANNEL_MULT:
            raise ValueError(f"no default channel_mult for image_size={size}; pass channel_mult, e.g. '1,2,2,2'")
        mult = _DEFAULT_CHANNEL_MULT[size]
    cfg["channel_mult"] = ",".join(f"{m:g}" for m in mult)
    res = _parse_ints(cfg["attention_resolutions"], "attention_resolutions")
    cfg["attention_resolutions"] = ",".join(str(int(r)) for r in res)
    return cfg


def build_unet(**kwargs: Any) -> UNetModel:
    """Build the guided-diffusion UNet from reference ``create_model`` keyword arguments.

    ``channel_mult`` and ``attention_resolutions`` accept the reference strings ("" for the image-size
    default, "32,16,8") or tuples; ``attention_resolutions`` are resolutions, turned into downsample
    factors ``image_size // resolution`` as the reference does.
    """
    cfg = resolve_unet_config(**kwargs)
    size = int(cfg["image_size"])
    mult = _parse_ints(cfg["channel_mult"], "channel_mult")
    attention_ds = [size // int(r) for r in _parse_ints(cfg["attention_resolutions"], "attention_resolutions")]
    return UNetModel(
        image_size=size,
        in_channels=3,
        model_channels=int(cfg["num_channels"]),
        out_channels=6 if cfg["learn_sigma"] else 3,
        num_res_blocks=int(cfg["num_res_blocks"]),
        attention_resolutions=attention_ds,
        dropout=float(cfg["dropout"]),
        channel_mult=tuple(int(m) if float(m).is_integer() else m for m in mult),
        num_classes=NUM_CLASSES if cfg["class_cond"] else None,
        use_checkpoint=bool(cfg["use_checkpoint"]),
        use_fp16=bool(cfg["use_fp16"]),
        num_heads=int(cfg["num_heads"]),
        num_head_channels=int(cfg["num_head_channels"]),
        num_heads_upsample=int(cfg["num_heads_upsample"]),
        use_scale_shift_norm=bool(cfg["use_scale_shift_norm"]),
        resblock_updown=bool(cfg["resblock_updown"]),
        use_new_attention_order=bool(cfg["use_new_attention_order"]),
    )


def random_unet(seed: int = 0, zero_std: float = 0.05, **kwargs: Any) -> UNetModel:
    """A seeded random UNet whose zero-initialised layers are refilled from N(0, zero_std²).

    Every layer then affects the output, which tests and benchmarks need; real priors come from
    ``load_prior``. Seeds (and draws from) the global torch RNG, like the reference's test vectors.
    """
    torch.manual_seed(seed)
    unet = build_unet(**kwargs)
    with torch.no_grad():
        for p in unet.parameters():
            if not p.any():
                p.normal_(0, zero_std)
    return unet
