"""Reading a job's results from Python: the restored images of its done shards, verified, keyed by image id."""

from typing import Any

import numpy as np

from diffpir_core.io import DatasetStore
from diffpir_core.runs.done import job_identities, read_checked
from diffpir_core.runs.plan import export_source


def read_restored(
    output: str, job: str | None = None, storage_options: dict[str, Any] | None = None
) -> dict[str, np.ndarray]:
    """``{image id: uint8 HxWx3 restoration}`` of every done shard of the job in ``output`` (a job output, or a job
    folder ``<output>/jobs/<hash>``), in store order; ``job``: a hash prefix when the output holds several jobs.
    Quarantined images and shards that are not done are left out; every shard read is checked against its record's
    checksum (damage is a ``DamagedShard`` error naming the shard). A job with no done shard is a
    ``FileNotFoundError``: an empty result is never returned as if it were one."""
    options = dict(storage_options or {})
    plan = export_source(output, options, job)
    if plan is None:
        raise FileNotFoundError(f"{output} holds no diffpir job (no jobs/*/run.json); run a job into it first")
    store = DatasetStore.open(plan.output_store, options)
    identities = job_identities(plan, options)
    images: dict[str, np.ndarray] = {}
    for ref in store.shards():
        identity = identities.get(ref.key)
        record = None if identity is None else store.read_record(ref, plan.restored_array, identity)
        if record is None:
            continue
        data, _ = read_checked(store, ref, plan.restored_array, record)
        images.update((image_id, data[i]) for i, image_id in enumerate(ref.ids) if image_id not in record.quarantined)
    if not images:
        raise FileNotFoundError(
            f"job {plan.job_hash[:16]} in {output} has no restored image yet (no shard done, or every image "
            "quarantined: "
            "see `diffpir status`); run the job (`diffpir run`) first"
        )
    return images
