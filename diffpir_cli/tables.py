"""The compact results table that ``diffpir run`` and ``diffpir demo`` end with: per task (and variant) the images,
NFEs, PSNR/SSIM (or the no-reference consistency), the gain over the baseline and the seconds per image."""

from collections.abc import Mapping, Sequence
from typing import Any

_COLUMNS = (
    ("task", 24, "s"),
    ("variant", 12, "s"),
    ("images", 6, "d"),
    ("NFEs", 5, "d"),
    ("PSNR", 7, ".2f"),
    ("SSIM", 7, ".4f"),
    ("consistency", 11, ".4f"),
    ("baseline", 12, "s"),
    ("gain dB", 8, "+.2f"),
    ("s/image", 8, ".1f"),
)


def _mean(summary: Mapping[str, Any], metric: str) -> float | None:
    return (summary.get("metrics", {}).get(metric) or {}).get("mean")


def summary_row(summary: Mapping[str, Any], variant: str = "", seconds: float | None = None) -> dict[str, Any]:
    """A table row from a job's ``summary.json`` (``seconds``: the run's own time, else the report's wall time)."""
    images = summary.get("images") or 0
    seconds = summary.get("wall_seconds") if seconds is None else seconds
    return {
        "task": summary.get("task"),
        "variant": variant,
        "images": images,
        "NFEs": summary.get("nfes"),
        "PSNR": _mean(summary, "psnr"),
        "SSIM": _mean(summary, "ssim"),
        "consistency": _mean(summary, "measurement_rms"),
        "baseline": (summary.get("baseline") or {}).get("method"),
        "gain dB": _mean(summary, "gain_psnr"),
        "s/image": seconds / images if images and seconds is not None else None,
    }


def comparison_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A table row from a comparison's table row (``reporting.comparison.table_rows``)."""
    gain = None if None in (row.get("psnr"), row.get("baseline_psnr")) else row["psnr"] - row["baseline_psnr"]
    return {
        "task": row.get("task"),
        "variant": row.get("variant"),
        "images": row.get("images"),
        "NFEs": row.get("nfes"),
        "PSNR": row.get("psnr"),
        "SSIM": row.get("ssim"),
        "consistency": None,
        "baseline": "n/a" if row.get("status") == "n/a" else "",
        "gain dB": gain,
        "s/image": row.get("seconds_per_image"),
    }


def render(rows: Sequence[Mapping[str, Any]]) -> str:
    """The rows as a fixed-width table; columns with no value in any row are left out, empty cells read ``-``."""
    shown = [c for c in _COLUMNS if any(row.get(c[0]) not in (None, "") for row in rows)]

    def cell(value: Any, width: int, spec: str) -> str:
        text = "-" if value in (None, "") else format(value, spec) if spec != "s" else str(value)
        return text.ljust(width) if spec == "s" else text.rjust(width)

    lines = [" ".join(name.ljust(width) if spec == "s" else name.rjust(width) for name, width, spec in shown)]
    lines += [" ".join(cell(row.get(name), width, spec) for name, width, spec in shown) for row in rows]
    return "\n".join(lines)
