from slotssm.tasks.base import Task
from slotssm.tasks.registry import get_task, list_tasks, register_task
