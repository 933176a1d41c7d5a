"""A shard's measurements in the output store: evaluate mode synthesises and records them once; the
metrics and the report read them back exactly as the sampler saw them. Restore mode reads the input.

The store is the job's own, or for a comparison's variant the one its task's variants share
(``JobPlan.measurements``): the first variant to restore a shard records its measurements, the others read them.
"""

from diffpir_core.io import DatasetStore, ShardRef
from diffpir_core.runs.batches import ShardInputs, inputs_as_given, inputs_from_arrays, synthesise
from diffpir_core.runs.done import read_checked
from diffpir_core.runs.job import Job
from diffpir_core.runs.plan import JobPlan, group_of
from diffpir_core.task_kinds.base import GivenData


def measurement_paths(job: Job, prefix: str, height: int, width: int) -> dict[str, str]:
    """``{"y": "<prefix>/y", ...}``: the stored measurement arrays of a size group."""
    return {name: f"{prefix}/{name}" for name in job.task.measurement_arrays(height, width, job.storage_options)}


def _shard_paths(job: Job, plan: JobPlan, source: DatasetStore, ref: ShardRef) -> dict[str, str]:
    group = group_of(source, ref)
    return measurement_paths(job, str(plan.measurement_prefix), group.height, group.width)


def prepare_measurements(
    job: Job,
    plan: JobPlan,
    source: DatasetStore,
    out: DatasetStore,
    ref: ShardRef,
    checksum: str,
    given: GivenData | None = None,
) -> ShardInputs:
    """The shard's sampler inputs; in evaluate mode synthesised and recorded first unless a matching record exists."""
    if plan.measurement_prefix is None:
        return inputs_as_given(job.task, list(ref.ids), source.read_images(ref), job.storage_options, given)
    store = _measurement_store(plan, out, writable=True)
    arrays = _shard_paths(job, plan, source, ref)
    identity = _measurement_identity(plan, checksum)
    if all(store.record_matches(ref, path, identity) for path in arrays.values()):
        data = {
            name: read_checked(store, ref, path, store.read_record(ref, path, identity))[0]
            for name, path in arrays.items()
        }
    else:
        data = synthesise(job.task, list(ref.ids), source.read_images(ref), job.seed, job.storage_options)
        for name, path in arrays.items():
            written = store.write_shard_output(ref, path, data[name])
            store.write_record(ref, path, checksum=written, identity=identity)
    return inputs_from_arrays(job.task, list(ref.ids), data)


def _measurement_store(plan: JobPlan, out: DatasetStore, *, writable: bool) -> DatasetStore:
    if plan.measurement_store is None or plan.measurement_store == out.uri:
        return out
    return DatasetStore.open(plan.measurement_store, out.storage_options, writable=writable)


def _measurement_identity(plan: JobPlan, checksum: str) -> dict[str, str]:
    return {"measurement": str(plan.measurement_prefix), "input": checksum, "code_version": plan.code_version}


def measurement_inputs(job: Job, plan: JobPlan, source: DatasetStore, out: DatasetStore, ref: ShardRef) -> ShardInputs:
    """The shard's measurements and operator parameters as the sampler saw them (read only). Where the store holds
    none for the shard (a comparison's variant found done in its own store before the shared store existed), they are
    synthesised again: seeded per image, they are the ones the sampler saw."""
    if plan.measurement_prefix is None:
        return inputs_as_given(job.task, list(ref.ids), source.read_images(ref), job.storage_options)
    store = _measurement_store(plan, out, writable=False)
    paths = _shard_paths(job, plan, source, ref)
    identity = _measurement_identity(plan, source.rows_digest(ref))
    if not all(store.record_matches(ref, path, identity) for path in paths.values()):
        data = synthesise(job.task, list(ref.ids), source.read_images(ref), job.seed, job.storage_options)
        return inputs_from_arrays(job.task, list(ref.ids), data)
    data = {
        name: read_checked(store, ref, path, store.read_record(ref, path, identity))[0] for name, path in paths.items()
    }
    return inputs_from_arrays(job.task, list(ref.ids), data)
