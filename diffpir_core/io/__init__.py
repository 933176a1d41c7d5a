"""Data layer: image files (local, S3, memory, Zarr) into Zarr v3 dataset stores, and results back out.

No orchestration here; the Prefect tasks in ``tasks/`` call these functions. The store layout and the API used by
the orchestration are described in ``docs/store-layout.md``.
"""

from diffpir_core.io.decode import IMAGE_EXTENSIONS, DecodedImage, ImageDecodeError, decode_image, encode_png
from diffpir_core.io.export import ExportConflict, ExportSummary, export_conflicts, export_images, png_names
from diffpir_core.io.ingest import IngestSummary, ingest, refresh
from diffpir_core.io.sizing import SizePolicy, apply_size_policy
from diffpir_core.io.store import (
    IMAGES,
    SCHEMA_VERSION,
    DatasetStore,
    ImageMeta,
    QuarantineEntry,
    ShardRecord,
    ShardRef,
    SizeGroup,
    StoreError,
    pixel_digest,
    shard_checksum,
)

__all__ = [
    "IMAGES",
    "IMAGE_EXTENSIONS",
    "SCHEMA_VERSION",
    "DatasetStore",
    "DecodedImage",
    "ExportSummary",
    "ImageDecodeError",
    "ImageMeta",
    "IngestSummary",
    "QuarantineEntry",
    "ShardRecord",
    "ShardRef",
    "SizeGroup",
    "SizePolicy",
    "StoreError",
    "apply_size_policy",
    "decode_image",
    "encode_png",
    "ExportConflict",
    "export_conflicts",
    "export_images",
    "ingest",
    "pixel_digest",
    "png_names",
    "refresh",
    "shard_checksum",
]
