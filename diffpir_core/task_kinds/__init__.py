"""Task kinds: one module per kind, each with one :class:`TaskKind` subclass; found by the registry.

Adding a kind is writing one module here (see docs/operators.md, "Add a task kind").
"""

from diffpir_core.task_kinds.base import ArraySpec, TaskKind
from diffpir_core.task_kinds.registry import TASK_KINDS, TaskSpec, default_task, task_kind, task_preset

__all__ = ["TASK_KINDS", "ArraySpec", "TaskKind", "TaskSpec", "default_task", "task_preset", "task_kind"]
