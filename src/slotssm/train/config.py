"""A run directory's config: `load_run_config` rebuilds its `RunConfig` on top of its task's defaults.

The config dataclasses, overrides and JSON round-trip live on the ground floor, in `slotssm.config`; they are
re-exported here for the callers that import them from the training package.
"""

from __future__ import annotations

from slotssm.config import (  # noqa: F401  (re-exported)
    AMP_MODES,
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    atomic_write_text,
    coerce_value,
    config_from_dict,
    config_to_dict,
    convert_value,
    parse_value,
    read_config_file,
    save_config,
)


def load_run_config(run_dir) -> RunConfig:
    """Rebuild the `RunConfig` of a run directory on top of its task's defaults for the same preset and model."""
    from slotssm.tasks.registry import get_task

    d = read_config_file(run_dir)["config"]
    for key in ("task", "model_name", "preset"):
        if not isinstance(d.get(key), str):
            raise ValueError(f"config.json of {run_dir} has no string {key!r}")
    template = get_task(d["task"]).default_config(d["preset"], d["model_name"])
    return config_from_dict(d, template)
