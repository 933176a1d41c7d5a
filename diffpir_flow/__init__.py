"""diffpir_flow: the application around the ``diffpir_core`` library.

Its subpackages live in top-level folders of the repository: ``diffpir_flow.tasks`` (``tasks/``, Prefect tasks),
``diffpir_flow.flows`` (``flows/``, Prefect flows) and ``diffpir_flow.cli`` (``diffpir_cli/``, the ``diffpir``
command). Every rule of a run (plans, shards, the done decision, status) lives in ``diffpir_core.runs``; these
packages only wrap it for Prefect and the command line.
"""
