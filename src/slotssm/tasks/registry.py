"""Registry of tasks by name: `register_task` (class decorator), `get_task(name)`, `list_tasks()`.

The concrete task modules register themselves when imported; this module imports the ones listed in
`TASK_MODULES` the first time a task is looked up, so `get_task("video_prediction")` works without importing the
module by hand. A module that fails to import is an error, never a silently missing task.
"""

from __future__ import annotations

import importlib

from slotssm.tasks.base import Task

# Modules holding the concrete tasks; a new task adds its module here.
TASK_MODULES: tuple[str, ...] = (
    "slotssm.tasks.video_prediction",
    "slotssm.tasks.blinking_balls",
    "slotssm.tasks.object_centric",
    "slotssm.tasks.snitch_localization",
)

_TASKS: dict[str, type[Task]] = {}
_loaded = False


def _load_task_modules() -> None:
    global _loaded
    if not _loaded:
        for module in TASK_MODULES:
            importlib.import_module(module)
        _loaded = True


def register_task(task, config_cls: type | None = None, presets: dict | None = None):
    """Class decorator adding a `Task` subclass under its name; a second class under a taken name is an error.

        @register_task("video_prediction", VideoPredictionConfig, PRESETS)   # a PresetTask: name, data config,
        class VideoPrediction(PresetTask): ...                                # presets (as register_model)

        @register_task                                                       # any Task with a class attribute
        class Toy(Task): name = "toy"                                         # `name`
    """
    if isinstance(task, str):
        def deco(cls):
            cls.name = task
            if config_cls is not None:
                cls.config_cls = config_cls
            if presets is not None:
                cls.PRESETS = presets
            return _register(cls)

        return deco
    return _register(task)


def _register(cls: type[Task]) -> type[Task]:
    if not (isinstance(cls, type) and issubclass(cls, Task)):
        raise TypeError(f"register_task expects a Task subclass, got {cls!r}")
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__qualname__} needs a non-empty class attribute `name` to be registered")
    previous = _TASKS.get(name)
    # Re-importing the same module (e.g. a reload) replaces the entry; a different class under the name is a clash.
    if previous is not None and (previous.__module__, previous.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"task name {name!r} is already registered by {previous.__module__}.{previous.__qualname__}")
    _TASKS[name] = cls
    return cls


def get_task(name: str) -> type[Task]:
    """The task class registered under `name`; ValueError listing the known names otherwise."""
    _load_task_modules()
    if name not in _TASKS:
        known = ", ".join(sorted(_TASKS)) or "(none registered)"
        raise ValueError(f"unknown task {name!r}; known tasks: {known}")
    return _TASKS[name]


def list_tasks() -> list[str]:
    """Sorted names of all registered tasks."""
    _load_task_modules()
    return sorted(_TASKS)


def catalogue() -> str:
    """The tasks with their presets, and the models with theirs: what `slotssm list` and `train --help` print."""
    from slotssm.models import list_models, list_presets
    from slotssm.models.presets import describe_scales

    def label(cls, preset):  # "small (w64k6)": the task preset and the model size it picks
        size = getattr(cls, "PRESETS", {}).get(preset)
        return f"{preset} ({size.model_preset})" if size is not None else preset

    tasks = {name: [label(get_task(name), p) for p in get_task(name).presets] for name in list_tasks()}
    models = {name: list_presets(name) for name in list_models()}
    width = max(map(len, [*tasks, *models])) + 2
    lines = ["tasks (slotssm train TASK --preset P):"]
    lines += [f"  {name:<{width}}{', '.join(presets)}" for name, presets in tasks.items()]
    lines += ["models (--model NAME; each task preset picks the model size that fits it):"]
    lines += [f"  {name:<{width}}{', '.join(presets)}" for name, presets in models.items()]
    lines += ["model sizes (slotssm/models/presets.py; D slot width, K slots, the SSM's expand):", *describe_scales()]
    return "\n".join(lines)
