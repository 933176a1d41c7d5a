"""Load and save priors: a guided-diffusion UNet plus the config that builds it and the file's sha256.

``load_prior`` accepts a preset name (``ffhq_256``, ``imagenet_256``, ``demo``) or a path to a
``.pt``/``.pth`` (read with ``torch.load(weights_only=True)``, so no arbitrary object is ever
unpickled) or ``.safetensors`` file. A ``module.`` prefix (DataParallel) is stripped and the weights
are loaded strictly. Every failure names what is wrong and what to do: an HTML page saved as ``.pt``,
a pickle with Python objects, missing/unexpected keys, shape conflicts and which preset the file
resembles instead.

Where the config of a file comes from, first match wins: the ``config`` argument, the safetensors
metadata written by ``save_prior``, a ``config`` entry next to ``state_dict`` in a ``.pt`` dict, a
model card ``<file>.json`` beside it (``{"config": {...}}``), or the preset whose tensor names and
shapes the file matches exactly.
"""

from __future__ import annotations

import copy
import functools
import json
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from diffpir_core.models.files import html_page_message, looks_like_html, read_head, sha256_file
from diffpir_core.models.presets import PRESETS, Preset, PresetError, get_preset
from diffpir_core.models.unet import build_unet

StateDict = dict[str, torch.Tensor]
Shapes = dict[str, tuple[int, ...]]

_SAFETENSORS_SUFFIXES = {".safetensors"}
_MAX_LISTED = 5


class CheckpointError(ValueError):
    """A checkpoint file cannot be read or does not fit the requested architecture."""


@dataclass
class Prior:
    """A loaded prior: the UNet (eval mode), its ``create_model`` kwargs and where it came from."""

    unet: torch.nn.Module
    config: dict[str, Any]
    sha256: str
    name: str
    path: Path


@dataclass(frozen=True)
class CheckpointInfo:
    """What ``inspect_checkpoint`` finds in a file, for ``diffpir models verify``."""

    path: Path
    size: int
    sha256: str
    num_tensors: int
    num_params: int
    dtypes: tuple[str, ...]
    matches: str | None
    closest: str | None
    closest_fraction: float


def read_checkpoint(path: Path) -> tuple[StateDict, dict[str, Any] | None]:
    """The state_dict of a ``.pt``/``.pth``/``.safetensors`` file and the config stored in it, if any.

    Raises ``CheckpointError`` for an HTML page, a missing or unreadable file, or a pickle that holds
    anything but tensors and plain containers.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist (or is not a file)")
    head = read_head(path)
    if looks_like_html(head):
        raise CheckpointError(html_page_message(path, head))
    if path.suffix in _SAFETENSORS_SUFFIXES:
        state_dict, config = _read_safetensors(path)
    else:
        state_dict, config = _read_torch(path)
    return _strip_prefix(state_dict, "module."), config


def _read_safetensors(path: Path) -> tuple[StateDict, dict[str, Any] | None]:
    try:
        state_dict = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except SafetensorError as exc:
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({exc}); it may be truncated: download it again"
        ) from exc
    config = json.loads(metadata["config"]) if "config" in metadata else None
    return state_dict, config


def _read_torch(path: Path) -> tuple[StateDict, dict[str, Any] | None]:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path} holds Python objects besides tensors, and they are never unpickled here (arbitrary "
            f"code could run): {reason}. If you trust the file, re-save only its state_dict, e.g. "
            "`torch.save(obj['state_dict'], 'clean.pt')` in a trusted session, or convert it with "
            "diffpir_core.models.save_prior"
        ) from exc
    except (RuntimeError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(
            f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: {exc}); a truncated or "
            "corrupted download looks like this: delete it and download it again"
        ) from exc
    return _unwrap(path, obj)


def _unwrap(path: Path, obj: Any) -> tuple[StateDict, dict[str, Any] | None]:
    """A flat ``{name: tensor}`` dict, or ``{"state_dict": {...}, "config": {...}}`` as written by tools."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors (a state_dict)")
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return dict(obj), None
    inner = obj.get("state_dict")
    if isinstance(inner, Mapping) and all(isinstance(v, torch.Tensor) for v in inner.values()):
        config = obj.get("config")
        return dict(inner), dict(config) if isinstance(config, Mapping) else None
    raise CheckpointError(
        f"{path} is a dict with entries {sorted(map(str, obj))[:8]} but no state_dict of tensors; "
        "save the model's state_dict() itself"
    )


