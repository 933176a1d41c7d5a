"""Cost of the blind quality scores (NIQE, PIQE) per image, by image size, on crops of a real photo.

Each score and size is timed as the median of ``--repeats`` calls on a crop of ``skimage.data.astronaut``
(uint8 RGB, the report's input). Usage: ``python -m bench.blind [--threads 1] [--repeats 20]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch
from skimage import data

from bench.results import write_results
from diffpir_core.metrics import niqe, piqe

RESULTS = Path(__file__).resolve().parent / "results" / "blind.json"
SIZES = (192, 256, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    photo = data.astronaut()
    load_before = os.getloadavg()[0]
    rows = []
    niqe(photo[:256, :256])  # loads the pristine model once
    for score in (niqe, piqe):
        for size in SIZES:
            crop = photo[:size, :size]
            times = []
            for _ in range(args.repeats):
                start = time.perf_counter()
                score(crop)
                times.append(time.perf_counter() - start)
            rows.append(
                {"metric": score.__name__, "size": f"{size}x{size}", "median_ms": statistics.median(times) * 1e3}
            )
    print(f"{'metric':7} {'size':9} {'ms/image':>9}")
    for r in rows:
        print(f"{r['metric']:7} {r['size']:9} {r['median_ms']:9.1f}")
    payload = {"threads": args.threads, "repeats": args.repeats, "rows": rows}
    write_results(args.out, {**payload, "load_average": [load_before, os.getloadavg()[0]]})


if __name__ == "__main__":
    main()
