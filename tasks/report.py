"""Prefect tasks writing a cell's report, a comparison's table and a tuning's report (always rewritten: no cache
over 100,000 rows)."""

from prefect import task
from prefect.cache_policies import NO_CACHE

from diffpir_core.runs import report
from diffpir_core.tuning import report as tuning_report
from diffpir_flow.tasks.retries import retry_transient

write_job_report = task(name="report", retry_condition_fn=retry_transient, cache_policy=NO_CACHE)(
    report.write_job_report
)
write_comparison_report = task(name="comparison-report", retry_condition_fn=retry_transient, cache_policy=NO_CACHE)(
    report.write_comparison_report
)
write_tuning_report = task(name="tuning-report", retry_condition_fn=retry_transient, cache_policy=NO_CACHE)(
    tuning_report.write_tuning_report
)
