"""How far DiffPIR's sample spread is from the exact posterior std, on the Gaussian oracle prior.

For each operator (noiseless inpainting of a 4×4 hole, SR ×2 with a 2×2 box kernel, 3×3 box blur; σ = 0.05 for the
last two), each prior (independent pixels, or correlated: exp(−d/1.5) in space, 0.8 across channels) and each ζ and
step count, DiffPIR draws ``--samples`` samples of one measurement with the prior's exact MMSE denoiser, and the
table gives the mean over pixels of (sample std / posterior std), with its standard error (for inpainting over the
hole pixels only; the known pixels' posterior std is 0 and the samples carry the t = 0 noise b_0/2 there).
Usage: ``python -m bench.uncertainty_oracle [--samples 256] [--threads 1]``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np
import torch

from bench.results import write_results
from diffpir_core.operators import Blur, Inpainting, Operator, SuperResolution, box_mask
from diffpir_core.sampling import DiffPIRConfig, restore_with
from diffpir_core.uncertainty.oracle import GaussianPrior

RESULTS = Path(__file__).resolve().parent / "results" / "uncertainty_oracle.json"
SHAPE = (3, 8, 8)


def operators() -> dict[str, tuple[Operator, float, np.ndarray]]:
    """name → (operator, noise σ, the pixels the ratio averages over)."""
    mask = box_mask(8, 8, 2, 2, 4, 4)
    everywhere = np.ones(SHAPE, dtype=bool)
    return {
        "inpaint hole": (Inpainting(mask), 0.0, np.broadcast_to(mask.numpy() == 0, SHAPE)),
        "sr x2": (SuperResolution(2, kernel=torch.full((2, 2), 0.25)), 0.05, everywhere),
        "blur 3x3": (Blur(torch.full((3, 3), 1 / 9)), 0.05, everywhere),
    }


def spread_ratio(prior: GaussianPrior, operator: Operator, sigma: float, config: DiffPIRConfig, count: int):
    """Per-pixel sample std over ``count`` samples divided by the posterior output std."""
    rng = np.random.default_rng(1)
    y = operator.A(prior.sample(1, rng))
    y = y + sigma * torch.from_numpy(rng.standard_normal(y.shape)).float()
    generators = [torch.Generator().manual_seed(k) for k in range(count)]
    batch = y.expand(count, *y.shape[1:]).contiguous()
    out = restore_with("diffpir", prior.denoiser(), operator, batch, config, generator=generators)
    return out.double().numpy().std(axis=0, ddof=1) / prior.output_std(operator, sigma)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=256)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    priors = {"diagonal": GaussianPrior.demo(SHAPE), "correlated": GaussianPrior.demo(SHAPE, correlation_length=1.5)}
    rows = []
    print(f"{'operator':13} {'prior':10} {'zeta':>4} {'steps':>5} {'std/posterior':>13} {'s.e.':>6}")
    for name, (operator, sigma, pixels) in operators().items():
        for prior_name, prior in priors.items():
            for zeta in (0.0, 0.3, 1.0):
                for steps in (20, 100, 250):
                    config = DiffPIRConfig(iter_num=steps, zeta=zeta, noise_sigma=sigma)
                    ratio = spread_ratio(prior, operator, sigma, config, args.samples)[pixels]
                    mean, error = float(ratio.mean()), float(ratio.std(ddof=1) / math.sqrt(ratio.size))
                    rows.append(
                        {
                            "operator": name,
                            "prior": prior_name,
                            "zeta": zeta,
                            "steps": steps,
                            "ratio": mean,
                            "se": error,
                        }
                    )
                    print(f"{name:13} {prior_name:10} {zeta:4.1f} {steps:5d} {mean:13.3f} {error:6.3f}", flush=True)
    write_results(args.out, {"samples": args.samples, "threads": args.threads, "rows": rows})


if __name__ == "__main__":
    main()
