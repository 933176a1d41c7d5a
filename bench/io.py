"""Data-layer throughput: ingest and read, local and S3 (SeaweedFS on 127.0.0.1), against raw decoding.

Generates N small PNGs (default 2,000 of 64x64, smooth content plus noise), copies them to an S3 bucket, and
measures, each phase in a fresh spawned process (so its peak RSS is its own):

- ``raw decode``: read every file and decode it with Pillow, one thread (the floor any ingest pays);
- ``decode policy``: the same through ``decode_image`` (format checks, orientation, conversion, sha256);
- ``ingest``: folder -> sharded Zarr store, local and S3 -> S3;
- ``read``: every shard of the store back into memory;
- ``export``: the store back to PNG files (local).

images/s and MB/s use the source PNG bytes for decode/ingest and the decoded pixel bytes for read/export.
Peak RSS is the phase process's high-water mark; ``rss_after_imports`` is its baseline before any work.
Prints a table and writes JSON (default ``bench/results/io.json``). About 1-2 minutes on 2 cores.
"""

import argparse
import io
import json
import multiprocessing
import os
import platform
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import psutil
from PIL import Image

SHARD_SIZE = 64
BUCKET = "diffpir-bench"


def _make_images(root: Path, count: int, side: int) -> int:
    """Write ``count`` PNGs of side x side (gradient + noise, so they compress like photos) and return their bytes."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:side, 0:side]
    total = 0
    for i in range(count):
        base = (np.stack([xx * 3 + i, yy * 2, (xx + yy) + 2 * i], axis=-1) % 256).astype(np.int16)
        pixels = np.clip(base + rng.integers(-12, 13, base.shape), 0, 255).astype(np.uint8)
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="PNG")
        path = root / f"{i // 500:02d}" / f"img_{i:05d}.png"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(buffer.getvalue())
        total += len(buffer.getvalue())
    return total


def _phase_raw_decode(folder: str) -> dict[str, Any]:
    paths = sorted(Path(folder).rglob("*.png"))
    started = time.perf_counter()
    for path in paths:
        np.asarray(Image.open(io.BytesIO(path.read_bytes())).convert("RGB"))
    return {"images": len(paths), "seconds": time.perf_counter() - started}


def _phase_policy_decode(folder: str) -> dict[str, Any]:
    from diffpir_core.io import decode_image

    paths = sorted(Path(folder).rglob("*.png"))
    started = time.perf_counter()
    for path in paths:
        decode_image(path.read_bytes(), path.name)
    return {"images": len(paths), "seconds": time.perf_counter() - started}


def _phase_ingest(source: str, store: str, options: dict | None) -> dict[str, Any]:
    from diffpir_core.io import ingest

    summary = ingest(source, store, shard_size=SHARD_SIZE, storage_options=options, overwrite=True)
    return {"images": summary.ingested, "seconds": summary.seconds, "shards": summary.shards}


def _phase_read(store_uri: str, options: dict | None) -> dict[str, Any]:
    from diffpir_core.io import DatasetStore

    started = time.perf_counter()
    store = DatasetStore.open(store_uri, options)
    count = nbytes = 0
    for ref in store.shards():
        images = store.read_images(ref)
        count += len(images)
        nbytes += images.nbytes
    return {"images": count, "seconds": time.perf_counter() - started, "pixel_bytes": nbytes}


def _phase_export(store_uri: str, out: str) -> dict[str, Any]:
    from diffpir_core.io import export_images

    summary = export_images(store_uri, out)
    return {"images": summary.exported, "seconds": summary.seconds}


def _peak_rss_mb() -> float:
    """This process's RSS high-water mark. ``VmHWM`` resets at exec; ``ru_maxrss`` (the fallback) would include the
    parent's RSS at fork, because Linux keeps rusage across execve."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child(queue: multiprocessing.Queue, phase: str, args: tuple) -> None:
    import s3fs  # noqa: F401

    import diffpir_core.io  # noqa: F401  (imports count in the baseline, not the phase)

    baseline = psutil.Process().memory_info().rss
    result = globals()[phase](*args)
    result["rss_after_imports_mb"] = baseline / 2**20
    result["peak_rss_mb"] = _peak_rss_mb()
    queue.put(result)


def _run(phase: str, *args: Any) -> dict[str, Any]:
    """Run ``phase`` in a fresh spawned process and return its result with its peak RSS."""
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_child, args=(queue, phase, args))
    process.start()
    result = queue.get(timeout=600)
    process.join()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--side", type=int, default=64)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results" / "io.json"))
    parser.add_argument("--skip-s3", action="store_true", help="local phases only")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-io-") as tmp:
        work = Path(tmp)
        (work / "src").mkdir()
        source_bytes = _make_images(work / "src", args.images, args.side)
        pixel_bytes = args.images * args.side * args.side * 3
        rows: list[dict[str, Any]] = []

        def record(name: str, result: dict[str, Any], nbytes: int) -> None:
            result.update(
                phase=name,
                mb_per_s=nbytes / 1e6 / result["seconds"],
                images_per_s=result["images"] / result["seconds"],
            )
            rows.append(result)

        record("raw decode (Pillow, 1 thread)", _run("_phase_raw_decode", str(work / "src")), source_bytes)
        record("decode policy (decode_image, 1 thread)", _run("_phase_policy_decode", str(work / "src")), source_bytes)
        record(
            "ingest local -> local",
            _run("_phase_ingest", str(work / "src"), str(work / "store.zarr"), None),
            source_bytes,
        )
        record("read local", _run("_phase_read", str(work / "store.zarr"), None), pixel_bytes)
        record("export local (PNG)", _run("_phase_export", str(work / "store.zarr"), str(work / "png")), pixel_bytes)
        if not args.skip_s3:
            _s3_phases(work, source_bytes, pixel_bytes, record)

    table = [
        f"{'phase':<42} {'images':>7} {'s':>7} {'img/s':>8} {'MB/s':>7} {'peak RSS MB':>12} {'(baseline)':>10}",
    ]
    for row in rows:
        table.append(
            f"{row['phase']:<42} {row['images']:>7} {row['seconds']:>7.2f} {row['images_per_s']:>8.0f} "
            f"{row['mb_per_s']:>7.1f} {row['peak_rss_mb']:>12.0f} {row['rss_after_imports_mb']:>10.0f}"
        )
    print("\n".join(table))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                "images": args.images,
                "side": args.side,
                "shard_size": SHARD_SIZE,
                "source_mb": source_bytes / 1e6,
                "pixel_mb": pixel_bytes / 1e6,
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "load_average": os.getloadavg(),
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {out}")


def _s3_phases(work: Path, source_bytes: int, pixel_bytes: int, record: Any) -> None:
    """Copy the images to an S3 bucket (SeaweedFS), then ingest S3 -> S3 and read the S3 store back."""
    import s3fs

    from diffpir_flow.cli.seaweed import running_s3

    with running_s3(work / "seaweedfs", "bench-key", "bench-secret", (BUCKET,)) as server:
        options = server.storage_options()
        s3fs.S3FileSystem(**options).put(str(work / "src") + "/", f"{BUCKET}/src/", recursive=True)
        record(
            "ingest S3 -> S3 (SeaweedFS)",
            _run("_phase_ingest", f"s3://{BUCKET}/src", f"s3://{BUCKET}/store.zarr", options),
            source_bytes,
        )
        record("read S3 (SeaweedFS)", _run("_phase_read", f"s3://{BUCKET}/store.zarr", options), pixel_bytes)


if __name__ == "__main__":
    main()
