"""A job from S3 to S3 (SeaweedFS on 127.0.0.1): restored shards, records, metrics and report in the bucket."""

import json
from pathlib import Path

import s3fs

from diffpir_core.io import DatasetStore
from diffpir_core.runs.plan import read_plans
from diffpir_core.runs.status import job_status
from diffpir_flow.flows.run import run


def test_s3_to_s3_job_completes_with_metrics_and_report(make_job, images_8: Path, s3_bucket, s3_credentials) -> None:
    bucket, options = s3_bucket
    fs = s3fs.S3FileSystem(**options)
    for path in sorted(images_8.glob("*.png"))[:6]:
        fs.pipe_file(f"{bucket}/faces/{path.name}", path.read_bytes())
    job = make_job(f"{bucket}/faces", f"{bucket}/jobs/faces-sr2", storage_options=options)

    state = run(job=job, return_state=True)
    assert state.is_completed(), state.message
    assert state.result()["restored"] == 2  # 6 images in shards of 4

    out = f"{bucket}/jobs/faces-sr2"
    plan = read_plans(out, options)[0]
    summary = json.loads(fs.cat_file(f"{plan.job_dir}/summary.json"))
    assert summary["images"] == 6 and summary["metrics"]["psnr"]["count"] == 6
    assert fs.exists(f"{plan.job_dir}/report.html") and fs.exists(f"{plan.job_dir}/metrics.csv")
    job_yaml = fs.cat_file(f"{plan.job_dir}/job.yaml").decode()
    assert not any(secret in job_yaml for secret in s3_credentials.values())

    store = DatasetStore.open(plan.output_store, options)
    restored = [store.read_array(ref, plan.restored_array) for ref in store.shards()]
    assert [r.shape for r in restored] == [(4, 32, 32, 3), (2, 32, 32, 3)]
    assert job_status(out, options)["counts"]["done"] == 2

    again = run(job=job, return_state=True)
    assert again.result()["skipped"] == 2
