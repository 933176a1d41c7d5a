"""Per-pixel uncertainty from K posterior samples: conformal calibration of their spread (docs/uncertainty.md)."""

from diffpir_core.uncertainty.calibration import (
    STD_FLOOR,
    Calibration,
    calibration_mismatch,
    calibration_split,
    coverage_summary,
    fit_scale,
    image_score,
    load_calibration,
    required_calibration_images,
    split_average,
    write_calibration,
)

__all__ = [
    "STD_FLOOR",
    "Calibration",
    "calibration_mismatch",
    "calibration_split",
    "coverage_summary",
    "fit_scale",
    "image_score",
    "load_calibration",
    "required_calibration_images",
    "split_average",
    "write_calibration",
]
