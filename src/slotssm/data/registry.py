"""Registry of synthetic video generators: names, parameters with defaults, deterministic per-video randomness.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. In the data package n is the number of videos (it becomes B
downstream), K the number of objects, and H, W are the image height and width in pixels (not heads).

Every generator is a function ``fn(rngs, p) -> dict[str, np.ndarray]`` where ``rngs`` holds one
``numpy.random.Generator`` per video and ``p`` the resolved parameters. Video ``i`` of a dataset always draws from
``SeedSequence(seed, spawn_key=(i,))``, so splitting a dataset into batches cannot change a single byte: batch
``[a, b)`` is generated with ``offset=a`` and is identical to rows ``a:b`` of the whole.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "GeneratorSpec",
    "register",
    "get_spec",
    "list_generators",
    "resolve_params",
    "video_rngs",
    "generate",
]


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
    """What the store and the CLI need to know about one generator.

    name: registry name. version: bump whenever the bytes produced for the same params and seed change.
    defaults: every parameter with its default (the type of the default is the type accepted).
    dims: per output key, the names of its axes; "video" first for per-video arrays, "time" marks frame axes.
    static: keys that are the same for every video (e.g. a palette): not stacked along videos.
    images: keys holding images or masks (uint8), used for previews.
    validate: checks the resolved params (ranges, choices) and raises ValueError naming the parameter.
    """

    name: str
    version: int
    fn: Callable[[list[np.random.Generator], dict[str, Any]], dict[str, np.ndarray]]
    defaults: dict[str, Any]
    dims: dict[str, tuple[str, ...]]
    static: frozenset[str] = frozenset()
    images: tuple[str, ...] = ()
    validate: Callable[[dict[str, Any]], None] | None = None
    doc: str = ""


_REGISTRY: dict[str, GeneratorSpec] = {}


def register(spec: GeneratorSpec) -> GeneratorSpec:
    """Add a generator to the registry (an existing name is an error)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"generator {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def _load_builtin() -> None:
    # The built-in generators register themselves when imported.
    from slotssm.data import blinking_balls, bouncing_balls, shapes_video, snitch  # noqa: F401


def get_spec(name: str) -> GeneratorSpec:
    """The spec of a registered generator; an unknown name is a ValueError listing the known ones."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"name: unknown generator {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def list_generators() -> list[str]:
    """Names of all registered generators, sorted."""
    _load_builtin()
    return sorted(_REGISTRY)


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Convert `value` to the type of `default` (int, float, str, bool, tuple of numbers)."""
    bad = ValueError(f"parameter {name!r}: expected {type(default).__name__} like {default!r}, got {value!r}")
    if isinstance(default, bool):
        if not isinstance(value, (bool, np.bool_)):
            raise bad
        return bool(value)
    if isinstance(default, int):
        if isinstance(value, (bool, np.bool_)) or not float(value).is_integer():
            raise bad
        return int(value)
    if isinstance(default, float):
        if isinstance(value, (bool, np.bool_, str)):
            raise bad
        return float(value)
    if isinstance(default, str):
        if not isinstance(value, str):
            raise bad
        return value
    if isinstance(default, tuple):
        if np.isscalar(value) and not isinstance(value, str):
            value = (value, value)  # a fixed number where a (low, high) range is expected
        if isinstance(value, str) or (len(value) == 0 and len(default) > 0):
            raise bad
        kind = type(default[0]) if default else float
        try:
            return tuple(_coerce(f"{name}[{i}]", v, kind(0)) for i, v in enumerate(value))
        except TypeError as err:
            raise bad from err
    if default is None:
        return value
    raise bad


def resolve_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Defaults of generator `name` overridden by `params`, type-checked and validated.

    An unknown parameter is a ValueError naming it. The result is JSON-compatible after `json.dumps`
    (tuples become lists there) and is what the manifest records.
    """
    spec = get_spec(name)
    unknown = sorted(set(params) - set(spec.defaults))
    if unknown:
        raise ValueError(
            f"unknown parameter {unknown[0]!r} for generator {name!r}; known: {', '.join(sorted(spec.defaults))}"
        )
    resolved = dict(spec.defaults)
    for key, value in params.items():
        resolved[key] = _coerce(key, value, spec.defaults[key])
    if spec.validate is not None:
        spec.validate(resolved)
    return resolved


def params_to_json(params: dict[str, Any]) -> dict[str, Any]:
    """The JSON form of resolved params (tuples as lists), used for manifests and comparisons."""
    return json.loads(json.dumps(params, sort_keys=True))


def video_rngs(seed: int, offset: int, num_videos: int) -> list[np.random.Generator]:
    """One independent generator per video index ``offset .. offset + num_videos - 1``, derived from (seed, index)."""
    if seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed}")
    indices = range(offset, offset + num_videos)
    return [np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(i,))) for i in indices]


def generate(name: str, num_videos: int, seed: int = 0, *, offset: int = 0, **params: Any) -> dict[str, np.ndarray]:
    """Generate `num_videos` videos of generator `name` (videos ``offset ..`` of the dataset with this seed).

    Identical bytes for the same name, params, seed and video indices, whatever the batch split.
    Returns a dict of numpy arrays; per-video arrays have the video axis first (length num_videos).
    """
    if int(num_videos) != num_videos or num_videos < 1:
        raise ValueError(f"num_videos: expected a positive integer, got {num_videos!r}")
    if offset < 0:
        raise ValueError(f"offset: expected a non-negative integer, got {offset}")
    spec = get_spec(name)
    p = resolve_params(name, params)
    out = spec.fn(video_rngs(int(seed), int(offset), int(num_videos)), p)
    missing = set(spec.dims) - set(out)
    if missing:  # a generator bug, not a user error
        raise RuntimeError(f"generator {name!r} did not return {sorted(missing)}")
    return out
