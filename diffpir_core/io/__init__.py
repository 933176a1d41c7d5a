"""Data layer: image files (local, S3, memory, Zarr) into Zarr v3 dataset stores, and results back out.

No orchestration here; the Prefect tasks in ``tasks/`` call these functions. The store layout and the API used by
the orchestration are described in ``docs/store-layout.md``.
"""

from diffpir_core.io.dataset import SCHEMA_VERSION, DatasetStore, SizeGroup
from diffpir_core.io.decode import IMAGE_EXTENSIONS, DecodedImage, ImageDecodeError, decode_image, encode_png
from diffpir_core.io.export import ExportConflict, ExportSummary, export_conflicts, export_images, png_names
from diffpir_core.io.ingest import IngestSummary, ingest, refresh
from diffpir_core.io.records import DamagedShard, ShardRecord, ShardRef, StoreError, record_name, shard_checksum
from diffpir_core.io.rows import IMAGES, ImageMeta, QuarantineEntry, pixel_digest
from diffpir_core.io.sizing import SizePolicy, apply_size_policy

__all__ = [
    "IMAGES",
    "IMAGE_EXTENSIONS",
    "SCHEMA_VERSION",
    "DamagedShard",
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
    "record_name",
    "refresh",
    "shard_checksum",
]
