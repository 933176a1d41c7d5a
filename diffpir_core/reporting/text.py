"""Text renderings of a run: the paper-shaped markdown table, ``report.md``, ``metrics.csv``, JSON."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from diffpir_core.io.csv_text import csv_text
from diffpir_core.reporting.summary import ROW_KEYS, Row, metric_names

# (metric, column title) of the paper's table: task x PSNR / SSIM / LPIPS, then FID.
PAPER_COLUMNS = (("psnr", "PSNR ↑ (dB)"), ("ssim", "SSIM ↑"), ("lpips", "LPIPS ↓"))
DECIMALS = {"psnr": 2, "psnr_y": 2, "ssim": 4, "ssim_y": 4, "lpips": 4, "fid": 2, "measurement_rms": 4}


def format_number(value: float | None, decimals: int = 4) -> str:
    """Fixed decimals; None -> "n/a", infinity -> "inf"."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    return f"{value:.{decimals}f}"


def decimals(column: str) -> int:
    """Decimals shown for a metric column; ``baseline_*`` and ``gain_*`` follow their metric."""
    return DECIMALS.get(column.removeprefix("baseline_").removeprefix("gain_"), 4)


def format_gain(value: float | None, decimals: int = 2) -> str:
    """A signed difference (+0.91, −0.57); None -> "n/a"."""
    if value is None or math.isnan(value):
        return "n/a"
    return format_number(value, decimals) if math.isinf(value) else f"{value:+.{decimals}f}".replace("-", "−")


def format_duration(seconds: float) -> str:
    """3.2 s, 12 min 05 s, 2 h 03 min."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes} min {secs:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def paper_table_rows(summaries: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and cells of the aggregate table, one line per summary (shared by markdown and HTML).

    The measurement-consistency column (restore mode) and the baseline columns (its name, its PSNR and
    the mean gains, or its consistency in restore mode) appear only when some summary has them.
    """
    with_consistency = any(_mean(summary, "measurement_rms") is not None for summary in summaries)
    with_gain = any(_mean(summary, "gain_psnr") is not None for summary in summaries)
    with_baseline_rms = any(_mean(summary, "baseline_measurement_rms") is not None for summary in summaries)
    header = ["task", *(title for _, title in PAPER_COLUMNS), "FID ↓"]
    header += ["‖y − A(x̂)‖ RMS"] if with_consistency else []
    header += ["baseline"] if with_gain or with_baseline_rms else []
    header += ["baseline PSNR", "PSNR gain (dB)", "SSIM gain"] if with_gain else []
    header += ["baseline ‖y − A(x̃)‖ RMS"] if with_baseline_rms else []
    header += ["NFEs", "wall time", "images/s", "images"]
    lines = []
    for summary in summaries:
        cells = [str(summary["task"])]
        cells += [format_number(_mean(summary, key), DECIMALS[key]) for key, _ in PAPER_COLUMNS]
        cells.append(format_number(summary["fid"], DECIMALS["fid"]))
        if with_consistency:
            cells.append(format_number(_mean(summary, "measurement_rms"), DECIMALS["measurement_rms"]))
        if with_gain or with_baseline_rms:
            cells.append(str((summary.get("baseline") or {}).get("method") or "n/a"))
        if with_gain:
            cells.append(format_number(_mean(summary, "baseline_psnr"), DECIMALS["psnr"]))
            cells += [format_gain(_mean(summary, "gain_psnr"), 2), format_gain(_mean(summary, "gain_ssim"), 4)]
        if with_baseline_rms:
            cells.append(format_number(_mean(summary, "baseline_measurement_rms"), DECIMALS["measurement_rms"]))
        cells += [
            str(summary["nfes"]),
            format_duration(summary["wall_seconds"]),
            format_number(summary["images_per_second"], 3),
            str(summary["images"]),
        ]
        lines.append(cells)
    return header, lines


def _mean(summary: Mapping[str, Any], metric: str) -> float | None:
    return (summary["metrics"].get(metric) or {}).get("mean")


def image_caption(scores: Mapping[str, Any], method: str | None) -> str:
    """The numbers of one image: "PSNR 24.10 dB (bicubic 22.96, gain +1.14) · SSIM …" or, in restore mode,
    both measurement consistencies; metrics without a value are left out."""
    name = method or "baseline"
    parts = []
    for metric, label, unit in (
        ("psnr", "PSNR", " dB"),
        ("ssim", "SSIM", ""),
        ("measurement_rms", "‖y − A(x)‖ RMS", ""),
    ):
        value = scores.get(metric)
        if value is None:
            continue
        text = f"{label} {format_number(value, decimals(metric))}{unit}"
        base = scores.get(f"baseline_{metric}")
        if base is not None:
            gain = scores.get(f"gain_{metric}")
            extra = f", gain {format_gain(gain, decimals(metric))}" if gain is not None else ""
            text += f" ({name} {format_number(base, decimals(metric))}{extra})"
        parts.append(text)
    return " · ".join(parts)


