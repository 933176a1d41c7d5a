"""The reference test vectors in compact form: built once from the full set, expanded for every test session.

The full set (43 MB, see README.md) holds the DiffPIR reference's outputs on five cases, its tiny UNet,
the guided-diffusion UNet vectors and two model manifests. Most of its bytes are tensors that follow
exactly from a few others: the UNet weights from their seeded init recipes, each traced x_t' from the
traced x̂0 by the update, the outputs from the last state, x_T's noise from its seed. The compact files
keep everything else as it was and, for each omitted tensor, the SHA-256 of the reference's own tensor
(dtype, shape and bytes) and its strides. ``expand`` recomputes the omitted tensors, refuses any whose
digest differs from the reference's, and writes the full set's layout (same file names and keys, every
tensor bit-identical, with the reference's strides), so the tests read the same data whether
``DIFFPIR_TESTVECTORS`` points at the full set or not.

Only recomputations that give the same bits on every x86-64 CPU are used: seeded initialisation and the CPU
RNG, and the update's element-wise float32 arithmetic. The data step's x̂0 is kept as stored, because its FFT
rounds differently from one CPU's code path to another's (MKL picks them by instruction set).

    python tests/data/testvectors/compact.py build FULL_DIR     # write the compact files (maintainers)
    python tests/data/testvectors/compact.py verify FULL_DIR    # expand and compare with the full set
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import json
import lzma
import math
import shutil
import sys
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

HERE = Path(__file__).resolve().parent
FORMAT = "diffpir-compact-testvectors/1"
CASES = ("sr_x4_bicubic", "deblur_gaussian", "deblur_motion", "inpaint_box", "inpaint_random")
SMALL_VECTORS = ("headch", "numheads", "neworder")
MANIFESTS = ("guided_unet_ffhq256_manifest.json", "guided_unet_imagenet256_manifest.json")
REFERENCE = "diffpir_reference"
TINY_UNET = "tiny_unet_state_dict.pt"
TINY_RECIPE = (
    "torch.manual_seed(0); build the UNet of summary.json model_args (PyTorch default init); then every "
    "all-zero parameter, in parameter order, p.normal_(0, 0.05, generator=torch.Generator().manual_seed(1))"
)
SMALL_RECIPE = (
    "every parameter in state_dict order from torch.Generator().manual_seed(1234): weights "
    "randn * gain/sqrt(fan_in) (gain 1.5 for *.qkv.weight, else 1); GroupNorm weight randn * 0.1 + 1, "
    "GroupNorm bias randn * 0.1 + 0; other biases randn * 0.05"
)


# --- tensors -------------------------------------------------------------------------------------


def tensor_digest(t: torch.Tensor) -> str:
    """SHA-256 of a tensor's dtype, shape and values (C order), independent of its memory layout."""
    h = hashlib.sha256(f"{t.dtype}|{list(t.shape)}|".encode())
    h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def state_dict_digest(state_dict: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the keys in order and each tensor's digest."""
    h = hashlib.sha256()
    for key, value in state_dict.items():
        h.update(f"{key}:{tensor_digest(value)};".encode())
    return h.hexdigest()


def _layout(t: torch.Tensor) -> dict[str, Any]:
    return {
        "shape": list(t.shape),
        "dtype": str(t.dtype).removeprefix("torch."),
        "stride": list(t.stride()),
        "storage_offset": t.storage_offset(),
    }


def _with_layout(values: torch.Tensor, layout: dict[str, Any]) -> torch.Tensor:
    """``values`` laid out with the recorded strides (gaps in the storage, if any, are zeros)."""
    shape, stride, offset = layout["shape"], layout["stride"], layout["storage_offset"]
    if list(values.stride()) == stride and values.storage_offset() == offset:
        return values
    size = offset + 1 + sum((n - 1) * s for n, s in zip(shape, stride, strict=True) if n > 0)
    out = torch.zeros(size, dtype=values.dtype).as_strided(shape, stride, offset)
    out.copy_(values)
    return out


def _pack(obj: Any) -> Any:
    """Tensors are stored contiguous (only their own elements); other strides are recorded beside them."""
    if isinstance(obj, torch.Tensor):
        values = obj.detach().contiguous().clone()
        if obj.is_contiguous() and obj.storage_offset() == 0 and obj.untyped_storage().nbytes() == values.nbytes:
            return values
        return {"__strided__": values, **_layout(obj)}
    if isinstance(obj, OrderedDict):
        return {"__ordered__": [[k, _pack(v)] for k, v in obj.items()]}
    if isinstance(obj, dict):
        return {k: _pack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_pack(v) for v in obj]
    return obj


def _unpack(obj: Any) -> Any:
    if isinstance(obj, dict) and "__strided__" in obj:
        return _with_layout(obj["__strided__"], obj)
    if isinstance(obj, dict) and "__ordered__" in obj:
        return OrderedDict((k, _unpack(v)) for k, v in obj["__ordered__"])
    if isinstance(obj, dict):
        if "__derived__" in obj:
            return obj  # filled in by the caller, which knows how to recompute it
        return {k: _unpack(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_unpack(v) for v in obj]
    return obj


def _derived(t: torch.Tensor, rule: str, **extra: Any) -> dict[str, Any]:
    """The record that replaces an omitted tensor: how to recompute it and what it must equal."""
    return {"__derived__": rule, "sha256": tensor_digest(t), **_layout(t), **extra}


def _is_derived(obj: Any) -> bool:
    return isinstance(obj, dict) and "__derived__" in obj


def _fill(record: dict[str, Any], values: torch.Tensor, where: str) -> torch.Tensor:
    """The recomputed tensor, checked against the reference's digest and laid out as the reference's."""
    if list(values.shape) != record["shape"] or str(values.dtype).removeprefix("torch.") != record["dtype"]:
        raise ValueError(
            f"{where}: recomputed {record['__derived__']} has {values.dtype} {list(values.shape)}, "
            f"the reference {record['dtype']} {record['shape']}"
        )
    if tensor_digest(values) != record["sha256"]:
        raise ValueError(
            f"{where}: the recomputed {record['__derived__']} is not bit-identical to the reference tensor on "
            "this platform; run the tests with DIFFPIR_TESTVECTORS pointing at the full reference test vectors"
        )
    return _with_layout(values.contiguous(), record)


def save_xz(obj: Any, path: Path) -> None:
    buffer = io.BytesIO()
    torch.save(_pack(obj), buffer)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(lzma.compress(buffer.getvalue(), preset=9 | lzma.PRESET_EXTREME))


def load_xz(path: Path) -> Any:
    return _unpack(torch.load(io.BytesIO(lzma.decompress(path.read_bytes())), weights_only=True))


@contextmanager
def _quiet_rng() -> Iterator[None]:
    """Recompute on one thread and leave the global RNG and thread count as they were."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        torch.set_num_threads(threads)


# --- UNet weights ----------------------------------------------------------------------------------


def tiny_unet_state_dict(model_args: dict[str, Any]) -> OrderedDict[str, torch.Tensor]:
    """The reference's tiny UNet weights from their recipe (``TINY_RECIPE``)."""
    from diffpir_core.models import UNET_DEFAULTS, build_unet

    with _quiet_rng():
        torch.manual_seed(0)
        unet = build_unet(**{k: model_args[k] for k in UNET_DEFAULTS})
        refill = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for p in unet.parameters():
                if not p.any():
                    p.normal_(0, 0.05, generator=refill)
    return OrderedDict((k, v.clone()) for k, v in unet.state_dict().items())


def small_unet_state_dict(config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights of a ``guided_unet_small_*`` vector from their recipe (``SMALL_RECIPE``)."""
    from diffpir_core.models import build_unet

    with torch.device("meta"):
        unet = build_unet(**config)
    norms = {name for name, m in unet.named_modules() if isinstance(m, torch.nn.GroupNorm)}
    g = torch.Generator().manual_seed(1234)
    out: dict[str, torch.Tensor] = {}
    for key, meta in unet.state_dict().items():
        module, _, leaf = key.rpartition(".")
        z = torch.randn(meta.shape, generator=g)
        if module in norms:
            out[key] = z * 0.1 + (1.0 if leaf == "weight" else 0.0)
        elif leaf == "bias":
            out[key] = z * 0.05
        else:
            gain = 1.5 if key.endswith("qkv.weight") else 1.0
            out[key] = z * (gain / math.sqrt(math.prod(meta.shape[1:])))
    return out


def _check_state_dict(state_dict: dict[str, torch.Tensor], expected: str, what: str) -> None:
    if state_dict_digest(state_dict) != expected:
        raise ValueError(
            f"{what}: the weights rebuilt from their recipe are not bit-identical to the reference's on this "
            "platform (PyTorch init or RNG changed?); run the tests with DIFFPIR_TESTVECTORS pointing at the "
            "full reference test vectors"
        )


# --- reference cases -------------------------------------------------------------------------------


def _reference_noise(generator: torch.Generator) -> Callable[[torch.Size], torch.Tensor]:
    """N(0, I) drawn into an H×W×C-ordered tensor, as the reference's channels-last tensors are filled."""

    def draw(shape: torch.Size) -> torch.Tensor:
        b, c, h, w = shape
        return torch.empty((b, h, w, c)).permute(0, 3, 1, 2).normal_(generator=generator).contiguous()

    return draw


def _update(x, x0_hat, t, t_next, schedule, hp, draw):
    """x_t' = a_t'·x̂0 + √(1−ζ)·(√(b_t'² − σ_η²)·ε̂' + σ_η·n₁) + √ζ·b_t'·n₂, ε̂' = (x − a_t·x̂0)/b_t
    (docs/algorithm.md §4.4), in the reference's float32 operation order; n₁ then n₂ always drawn."""
    a, b, betas = schedule["sqrt_alphas_cumprod"], schedule["sqrt_1m_alphas_cumprod"], schedule["betas"]
    eps = (x - a[t] * x0_hat) / b[t]
    sigma_eta = hp["eta"] * b[t_next] / b[t] * torch.sqrt(betas[t])
    n1, n2 = draw(x.shape), draw(x.shape)
    zeta = hp["zeta"]
    return (
        a[t_next] * x0_hat
        + (1.0 - zeta) ** 0.5 * (torch.sqrt(b[t_next] ** 2 - sigma_eta**2) * eps + sigma_eta * n1)
        + zeta**0.5 * b[t_next] * n2
    )


def compact_case(case: dict[str, Any], index: int) -> dict[str, Any]:
    """A reference case with its recomputable tensors replaced by digest records."""
    out = copy.copy(case)
    seed = 1000 + index
    out["x_T_noise"] = _derived(case["x_T_noise"], "randn", seed=seed)
    for trace_key, out_key in (("trace", "out_x0"), ("trace_stochastic_seed0", "out_x0_stochastic_seed0")):
        steps = []
        for step in case[trace_key]:
            last = step["t_im1"] is None
            steps.append(
                {
                    **step,
                    # the data step's FFT rounds differently from one CPU's FFT code path to another's: its bits are
                    # kept
                    "x0_hat": _derived(step["x0_hat"], "copy of x0_model") if last else step["x0_hat"],
                    "x_next": _derived(step["x_next"], "copy of the previous x_next" if last else "update"),
                }
            )
        out[trace_key] = steps
        out[out_key] = _derived(case[out_key], "last x_next / 2 + 0.5")
    return out


def expand_case(compact: dict[str, Any], schedule: dict[str, torch.Tensor], name: str) -> dict[str, Any]:
    """The full reference case: every omitted tensor recomputed and checked against the reference's digest."""
    case = dict(compact)
    rec = case["x_T_noise"]
    case["x_T_noise"] = _fill(
        rec, torch.randn(rec["shape"], generator=torch.Generator().manual_seed(rec["seed"])), f"{name}.x_T_noise"
    )
    for trace_key, hp_key, out_key in (
        ("trace", "hp", "out_x0"),
        ("trace_stochastic_seed0", "hp_stochastic", "out_x0_stochastic_seed0"),
    ):
        hp = case[hp_key]
        draw = _reference_noise(torch.Generator().manual_seed(0))
        x = case["x_T"]
        steps = []
        for step in case[trace_key]:
            step = dict(step)
            where = f"{name}.{trace_key}[{step['i']}]"
            x0 = step["x0_model"]
            if step["t_im1"] is None:  # last step: network only, state unchanged
                step["x0_hat"] = _fill(step["x0_hat"], x0.clone(), f"{where}.x0_hat")
                step["x_next"] = _fill(step["x_next"], x.clone(), f"{where}.x_next")
            else:
                x0_hat = step["x0_hat"]
                draw(x.shape)  # the network call's discarded draw
                x = _fill(
                    step["x_next"],
                    _update(x, x0_hat, step["t_i"], step["t_im1"], schedule, hp, draw),
                    f"{where}.x_next",
                )
                step["x0_hat"], step["x_next"] = x0_hat, x
            steps.append(step)
        case[trace_key] = steps
        case[out_key] = _fill(case[out_key], steps[-1]["x_next"] / 2 + 0.5, f"{name}.{out_key}")
    return case


# --- whole sets --------------------------------------------------------------------------------------


def build(full: Path, out: Path = HERE) -> None:
    """Write the compact files of the full set ``full`` into ``out`` (the README is written by hand)."""
    ref, cref = full / REFERENCE, out / REFERENCE
    cref.mkdir(parents=True, exist_ok=True)
    for name in MANIFESTS:
        shutil.copyfile(full / name, out / name)
    shutil.copyfile(ref / "summary.json", cref / "summary.json")
    save_xz(torch.load(ref / "components.pt", weights_only=True), cref / "components.pt.xz")
    for index, name in enumerate(CASES):
        save_xz(compact_case(torch.load(ref / f"{name}.pt", weights_only=True), index), cref / f"{name}.pt.xz")
    tiny = torch.load(ref / TINY_UNET, weights_only=True)
    (cref / "tiny_unet_state_dict.json").write_text(
        json.dumps(
            {
                "format": FORMAT,
                "file": TINY_UNET,
                "recipe": TINY_RECIPE,
                "num_tensors": len(tiny),
                "num_params": sum(v.numel() for v in tiny.values()),
                "state_dict_sha256": state_dict_digest(tiny),
            },
            indent=1,
        )
        + "\n"
    )
    for name in SMALL_VECTORS:
        bundle = torch.load(full / f"guided_unet_small_{name}.pt", weights_only=True)
        state_dict = bundle["state_dict"]
        bundle["state_dict"] = {
            "__weights__": SMALL_RECIPE,
            "sha256": state_dict_digest(state_dict),
            "num_tensors": len(state_dict),
        }
        save_xz(bundle, out / f"guided_unet_small_{name}.pt.xz")


def expand(out: Path, compact: Path = HERE) -> Path:
    """Write the full set's layout into ``out`` from the compact files; returns ``out``."""
    ref, cref = out / REFERENCE, compact / REFERENCE
    ref.mkdir(parents=True, exist_ok=True)
    for name in MANIFESTS:
        shutil.copyfile(compact / name, out / name)
    shutil.copyfile(cref / "summary.json", ref / "summary.json")
    components = load_xz(cref / "components.pt.xz")
    torch.save(components, ref / "components.pt")
    with _quiet_rng():
        for name in CASES:
            torch.save(expand_case(load_xz(cref / f"{name}.pt.xz"), components["schedule"], name), ref / f"{name}.pt")
    tiny = json.loads((cref / "tiny_unet_state_dict.json").read_text())
    model_args = json.loads((cref / "summary.json").read_text())["model_args"]
    state_dict = tiny_unet_state_dict(model_args)
    _check_state_dict(state_dict, tiny["state_dict_sha256"], TINY_UNET)
    torch.save(state_dict, ref / TINY_UNET)
    for name in SMALL_VECTORS:
        bundle = load_xz(compact / f"guided_unet_small_{name}.pt.xz")
        weights = bundle["state_dict"]
        bundle["state_dict"] = small_unet_state_dict(bundle["config"])
        _check_state_dict(bundle["state_dict"], weights["sha256"], f"guided_unet_small_{name}.pt")
        torch.save(bundle, out / f"guided_unet_small_{name}.pt")
    return out


def _differences(a: Any, b: Any, where: str) -> Iterator[str]:
    """Every place where two loaded objects differ in type, structure, dtype, shape, strides or bits."""
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            yield f"{where}: {type(a).__name__} vs {type(b).__name__}"
        elif a.dtype != b.dtype or a.shape != b.shape or a.stride() != b.stride() or not torch.equal(a, b):
            yield f"{where}: tensors differ"
    elif type(a) is not type(b):
        yield f"{where}: {type(a).__name__} vs {type(b).__name__}"
    elif isinstance(a, dict):
        if list(a) != list(b):
            yield f"{where}: keys differ"
        for k in a:
            yield from _differences(a[k], b.get(k), f"{where}.{k}")
    elif isinstance(a, list):
        if len(a) != len(b):
            yield f"{where}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=False)):
            yield from _differences(x, y, f"{where}[{i}]")
    elif a != b:
        yield f"{where}: {a!r} vs {b!r}"


def verify(full: Path, work: Path) -> list[str]:
    """Expand the compact set into ``work`` and list its differences from the full set (none expected)."""
    expand(work)
    files = [
        *MANIFESTS,
        *(f"guided_unet_small_{n}.pt" for n in SMALL_VECTORS),
        *(f"{REFERENCE}/{n}" for n in ("summary.json", "components.pt", TINY_UNET)),
        *(f"{REFERENCE}/{n}.pt" for n in CASES),
    ]
    problems = []
    for rel in files:
        if rel.endswith(".json"):
            if (full / rel).read_bytes() != (work / rel).read_bytes():
                problems.append(f"{rel}: bytes differ")
            continue
        expected, got = (torch.load(root / rel, weights_only=True) for root in (full, work))
        problems += _differences(expected, got, rel)
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["build", "verify"])
    parser.add_argument("full", type=Path, help="the full test-vector folder (with diffpir_reference/)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(HERE.parents[2]))  # the repository root, for diffpir_core
    if args.command == "build":
        build(args.full)
    import tempfile

    with tempfile.TemporaryDirectory() as work:
        problems = verify(args.full, Path(work))
    print("\n".join(problems) or "expanded compact set = full set (every tensor, dtype, shape and stride)")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
