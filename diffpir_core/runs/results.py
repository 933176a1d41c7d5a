"""What the cells of a run came to: each cell's plan, shards and their outcome (:class:`CellResult`), the shards
table the UI shows, and the one summary a run returns (plain job or comparison, restoring or only scoring).

A plain job is a comparison of one cell: the same summary keys describe both (``variants`` and ``results`` are added
for a comparison of several cells).
"""

import time
from dataclasses import dataclass, field
from typing import Any

from diffpir_core.io import ShardRef
from diffpir_core.reporting import image_outcome, nothing_restored
from diffpir_core.runs.cells import Cell
from diffpir_core.runs.failures import SHOWN, ShardFailure
from diffpir_core.runs.plan import JobPlan

_SHARD_COLUMNS = ("shard", "status", "images", "seconds", "sample_seconds", "attempts", "batch_size", "threads")
_TABLE_METRICS = (
    "psnr",
    "baseline_psnr",
    "gain_psnr",
    "ssim",
    "gain_ssim",
    "lpips",
    "measurement_rms",
    "baseline_measurement_rms",
)
TABLE_SHARDS = 1000  # rows of the shards table artifact at most: Prefect refuses events over ~1.5 MB, and the UI slows


@dataclass
class CellResult:
    """One cell (a variant × task; a plain job has one) as a run ran it: its plan, shards and their outcome (none for
    a variant its method cannot run), then its scored rows and report summary."""

    cell: Cell
    plan: JobPlan | None = None
    refs: list[ShardRef] = field(default_factory=list)
    outcome: dict[str, Any] = field(
        default_factory=lambda: {"manifests": {}, "failed": {}}
    )  # failed: ShardFailure by key
    prepared: float = 0.0
    finished: float = 0.0
    rows: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    report_uris: dict[str, str] = field(default_factory=dict)

    @property
    def manifests(self) -> dict[str, dict[str, Any]]:
        """Manifests of the cell's finished shards, by shard key."""
        return self.outcome["manifests"]

    @property
    def failed(self) -> dict[str, ShardFailure]:
        """Failures of the cell's failed shards, by shard key."""
        return self.outcome["failed"]


def shown_shards(table: list[dict[str, Any]], limit: int = TABLE_SHARDS) -> list[dict[str, Any]]:
    """The rows of a shards table worth showing when it has more than ``limit``: every failed or pending shard first,
    then the others in order, back in shard order (all of them are in ``metrics.csv`` and ``diffpir status``)."""
    if len(table) <= limit:
        return table
    finished = ("restored", "skipped", "done")
    chosen = [i for i, row in enumerate(table) if row["status"] not in finished][:limit]
    chosen += [i for i, row in enumerate(table) if row["status"] in finished][: limit - len(chosen)]
    return [table[i] for i in sorted(chosen)]


def shard_table(result: CellResult) -> list[dict[str, Any]]:
    """One row per shard of a cell for the table artifact: the manifest's facts, mean metrics and the error if any."""
    by_shard: dict[str, list[dict[str, Any]]] = {}
    for row in result.rows:
        by_shard.setdefault(row["shard"], []).append(row)
    table = []
    for ref in result.refs:
        manifest = result.manifests.get(ref.key, {})
        entry: dict[str, Any] = {key: manifest.get(key) for key in _SHARD_COLUMNS}
        status = manifest.get("status", "failed" if ref.key in result.failed else "pending")
        entry.update(shard=ref.key, images=ref.size, status=status)
        for name in _TABLE_METRICS:
            values = [r[name] for r in by_shard.get(ref.key, []) if r.get(name) is not None]
            if values:
                entry[name] = round(sum(values) / len(values), 4)
        entry["error"] = str(result.failed[ref.key]) if ref.key in result.failed else None
        table.append(entry)
    return table


def failed_message(failed: dict[str, ShardFailure], total: int) -> str:
    """``N/M shard(s) failed: key: reason; …`` (the first few); for an unreachable storage endpoint one message
    naming it and the shards, which were not restored."""
    if down := next((f for f in failed.values() if f.unreachable), None):
        shards = ", ".join(sorted(failed)[:20]) + (f" (and {len(failed) - 20} more)" if len(failed) > 20 else "")
        return f"{len(failed)}/{total} shard(s) not restored, {down.message}; {down.fix}; shards: {shards}"
    listed = "; ".join(f"{key}: {reason}" for key, reason in sorted(failed.items())[:SHOWN])
    more = f" (and {len(failed) - SHOWN} more)" if len(failed) > SHOWN else ""
    return f"{len(failed)}/{total} shard(s) failed: {listed}{more}"


def all_failed(results: list[CellResult], comparison: bool) -> dict[str, ShardFailure]:
    """Failed shards of every cell (``variant / task / shard`` keys in a comparison)."""
    if not comparison:
        return {key: reason for r in results for key, reason in r.failed.items()}
    return {f"{r.cell.name} / {r.cell.task} / {key}": reason for r in results for key, reason in r.failed.items()}


def summarise(
    job_output: str,
    results: list[CellResult],
    source: dict[str, Any],
    started: float,
    comparison: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], str | None]:
    """The run's summary and, when the run failed, the message it fails with (shards failed, or every image
    quarantined). ``comparison``: the comparison report of a run with several cells."""
    manifests = [m for r in results for m in r.manifests.values()]
    images, quarantined = image_outcome(manifests)
    failed = all_failed(results, comparison is not None)
    planned = [r for r in results if r.plan is not None]
    first_prepared = min((r.prepared for r in planned), default=started)
    last_finished = max((r.finished for r in planned), default=first_prepared)
    summary: dict[str, Any] = {
        "shards": sum(len(r.refs) for r in results),
        "done": len(manifests),
        "restored": sum(m["status"] == "restored" for m in manifests),
        "skipped": sum(m["status"] == "skipped" for m in manifests),
        "failed": failed,
        "images_restored": images,
        "quarantined": quarantined,
        "output": job_output,
        "input_changes": source.get("changes"),
        "seconds": {
            "prepare": round(first_prepared - started, 3),
            "restore": round(last_finished - first_prepared, 3),
            "report": round(time.perf_counter() - last_finished, 3),
            "sampling": round(sum(m.get("sample_seconds", 0.0) for m in manifests), 3),
            "total": round(time.perf_counter() - started, 3),
        },
    }
    if comparison is None:
        (result,) = planned
        summary.update(report=result.report_uris.get("report.html"), job=result.plan.job_dir)
    else:
        summary.update(
            report=comparison["uris"].get("report.html"),
            job=comparison["uris"]["report.html"].rsplit("/", 1)[0],
            variants=comparison["table"],
            results=", ".join(f"{r.plan.job_dir}/restored.zarr" for r in planned),
        )
    if failed:
        return summary, failed_message(failed, summary["shards"])
    return summary, nothing_restored(images, quarantined)