SETTING_LABELS = {
    "lambda_": "λ",
    "zeta": "ζ",
    "iter_num": "steps",
    "num_steps": "steps",
    "timesteps": "steps",
    "eta": "η",
    "eta_b": "η_b",
    "noise_sigma": "σ",
    "sigma": "σ",
}
"""How sampler settings read in reports: λ, not ``lambda_``."""
KEY_SETTINGS = ("lambda_", "zeta", "iter_num", "num_steps", "timesteps", "eta", "eta_b")
"""The sampler settings a report shows near its top (those a method has)."""


def setting_label(name: str) -> str:
    """The human label of a sampler setting (``lambda_`` → ``λ``); other names with ``_`` read as spaces."""
    return SETTING_LABELS.get(name, name.rstrip("_").replace("_", " "))


def settings_line(config: Mapping[str, Any]) -> str:
    """``method diffpir · λ=2 · ζ=1 · steps=20 · 20 NFEs`` from a report's ``config`` (the settings that ran)."""
    parts = [f"method {config['method']}"] if config.get("method") else []
    parts += [f"{setting_label(key)}={value}" for key, value in key_settings(config).items()]
    return " · ".join(parts)


def key_settings(config: Mapping[str, Any]) -> dict[str, Any]:
    """The :data:`KEY_SETTINGS` a sampler config has, as they ran (floats shortened)."""
    return {key: format_setting(config[key]) for key in KEY_SETTINGS if config.get(key) is not None}


