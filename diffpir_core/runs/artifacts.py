"""The words of a run's UI artifacts (the flows only publish them): a cell's shards table and report, the
comparison's table, each failed shard named once."""

from typing import Any

from diffpir_core.reporting import markdown_table, verdict
from diffpir_core.runs.failures import ShardFailure
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan
from diffpir_core.runs.report import artifact_key
from diffpir_core.runs.results import CellResult, all_failed, shard_table, shown_shards
from diffpir_core.runs.uncertainty import coverage_sentence


def _failures(failed: dict[str, ShardFailure], title: str = "") -> str:
    lines = "".join(f"\n- **{key}**: {failure}" for key, failure in sorted(failed.items()))
    return f"\n{title}{lines}\n" if failed else ""


def shards_artifact(job: Job, plan: JobPlan, result: CellResult) -> dict[str, Any]:
    """``create_table_artifact`` arguments for a cell's shards (failed and pending ones first when there are many)."""
    table = shard_table(result)
    shown = shown_shards(table)
    part = (
        f" ({len(shown)} of {len(table)} shards, failed and pending ones first; "
        "all in metrics.csv and `diffpir status`)"
    )
    return {
        "key": artifact_key(job, "shards", plan.variant),
        "table": shown,
        "description": f"Per-shard results of {cell_title(job, plan)} on {job.dataset_name()}"
        + (part if len(shown) < len(table) else ""),
    }


def cell_title(job: Job, plan: JobPlan) -> str:
    """``DPS on sr4`` (a comparison's cell) or ``sr4``."""
    return f"{plan.variant} on {job.task_label()}" if plan.variant else job.task_label()


def report_artifact(job: Job, plan: JobPlan, result: CellResult, report: dict[str, Any]) -> dict[str, Any]:
    """``create_markdown_artifact`` arguments for a cell's report: the summary table, the verdict, the uncertainty's
    coverage in one sentence (a job with ``uncertainty``), samples, files, failed shards."""
    sentence = verdict(report["summary"])
    coverage = report["summary"].get("coverage")
    markdown = (
        f"# {cell_title(job, plan)} on {job.dataset_name()} ({job.mode})\n\n{markdown_table([report['summary']])}\n"
        + (f"{sentence}\n\n" if sentence else "")
        + (f"{coverage_sentence(coverage)}\n\n" if coverage else "")
        + (f"## Samples\n\n{report['strip']}\n" if report["strip"] else "")
        + f"## Report files\n\nOutput: `{job.output}`\n\n{report['links']}"
        + _failures(result.failed, "## Failed shards\n")
    )
    return {
        "key": artifact_key(job, "report", plan.variant),
        "markdown": markdown,
        "description": "Aggregate results in the paper's shape, the gain over the baseline, samples, report files",
    }


def comparison_artifact(job: Job, results: list[CellResult], comparison: dict[str, Any]) -> dict[str, Any]:
    """``create_markdown_artifact`` arguments for a comparison's table, its files and every failed shard."""
    return {
        "key": artifact_key(job, "comparison").replace(f"-{job.task_label()}", ""),
        "markdown": (
            f"# Method comparison on {job.dataset_name()} ({job.mode})\n\n{comparison['markdown']}\n"
            f"## Report files\n\nOutput: `{job.output}`\n\n{comparison['links']}"
            + _failures(all_failed(results, True))
        ),
        "description": "Variants × tasks in the paper's layout: NFEs, PSNR, SSIM, LPIPS, FID, seconds per image",
    }
