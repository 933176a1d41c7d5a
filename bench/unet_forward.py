"""UNet forward speed: latency and images/s per config, batch size and precision mode (random weights).

Default on CPU (about 2-3 minutes on 2 cores): the small test-vector config at batch 1/4/16 and the
FFHQ 256 config at batch 1/2. On CUDA (``--device cuda``, see bench/gpu_check.sh): FFHQ 256 at
batch 1-32 in fp32, tf32, bf16 and bf16+compile, with the fraction of the bf16 tensor-core peak.

Modes: ``fp32`` is the reference path (einsum attention, NCHW, no TF32); ``fast32`` adds SDPA
attention and channels_last; ``tf32`` is fast32 with TF32 matmuls/convolutions; ``bf16``/``fp16``
are fast32 under autocast; ``+compile`` wraps the forward in ``torch.compile``.
``err/fp32`` is ||out - ref|| / ||ref|| against the fp32 reference path on the same weights and
input, at each mode's first batch size. Weights are random (seeded) with the zero-initialised output
layers refilled, so the outputs are not trivially 0.
Prints a table and writes JSON (default ``bench/results/unet_forward.json``).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from diffpir_core.models import PRESETS, InferenceOptions, build_unet, optimize_for_inference, random_unet

NFE = 100  # network evaluations of a typical DiffPIR run (iter_num 100)

CONFIGS = {
    "small": {  # the guided_unet_small_headch test-vector config
        "image_size": 32,
        "num_channels": 32,
        "num_res_blocks": 2,
        "channel_mult": "1,1",
        "attention_resolutions": "32,16",
        "num_head_channels": 16,
        "learn_sigma": True,
        "use_scale_shift_norm": True,
        "resblock_updown": True,
    },
    "ffhq_256": PRESETS["ffhq_256"].config,
    "imagenet_256": PRESETS["imagenet_256"].config,
}

_FAST = {"attention": "sdpa", "channels_last": True}
MODES: dict[str, tuple[InferenceOptions, bool]] = {  # name -> (options, allow TF32)
    "fp32": (InferenceOptions(), False),
    "fast32": (InferenceOptions(**_FAST), False),
    "tf32": (InferenceOptions(**_FAST), True),
    "bf16": (InferenceOptions(**_FAST, autocast="bf16"), False),
    "fp16": (InferenceOptions(**_FAST, autocast="fp16"), False),
    "bf16+compile": (InferenceOptions(**_FAST, autocast="bf16", compile=True), False),
    "fp32+compile": (InferenceOptions(compile=True), False),
}

# Dense bf16 tensor-core peaks (TFLOP/s, no sparsity) by device-name substring.
BF16_PEAK_TFLOPS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L4": 121.0}

DEFAULT_PLANS = {
    "cpu": [("small", [1, 4, 16], ["fp32", "fast32", "bf16"]), ("ffhq_256", [1, 2], ["fp32", "fast32"])],
    "cuda": [("ffhq_256", [1, 2, 4, 8, 16, 32], ["fp32", "tf32", "bf16", "bf16+compile"])],
}


@dataclass
class Result:
    """One timed case; latencies are medians (and minima) over the repeats."""

    config: str
    mode: str
    batch: int
    latency_ms: float
    latency_min_ms: float
    images_per_s: float
    s_per_image_at_100_nfe: float
    tflops: float
    bf16_roofline_fraction: float | None
    rel_err_vs_fp32: float | None
    repeats: int


def forward_gflop(config: dict, batch: int = 1) -> float:
    """GFLOP of one forward (2 per multiply-add, elementwise ops not counted), counted on ``meta``."""
    size = int(config["image_size"])
    with torch.device("meta"):
        unet = build_unet(**config).eval()
        x, t = torch.zeros(batch, 3, size, size), torch.zeros(batch, dtype=torch.long)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            unet(x, t)
    return counter.get_total_flops() / 1e9


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _bf16_peak(device: torch.device, override: float | None) -> float | None:
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in BF16_PEAK_TFLOPS.items() if key in name), None)


def time_forward(
    fast: torch.nn.Module, x: torch.Tensor, t: torch.Tensor, warmup: int, repeats: int, min_seconds: float
) -> tuple[list[float], torch.Tensor]:
    """Seconds per forward (``warmup`` untimed calls, then at least ``repeats`` and ``min_seconds``)
    and the last output."""
    with torch.no_grad():
        for _ in range(warmup):
            fast(x, t)
        _sync(x.device)
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            out = fast(x, t)
            _sync(x.device)
            times.append(time.perf_counter() - t0)
    return times, out


def _inputs(size: int, batch: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(batch)
    x = torch.randn(batch, 3, size, size, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    return x.to(device), t.to(device)


Plan = list[tuple[str, list[int], list[str]]]  # (config, batch sizes, modes)


def _write(path: Path, env: dict, results: list[Result], skipped: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"env": env, "results": [asdict(r) for r in results], "skipped": skipped}, indent=2))


def run_plan(plan: Plan, device: torch.device, args: argparse.Namespace, env: dict) -> tuple[list[Result], list[str]]:
    """Time every (config, mode, batch) of the plan; cases past ``--max-seconds`` are skipped.

    The JSON is rewritten after every case, so a run killed by a time limit keeps what it measured.
    """
    results: list[Result] = []
    skipped: list[str] = []
    peak = _bf16_peak(device, args.peak_tflops)
    started = time.perf_counter()
    for config_name, batches, modes in plan:
        config = CONFIGS[config_name]
        gflop = forward_gflop(config)
        size = int(config["image_size"])
        base = random_unet(seed=0, zero_std=0.02, **config).to(device).eval()
        x_ref, t_ref = _inputs(size, batches[0], device)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
        with torch.no_grad():
            reference = base(x_ref, t_ref).float()
        for mode in modes:
            options, tf32 = MODES[mode]
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
            fast = optimize_for_inference(copy.deepcopy(base), options)
            for batch in batches:
                if time.perf_counter() - started > args.max_seconds:
                    skipped.append(f"{config_name}/{mode}/b{batch}")
                    continue
                x, t = _inputs(size, batch, device)
                warmup = args.warmup + (2 if options.compile else 0)
                try:
                    times, out = time_forward(fast, x, t, warmup, args.repeats, args.min_seconds)
                except torch.OutOfMemoryError:
                    skipped.append(f"{config_name}/{mode}/b{batch} (out of memory)")
                    continue
                err = ((out.float() - reference).norm() / reference.norm()).item() if batch == batches[0] else None
                median = statistics.median(times)
                tflops = gflop * batch / median / 1e3
                results.append(
                    Result(
                        config=config_name,
                        mode=mode,
                        batch=batch,
                        latency_ms=1e3 * median,
                        latency_min_ms=1e3 * min(times),
                        images_per_s=batch / median,
                        s_per_image_at_100_nfe=NFE * median / batch,
                        tflops=tflops,
                        bf16_roofline_fraction=tflops / peak if peak else None,
                        rel_err_vs_fp32=err,
                        repeats=len(times),
                    )
                )
                print(_row(results[-1]), flush=True)
                _write(args.out, env, results, skipped)
            del fast
            if device.type == "cuda":
                torch.cuda.empty_cache()
        del base
    return results, skipped


HEADER = (
    f"{'config':<10} {'mode':<13} {'batch':>5} {'ms/fwd':>9} {'img/s':>9} {'s/img@100NFE':>12} "
    f"{'TFLOP/s':>8} {'bf16 roof':>9} {'err/fp32':>9}"
)


def _row(r: Result) -> str:
    roof = f"{r.bf16_roofline_fraction:.1%}" if r.bf16_roofline_fraction is not None else "-"
    err = f"{r.rel_err_vs_fp32:.1e}" if r.rel_err_vs_fp32 is not None else ""
    return (
        f"{r.config:<10} {r.mode:<13} {r.batch:>5} {r.latency_ms:>9.1f} {r.images_per_s:>9.2f} "
        f"{r.s_per_image_at_100_nfe:>12.2f} {r.tflops:>8.3f} {roof:>9} {err:>9}"
    )


def _parse_plan(args: argparse.Namespace, device: torch.device) -> Plan:
    if not (args.configs or args.batch_sizes or args.modes):
        return DEFAULT_PLANS[device.type]
    default = DEFAULT_PLANS[device.type]
    configs = args.configs.split(",") if args.configs else [c for c, _, _ in default]
    batches = [int(b) for b in args.batch_sizes.split(",")] if args.batch_sizes else [1]
    modes = args.modes.split(",") if args.modes else ["fp32"]
    for name in configs:
        if name not in CONFIGS:
            raise SystemExit(f"unknown config {name!r}: choose from {', '.join(CONFIGS)}")
    for mode in modes:
        if mode not in MODES:
            raise SystemExit(f"unknown mode {mode!r}: choose from {', '.join(MODES)}")
    return [(name, batches, modes) for name in configs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", help=f"comma list of {', '.join(CONFIGS)} (default: the device's plan)")
    parser.add_argument("--batch-sizes", help="comma list, e.g. 1,2,4 (default: the device's plan)")
    parser.add_argument("--modes", help=f"comma list of {', '.join(MODES)}")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--min-seconds", type=float, default=0.0, help="time each case at least this long")
    parser.add_argument("--max-seconds", type=float, default=170.0, help="skip the remaining cases after this")
    parser.add_argument("--threads", type=int, help="torch CPU threads (1 is steadier on a shared, loaded machine)")
    parser.add_argument("--peak-tflops", type=float, help="bf16 dense peak of the device, for the roofline column")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "unet_forward.json")
    args = parser.parse_args()

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    plan = _parse_plan(args, device)
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "bf16_peak_tflops": _bf16_peak(device, args.peak_tflops),
        "gflop_per_forward": {name: round(forward_gflop(CONFIGS[name]), 2) for name, _, _ in plan},
    }
    print(f"device {env['device']}, torch {env['torch']}, {env['threads']} threads, load {env['load_average']}")
    print(HEADER, flush=True)
    results, skipped = run_plan(plan, device, args, env)
    if skipped:
        print(f"skipped (over --max-seconds {args.max_seconds:.0f} s or out of memory): {', '.join(skipped)}")
    _write(args.out, env, results, skipped)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