def format_setting(value: Any) -> str:
    """A setting's value as short text: 2.0 → 2, 0.30000001 → 0.3."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def method_caveat(method: str, task: str) -> str | None:
    """Why ``method`` is not expected to do ``task`` (a task label or title) well, or None: DPIR on inpainting with
    holes (a box, or masks from files; random-pixel masks are fine)."""
    if method == "dpir" and task.startswith("inpaint") and "random" not in task:
        return (
            "DPIR cannot fill large holes: its prior is a denoiser, which spreads colour only a few pixels into an "
            "unknown region per iteration, so a hole wider than that stays near its start (black); its scores there "
            "measure the hole, not the method (DPIR suits random-pixel masks)"
        )
    return None


def verdict(summary: Mapping[str, Any]) -> str | None:
    """One sentence on the restoration against the baseline ("+0.91 dB PSNR … better on 14 of 16
    images"), or on both consistencies in restore mode; None when the run has no baseline values."""
    baseline = summary.get("baseline") or {}
    method = baseline.get("method") or "the baseline"
    share = ""
    if baseline.get("images") and baseline["images"] < summary["images"]:
        share = f" (baseline scored on {baseline['images']} of {summary['images']} images, picked by id)"
    psnr_gain = _mean(summary, "gain_psnr")
    if psnr_gain is not None:
        gains = [f"{format_gain(psnr_gain, 2)} dB PSNR"]
        if _mean(summary, "gain_ssim") is not None:
            gains.append(f"{format_gain(_mean(summary, 'gain_ssim'), 4)} SSIM")
        better = baseline.get("better", {}).get("psnr", 0)
        return (
            f"Gain over {method}: {', '.join(gains)} on average; the restoration has the higher PSNR on "
            f"{better} of {summary['metrics']['gain_psnr']['count']} images{share}."
        )
    rms = _mean(summary, "baseline_measurement_rms")
    sentences = []
    if rms is not None:
        sentences.append(
            f"Measurement consistency ‖y − A(x)‖ RMS: restored {format_number(_mean(summary, 'measurement_rms'), 4)}, "
            f"{method} {format_number(rms, 4)} (about σ = a restoration that explains its measurement){share}."
        )
    sentences += [
        _blind_sentence(summary, name, method) for name in ("piqe", "niqe") if _mean(summary, name) is not None
    ]
    return " ".join(sentences) or None


def _blind_sentence(summary: Mapping[str, Any], name: str, method: str) -> str:
    """``PIQE (blind, lower = more natural): degraded 61.2, bicubic 48.0, restored 30.1.``"""
    parts = [
        f"{label} {format_number(_mean(summary, key), 2)}"
        for label, key in (("degraded", f"degraded_{name}"), (method, f"baseline_{name}"), ("restored", name))
        if _mean(summary, key) is not None
    ]
    return f"{name.upper()} (blind, lower = more natural): {', '.join(parts)}."


def markdown_table(summaries: Sequence[Mapping[str, Any]]) -> str:
    """The aggregate table in the paper's shape as GitHub markdown (the Prefect UI report artifact)."""
    header, lines = paper_table_rows(summaries)
    out = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    out += ["| " + " | ".join(_md_escape(cell) for cell in cells) + " |" for cells in lines]
    return "\n".join(out) + "\n"


def render_markdown(summary: Mapping[str, Any]) -> str:
    """``report.md``: run facts, the paper table, per-metric statistics, missing metrics, failures."""
    parts = [
        f"# DiffPIR restoration report: {summary['task']}",
        "",
        f"- dataset: `{summary['dataset']}`",
        f"- prior: `{summary['prior']}`",
        f"- mode: {summary['mode']}",
        f"- settings that ran: {settings_line(summary['config'])} · {summary['nfes']} NFEs",
        f"- images scored: {summary['images']}, failed: {len(summary['failed'])}, "
        f"quarantined: {len(summary['quarantined'])}",
        f"- generated: {summary['generated_at']}",
        "",
        "## Results",
        "",
        markdown_table([summary]),
        *([sentence, ""] if (sentence := verdict(summary)) else []),
        *(
            [f"Note: {caveat}.", ""]
            if (caveat := method_caveat(str(summary["config"].get("method", "")), summary["task"]))
            else []
        ),
        "## Per-image statistics",
        "",
        "| metric | mean | std | min | max | images |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, stats in summary["metrics"].items():
        d = decimals(name)
        cells = [format_number(stats[key], d) for key in ("mean", "std", "min", "max")]
        parts.append(f"| {name} | " + " | ".join(cells) + f" | {stats['count']} |")
    if summary["unavailable"]:
        parts += ["", "## Unavailable metrics", ""]
        parts += [f"- {_md_escape(message)}" for message in summary["unavailable"].values()]
    for title, key in (("Failed", "failed"), ("Quarantined", "quarantined")):
        if summary[key]:
            parts += ["", f"## {title}", ""]
            parts += [f"- {_md_escape(problem_line(item))}" for item in summary[key]]
    parts += ["", "## Configuration", "", "```json", to_json(summary["config"]), "```", ""]
    return "\n".join(parts)


def problem_line(item: Mapping[str, Any]) -> str:
    """ "shard-0003 (attempts 3): CUDA out of memory" from a failed entry (its ``error``), "a.png (stage restore,
    shard 32x32/000000): no mask file ..." from a quarantined one (its ``reason``)."""
    name = item.get("id", item.get("shard", "?"))
    extras = [
        f"{key} {value}" for key, value in item.items() if key not in ("id", "error", "reason") and value != name
    ]
    label = f"{name} ({', '.join(extras)})" if extras else str(name)
    return f"{label}: {item.get('error', item.get('reason', 'no reason recorded'))}"


def csv_columns(rows: Sequence[Row]) -> list[str]:
    """Columns of the per-image table: id/shard/task first, then metrics, then the other keys."""
    if not rows:
        return list(ROW_KEYS)
    columns = [key for key in ROW_KEYS if any(key in row for row in rows)]
    columns += metric_names(rows)
    seen = dict.fromkeys(columns)
    for row in rows:
        seen.update(dict.fromkeys(row))
    return list(seen)


def metrics_csv(rows: Sequence[Row]) -> str:
    """``metrics.csv``: one line per image with the columns of :func:`csv_columns`; empty = missing.

    Text cells that a spreadsheet would run as a formula get a leading ``'`` (:mod:`diffpir_core.io.csv_text`).
    """
    columns = csv_columns(rows)
    return csv_text(columns, [{key: _csv_value(row.get(key)) for key in columns} for row in rows])


def to_json(data: Any) -> str:
    """Strict JSON (no NaN/Infinity tokens): infinities become "inf"/"-inf", NaN becomes null."""
    return json.dumps(_json_safe(data), indent=2, ensure_ascii=False)


def _json_safe(data: Any) -> Any:
    if isinstance(data, Mapping):
        return {str(key): _json_safe(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_json_safe(value) for value in data]
    if hasattr(data, "item") and hasattr(data, "dtype"):  # numpy scalars
        data = data.item()
    if isinstance(data, float) and not math.isfinite(data):
        return None if math.isnan(data) else ("inf" if data > 0 else "-inf")
    return data


def _csv_value(value: Any) -> Any:
    if value is None:
        return ""
    if hasattr(value, "item") and hasattr(value, "dtype"):
        return value.item()
    return value


def _md_escape(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")
