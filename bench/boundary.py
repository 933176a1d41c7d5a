"""Cost of the camera-boundary data step beside the circular FFT step and a whole sampler step, on a 512² photo.

For deblurring (Gaussian 21², std 2.5) and SR ×2 (256² → 512²), σ = 0.01, the demo prior with its card's λ and the
default tiling: the network's x̃0 on the canvas (one call), the circular closed-form data step on the frame, and the
canvas data step (preconditioned CG, default 20 iterations, warm-started) over the ρ_t of a 20-step run, each
timed as the median of ``--repeats`` runs. A sampler step = network + data step (the update is a few element-wise
operations). Usage: ``python bench/boundary.py [--threads 1] [--repeats 3]``.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from skimage import data

from bench.results import write_results
from diffpir_core.models import X0Predictor, load_prior, recommended_sampler
from diffpir_core.operators import Blur, SuperResolution, gaussian_kernel, imresize
from diffpir_core.runs.batches import Fit
from diffpir_core.sampling import Schedule, rho_weight, visited_timesteps

RESULTS = Path(__file__).resolve().parent / "results" / "boundary.json"


def _median_seconds(run: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _case(
    name: str, photo: torch.Tensor, repeats: int, predictor: X0Predictor, lambda_: float
) -> dict[str, float | str]:
    if name == "deblur":
        frame_op, canvas_op = Blur(gaussian_kernel(21, 2.5)), Blur(gaussian_kernel(21, 2.5), boundary="reflect")
        y = canvas_op.A(photo)
    else:
        frame_op, canvas_op = SuperResolution(2), SuperResolution(2, boundary="reflect")
        y = imresize(photo.double(), 0.5).float()
    canvas = canvas_op.on_canvas(y, predictor.unet.downsample_factor)
    schedule = Schedule.linear()
    steps = visited_timesteps(20, "quad", 999, schedule.num_train_timesteps)[:-1]
    rhos = [schedule.rho(t, rho_weight(lambda_, [0.01])) for t in steps]
    x_canvas = canvas.init_image(y) * 2 - 1
    x_frame = frame_op.init_image(y) * 2 - 1
    t = torch.full((1,), steps[len(steps) // 2], dtype=torch.long)
    with torch.no_grad():
        network = _median_seconds(lambda: predictor(x_canvas, t), repeats)
        circular_term = frame_op.prepare(y)
        circular = _median_seconds(lambda: [circular_term.prox(x_frame, rho) for rho in rhos], repeats) / len(rhos)
        iterations: list[int] = []

        def canvas_run() -> None:
            term = canvas.prepare(y)  # a new term per run: the warm start then sees a sampler's sequence of steps
            for rho in rhos:
                term.prox(x_canvas, rho)
                iterations.append(term.last_iterations)

        boundary = _median_seconds(canvas_run, repeats) / len(rhos)
    step = network + boundary
    return {
        "task": name,
        "frame": f"{photo.shape[-2]}x{photo.shape[-1]}",
        "canvas": f"{canvas.canvas.height}x{canvas.canvas.width}",
        "network_s": network,
        "circular_step_s": circular,
        "canvas_step_s": boundary,
        "cg_iterations_mean": sum(iterations) / len(iterations),
        "canvas_share_of_step": boundary / step,
        "circular_share_of_step": circular / (network + circular),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    unet = load_prior("demo").unet
    predictor = X0Predictor(Fit().network(unet))
    lambda_ = recommended_sampler("demo", "deblur").get("lambda_", 7.0)
    photo = torch.from_numpy(data.astronaut()).permute(2, 0, 1)[None].float() / 255  # 512 x 512
    rows = [_case(name, photo, args.repeats, predictor, lambda_) for name in ("deblur", "sr2")]
    print(f"{'task':7} {'canvas':9} {'network':>9} {'FFT step':>9} {'canvas step':>12} {'CG its':>7} {'share':>7}")
    for r in rows:
        print(
            f"{r['task']:7} {r['canvas']:9} {r['network_s'] * 1e3:7.0f}ms {r['circular_step_s'] * 1e3:7.1f}ms "
            f"{r['canvas_step_s'] * 1e3:10.1f}ms {r['cg_iterations_mean']:7.1f} {r['canvas_share_of_step']:7.1%}"
        )
    write_results(args.out, {"threads": args.threads, "repeats": args.repeats, "rows": rows})


if __name__ == "__main__":
    main()
