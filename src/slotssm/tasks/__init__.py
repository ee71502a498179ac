"""The paper's experiments as tasks: data, model, loss, evaluation protocol and pictures, by name."""

from slotssm.tasks.base import Task
from slotssm.tasks.registry import get_task, list_tasks, register_task

__all__ = ["Task", "get_task", "list_tasks", "register_task"]
