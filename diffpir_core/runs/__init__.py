"""The run layer: how a job becomes restored shards, records, status and a report, without any orchestrator.

Vocabulary (docs/glossary.md): a **job** (``job.py``) expands into **cells** (``cells.py``: one variant × task of a
comparison; a plain job is one cell); each cell gets a **plan** (``plan.py``, ``prepare.py``: its stores, arrays,
prior digest, threads); its shards run in **units** (``unit.py``) of a few **shards** each (``shard.py``: prepare,
restore, write, score), and a shard is done when its **record** exists (``done.py``). ``status.py`` and
``results.py`` read the same decision; ``report.py`` writes the report files. Prefect wraps these functions in
``diffpir_flow.tasks`` and ``diffpir_flow.flows`` and adds nothing but decorators, names, artifacts and dispatch.
"""