def _strip_prefix(state_dict: StateDict, prefix: str) -> StateDict:
    if state_dict and all(key.startswith(prefix) for key in state_dict):
        return {key[len(prefix) :]: value for key, value in state_dict.items()}
    return state_dict


def expected_shapes(config: Mapping[str, Any]) -> Shapes:
    """Tensor name -> shape of the UNet that ``config`` builds, in state_dict order (built on ``meta``)."""
    with torch.device("meta"):
        model = build_unet(**config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


@functools.cache
def _preset_shapes(name: str) -> Shapes:
    return expected_shapes(PRESETS[name].load_config())


def _known_preset_shapes() -> dict[str, Shapes]:
    """Shapes of every preset whose config is available (the demo's needs its model card)."""
    known = {}
    for name in PRESETS:
        try:
            known[name] = _preset_shapes(name)
        except PresetError:
            continue
    return known


def _shape_agreement(file_shapes: Shapes, model_shapes: Shapes) -> float:
    """Fraction of the union of tensor names that both have with the same shape (1.0 = identical)."""
    names = file_shapes.keys() | model_shapes.keys()
    same = sum(1 for key in names if file_shapes.get(key) == model_shapes.get(key))
    return same / max(len(names), 1)


def match_preset(state_dict: Mapping[str, torch.Tensor]) -> tuple[str | None, str | None, float]:
    """(preset matched exactly or None, closest preset, its agreement fraction) for a state_dict."""
    file_shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    scores = {name: _shape_agreement(file_shapes, shapes) for name, shapes in _known_preset_shapes().items()}
    if not scores:
        return None, None, 0.0
    closest = max(scores, key=scores.__getitem__)
    exact = closest if scores[closest] == 1.0 else None
    return exact, closest, scores[closest]


def _describe(state_dict: Mapping[str, torch.Tensor]) -> str:
    """The few architecture numbers readable from tensor shapes, for error messages."""
    parts = []
    if "input_blocks.0.0.weight" in state_dict:
        parts.append(f"num_channels={state_dict['input_blocks.0.0.weight'].shape[0]}")
    if "out.2.weight" in state_dict:
        parts.append(f"out_channels={state_dict['out.2.weight'].shape[0]}")
    parts.append(f"{len(state_dict)} tensors")
    return ", ".join(parts)


def _listed(items: list[str]) -> str:
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def check_compatible(state_dict: Mapping[str, torch.Tensor], config: Mapping[str, Any], *, target: str) -> None:
    """Raise ``CheckpointError`` listing missing/unexpected keys and shape conflicts, with a preset hint."""
    model_shapes = expected_shapes(config)
    file_shapes = {key: tuple(value.shape) for key, value in state_dict.items()}
    missing = [key for key in model_shapes if key not in file_shapes]
    unexpected = [key for key in file_shapes if key not in model_shapes]
    conflicts = [
        f"{key} file {list(file_shapes[key])} vs model {list(shape)}"
        for key, shape in model_shapes.items()
        if key in file_shapes and file_shapes[key] != shape
    ]
    if not (missing or unexpected or conflicts):
        return
    lines = [f"the weights do not fit {target} ({_describe(state_dict)}):"]
    if missing:
        lines.append(f"  {len(missing)} missing keys: {_listed(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys: {_listed(unexpected)}")
    if conflicts:
        lines.append(f"  {len(conflicts)} shape conflicts: {_listed(conflicts)}")
    lines.append("  " + _hint(state_dict, target))
    raise CheckpointError("\n".join(lines))


def _hint(state_dict: Mapping[str, torch.Tensor], target: str) -> str:
    exact, closest, fraction = match_preset(state_dict)
    has = f"this file has {_describe(state_dict).split(',')[0]}"
    if exact is not None:
        return f"{has}: it looks like {exact}, not {target}; load it as load_prior({exact!r}) or with that config"
    if closest is not None and fraction >= 0.5:
        return (
            f"{has}: it matches no preset; closest is {closest} ({fraction:.0%} of tensors agree); "
            "pass the create_model kwargs it was trained with (config=... or a model card <file>.json)"
        )
    return (
        f"{has}: it matches no known preset; is it a guided-diffusion UNet? Pass the create_model kwargs it "
        "was trained with (config=... or a model card <file>.json)"
    )


def _sidecar_config(path: Path) -> dict[str, Any] | None:
    card = path.with_suffix(".json")
    if not card.is_file():
        return None
    data = json.loads(card.read_text())
    if not isinstance(data.get("config"), dict):
        raise CheckpointError(f"model card {card} has no 'config' object with the create_model kwargs")
    return dict(data["config"])


def _resolve_config(
    path: Path, state_dict: StateDict, stored: dict[str, Any] | None, given: Mapping[str, Any] | None
) -> tuple[dict[str, Any], str]:
    """The create_model kwargs for a bare file, and a label naming where they came from."""
    if given is not None:
        return dict(given), f"the given config for {path.name}"
    if stored is not None:
        return stored, f"the config stored in {path.name}"
    sidecar = _sidecar_config(path)
    if sidecar is not None:
        return sidecar, f"the model card {path.with_suffix('.json').name}"
    exact, _, _ = match_preset(state_dict)
    if exact is not None:
        return PRESETS[exact].load_config(), exact
    raise CheckpointError(
        f"cannot tell which architecture {path} is ({_describe(state_dict)}; {_hint(state_dict, 'any preset')}). "
        "Attention heads are not visible in tensor shapes, so pass config={create_model kwargs} or write "
        f'{path.with_suffix(".json")} as {{"config": {{...}}}}'
    )


def _missing_preset_file(preset: Preset, path: Path) -> CheckpointError:
    if preset.shipped is not None:
        return CheckpointError(
            f"the {preset.name} prior is not in this checkout ({path} is missing): it is produced by the "
            "project's prior training (see docs/quality.md); use another preset meanwhile"
        )
    return CheckpointError(
        f"{preset.name} weights are not downloaded: {path} is missing. Run `diffpir models download "
        f"{preset.name}`, or put {preset.filename} there (or point DIFFPIR_MODEL_DIR at its folder)"
    )


def load_prior(
    name_or_path: str | Path,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    config: Mapping[str, Any] | None = None,
    model_dir: Path | None = None,
) -> Prior:
    """Build the UNet for a preset name or checkpoint path and load its weights strictly.

    The returned ``Prior.unet`` is in eval mode on ``device`` in ``dtype``; ``Prior.sha256`` is the
    file's digest (for provenance in run records). ``config`` overrides the architecture of a bare
    file; ``model_dir`` overrides ``$DIFFPIR_MODEL_DIR`` for preset files.
    """
    preset = _as_preset(name_or_path)
    if preset is not None:
        path = preset.path(model_dir)
        if not path.is_file():
            raise _missing_preset_file(preset, path)
        state_dict, _ = read_checkpoint(path)
        cfg = dict(config) if config is not None else preset.load_config()
        target = name = preset.name
    else:
        path = Path(name_or_path).expanduser()
        state_dict, stored = read_checkpoint(path)
        cfg, target = _resolve_config(path, state_dict, stored, config)
        name = path.stem
    check_compatible(state_dict, cfg, target=target)
    digest = sha256_file(path)
    if preset is not None and preset.sha256 and digest != preset.sha256:
        raise CheckpointError(
            f"{path} has sha256 {digest}, but the official {preset.name} file has {preset.sha256}: it is a "
            f"different or damaged file; download it again with `diffpir models download {preset.name}`"
        )
    with torch.device("meta"):  # no random init: the file's tensors become the parameters
        unet = build_unet(**cfg)
    unet.load_state_dict(state_dict, strict=True, assign=True)
    unet.to(device=device, dtype=dtype).eval()
    return Prior(unet=unet, config=cfg, sha256=digest, name=name, path=path)


def prior_path(name_or_path: str | Path, model_dir: Path | None = None) -> Path:
    """The weights file ``load_prior`` reads for a preset name or a path (it need not exist yet)."""
    preset = _as_preset(name_or_path)
    return preset.path(model_dir) if preset is not None else Path(name_or_path).expanduser()


def prior_image_size(name_or_path: str | Path) -> int | None:
    """The training size of a prior (its config's ``image_size``) from its preset or card, without reading the
    weights; None when neither says."""
    preset = _as_preset(name_or_path)
    try:
        config = preset.load_config() if preset is not None else prior_card(name_or_path).get("config", {})
    except Exception:  # no card, no preset: the size is unknown, the run itself will say what is missing
        return None
    size = config.get("image_size")
    return int(size) if size else None


def prior_card(name_or_path: str | Path) -> dict[str, Any]:
    """The model card of a prior (a preset's shipped card, or ``<file>.json`` beside a checkpoint); {} if none."""
    preset = _as_preset(name_or_path)
    card = preset.card if preset is not None else Path(name_or_path).expanduser().with_suffix(".json")
    if card is None or not card.is_file():
        return {}
    return copy.deepcopy(_read_card(str(card), card.stat().st_mtime_ns))


@functools.lru_cache(maxsize=32)
def _read_card(path: str, mtime_ns: int) -> dict[str, Any]:
    """A card's JSON, read once per version of the file (every job validation and hash asks for it)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"model card {path} is not valid JSON ({err}); fix or remove it") from None
    return data if isinstance(data, dict) else {}


CARD_DEFAULT_METHOD = "diffpir"
"""The method a card's ``sampler.<kind>`` (without a method level) recommends settings for."""


def recommended_sampler(name_or_path: str | Path, kind: str, method: str = CARD_DEFAULT_METHOD) -> dict[str, Any]:
    """The sampler settings the prior's card recommends for ``method`` on task kind ``kind``: ``card.sampler.<method>.
    <kind>``; a card without a ``sampler.<method>`` section recommends ``sampler.<kind>`` for DiffPIR and nothing
    for the other methods."""
    section = prior_card(name_or_path).get("sampler", {})
    if not isinstance(section, dict):
        raise CheckpointError(
            f"the model card of {name_or_path} has a non-mapping sampler: give method: kind: settings"
        )
    where = f"sampler.{method}.{kind}" if method in section else f"sampler.{kind}"
    if method in section:
        settings = section[method].get(kind, {}) if isinstance(section[method], dict) else None
    else:
        settings = section.get(kind, {}) if method == CARD_DEFAULT_METHOD else {}
    if not isinstance(settings, dict):
        raise CheckpointError(f"the model card of {name_or_path} has a non-mapping {where}: give field: value pairs")
    return dict(settings)


def _as_preset(name_or_path: str | Path) -> Preset | None:
    """The preset meant by a name; ``None`` for something that is a path."""
    if isinstance(name_or_path, Path) or any(sep in name_or_path for sep in "/\\") or "." in name_or_path:
        return None
    return get_preset(name_or_path)


def save_prior(
    module_or_state_dict: torch.nn.Module | Mapping[str, torch.Tensor],
    path: str | Path,
    config: Mapping[str, Any],
    *,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write weights as ``.safetensors`` with the create_model kwargs in its metadata (float32 kept as is).

    The file then loads with ``load_prior(path)`` without any other information.
    """
    path = Path(path)
    if path.suffix not in _SAFETENSORS_SUFFIXES:
        raise CheckpointError(f"save_prior writes safetensors: give a path ending in .safetensors, not {path.name}")
    state_dict = (
        module_or_state_dict.state_dict()
        if isinstance(module_or_state_dict, torch.nn.Module)
        else module_or_state_dict
    )
    tensors = {key: value.detach().to("cpu").contiguous() for key, value in state_dict.items()}
    header = {"config": json.dumps(dict(config), sort_keys=True), "format": "diffpir-flow-prior/1"}
    header.update(metadata or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(path), metadata=header)
    return path


def inspect_checkpoint(path: str | Path) -> CheckpointInfo:
    """Read a file the way ``load_prior`` would and report its digest and which preset it matches."""
    path = Path(path)
    state_dict, _ = read_checkpoint(path)
    exact, closest, fraction = match_preset(state_dict)
    return CheckpointInfo(
        path=path,
        size=path.stat().st_size,
        sha256=sha256_file(path),
        num_tensors=len(state_dict),
        num_params=sum(value.numel() for value in state_dict.values()),
        dtypes=tuple(sorted({str(value.dtype).removeprefix("torch.") for value in state_dict.values()})),
        matches=exact,
        closest=closest,
        closest_fraction=fraction,
    )
