"""Run configuration: nested frozen dataclasses, dotted typed overrides, JSON round-trip, config files.

The ground floor of the package: it imports nothing else of slotssm, so the tasks (which build configs) and the
trainer (which reads them) both stand on it. A run is described by one `RunConfig`: the task and model names, the
preset they came from, and three groups of hyper-parameters: `data` and `model` (frozen dataclasses owned by the
task and the model) and `train` (below). Presets live with their task (`Task.default_config(preset, model_name)`);
the command line changes single leaves::

    cfg = apply_overrides(cfg, ["train.optim.lr=1e-3", "model.num_slots=4", "data.image_size=32,32"])

Every value is converted against the field's annotation by one converter (`convert_value`, from command-line text
or from decoded JSON) and the frozen dataclass is rebuilt with `dataclasses.replace`, so each group's
`__post_init__` checks run again. A run directory holds the resolved config as `config.json`;
`slotssm.train.config.load_run_config` rebuilds it on top of the task's defaults, so a key that no longer exists
(or a new one that the file lacks) is an error rather than a silently different run; the keys renamed or added
since a file was written are listed in `RENAMED_KEYS` and `ADDED_KEYS` and migrated.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import os
import tempfile
import types
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Union

AMP_MODES = ("off", "bf16", "fp16")


@dataclass(frozen=True)
class OptimConfig:
    """AdamW with linear warmup then cosine decay to `min_lr_ratio * lr`; `grad_clip <= 0` disables clipping."""

    lr: float = 3e-4
    weight_decay: float = 0.01
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    grad_clip: float = 1.0

    def __post_init__(self):
        if not self.lr > 0:
            raise ValueError(f"optim.lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise ValueError(f"optim.weight_decay must be >= 0, got {self.weight_decay}")
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ValueError(f"optim.betas must be two values in [0, 1), got {self.betas}")
        if self.warmup_steps < 0:
            raise ValueError(f"optim.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ValueError(f"optim.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}")


@dataclass(frozen=True)
class TrainConfig:
    """The training loop. `batch_size` is per process; `eval_every=0` evaluates only at the end."""

    steps: int = 1000
    batch_size: int = 16
    eval_batch_size: int = 32
    log_every: int = 10
    eval_every: int = 0
    ckpt_every: int = 200
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    amp: Literal["off", "bf16", "fp16"] = "off"
    # > 0: stop after this many seconds of training (wall clock, this process), whatever `steps` says; the lr
    # schedule then runs on max(step / steps, elapsed / time_limit_s), so it still decays to its end in time.
    time_limit_s: float = 0.0
    health: bool = True  # training-health probes every log_every steps (slotssm.train.health)
    # A run directory whose weights initialise these top-level modules of a fresh run's model (e.g. pre-training
    # then fine-tuning); ignored when a run resumes from its own checkpoint.
    init_from: str = ""
    init_modules: tuple[str, ...] = ("encoder", "seq")
    # A curriculum: stages trained one after another before this run, each in OUT/stages/stageN. A stage is the
    # run's config with a few overrides, written as one string ("data.num_frames=1 train.steps=2500"); it starts
    # from the previous stage's `stage_modules` (the first from `init_from`, if set), and the run itself starts
    # from the last stage's. A stage keeps every setting it does not override (a time_limit_s holds per stage).
    # slotssm.train.stages.
    stages: tuple[str, ...] = ()
    stage_modules: tuple[str, ...] = ("encoder", "seq", "head")
    optim: OptimConfig = field(default_factory=OptimConfig)

    def __post_init__(self):
        for name in ("steps", "batch_size", "eval_batch_size", "log_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"train.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("eval_every", "num_workers"):
            if getattr(self, name) < 0:
                raise ValueError(f"train.{name} must be >= 0, got {getattr(self, name)}")
        if self.amp not in AMP_MODES:
            raise ValueError(f"train.amp must be one of {AMP_MODES}, got {self.amp!r}")
        if not self.time_limit_s >= 0:
            raise ValueError(f"train.time_limit_s must be >= 0 (0: no limit), got {self.time_limit_s}")
        if self.init_from and not self.init_modules:
            raise ValueError("train.init_modules must name at least one module when train.init_from is set")
        if self.stages and not self.stage_modules:
            raise ValueError("train.stage_modules must name at least one module when train.stages is set")
        for i, stage in enumerate(self.stages):
            items = stage.split()
            if not items or any("=" not in item or item.startswith("=") for item in items):
                raise ValueError(f"train.stages[{i}]: expected overrides 'key=value key=value ...', got {stage!r}")
            for item in items:
                if item.split("=", 1)[0].strip() in STAGE_FIXED:
                    raise ValueError(f"train.stages[{i}]: {item.split('=', 1)[0]} is set by the stage chain, not "
                                     f"by a stage; got {stage!r}")


# Keys a curriculum stage may not set: the chain sets where each stage starts from, and a stage has no stages.
STAGE_FIXED = frozenset({"train.stages", "train.stage_modules", "train.init_from", "train.init_modules", "task",
                         "model_name", "preset"})


def curriculum(key: str, stages: dict) -> tuple[str, ...]:
    """{value of `key`: steps} -> `train.stages` strings, one stage per entry, in order:
    curriculum("data.num_frames", {1: 2500, 2: 1500}) -> ("data.num_frames=1 train.steps=2500", ...)."""
    return tuple(f"{key}={value} train.steps={steps}" for value, steps in stages.items())


@dataclass(frozen=True)
class RunConfig:
    """One run: `data` and `model` are the task's and the model's own frozen config dataclasses."""

    task: str
    model_name: str
    preset: str
    data: Any
    model: Any
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self):
        for name in ("data", "model", "train"):
            if not dataclasses.is_dataclass(getattr(self, name)):
                raise TypeError(f"RunConfig.{name} must be a dataclass instance, got {type(getattr(self, name))}")


# ---------------------------------------------------------------------------------------------------- overrides

# Keys renamed since config files were first written: old dotted key -> new one. Overrides and config files that
# use the old key are mapped onto the new one.
RENAMED_KEYS = {"data.init_from": "train.init_from"}
# Keys added since: a config file without one gets the value that reproduces what the file's run did (the option
# did not exist, so it was off), where the config it is rebuilt on has the field. FIELD_DEFAULT: the field's
# dataclass default, which is "off" for each of these; a callable: computed from the old file's dict.
FIELD_DEFAULT = object()
ADDED_KEYS: dict[str, Any] = {
    "train.init_from": FIELD_DEFAULT, "train.init_modules": FIELD_DEFAULT, "train.time_limit_s": FIELD_DEFAULT,
    "train.health": FIELD_DEFAULT, "train.stages": FIELD_DEFAULT, "train.stage_modules": FIELD_DEFAULT,
    "data.source": FIELD_DEFAULT, "data.root": FIELD_DEFAULT, "data.resize": FIELD_DEFAULT,
    "data.subpatch": FIELD_DEFAULT, "data.decoder_patch": FIELD_DEFAULT,  # blinking: one token per step
    "data.ball_weight": FIELD_DEFAULT,  # blinking: plain cross-entropy
    "data.max_frames": FIELD_DEFAULT,  # blinking: the frame-index table had num_frames rows
    "data.token_mlp": FIELD_DEFAULT,  # blinking: the token was the embedding sum
    "data.feedback_passes": FIELD_DEFAULT, "data.feedback_grad": FIELD_DEFAULT,  # video prediction: teacher forcing
    "data.decoder_norm": FIELD_DEFAULT, "data.even_masks": FIELD_DEFAULT,  # object-centric decoder options
    "data.decoder_out_stride": FIELD_DEFAULT,  # object-centric decoder: a Conv2d output layer
    "data.snitch_size": FIELD_DEFAULT, "data.cone_size": FIELD_DEFAULT,  # the snitch generator's defaults
    "data.decoder_resolution": lambda d: d["data"]["image_size"],  # snitch pre-training decoded at full size
    "data.snitch_weight": FIELD_DEFAULT,  # snitch pre-training: plain MSE
    "data.hard_pixels": FIELD_DEFAULT,  # snitch pre-training, object-centric: plain MSE
    "model.dt_range": FIELD_DEFAULT,  # SSM starting step sizes: mamba_ssm's (0.001, 0.1) before it was an option
    # inverted attention had one head per attention head of the model before it got its own count
    "model.inverted_heads": lambda d: d["model"]["num_heads"], "model.cross_heads": lambda d: d["model"]["num_heads"],
    "model.cross_chunk": FIELD_DEFAULT,  # a memory/speed setting of PSB: the same results for any value
    "model.residual": lambda d: False,  # SlotRNN's mixer read the GRU's output alone (the default is on now)
}


def _field_types(obj) -> dict[str, Any]:
    """Resolved annotations of the init fields of dataclass instance `obj`."""
    try:
        hints = typing.get_type_hints(type(obj))
    except (NameError, TypeError):  # unresolvable forward reference: fall back to the raw annotations
        hints = {}
    return {f.name: hints.get(f.name, f.type) for f in dataclasses.fields(obj) if f.init}


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) if isinstance(tp, type) else str(tp).replace("typing.", "")


def _is_union(tp) -> bool:
    return typing.get_origin(tp) in (Union, types.UnionType)


_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def _scalar_from_text(text: str, tp, bad: ValueError):
    if tp is bool:
        if text.strip().lower() in _TRUE:
            return True
        if text.strip().lower() in _FALSE:
            return False
        raise bad
    if tp is int:
        try:
            return int(text)
        except ValueError:
            try:  # "1e3" is a fine way to write 1000
                as_float = float(text)
            except ValueError:
                raise bad from None
            if as_float.is_integer():
                return int(as_float)
            raise bad from None
    if tp is float:
        try:
            return float(text)
        except ValueError:
            raise bad from None
    return text  # str


def _scalar_from_json(value, tp, bad: ValueError):
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise bad
    return float(value) if tp is float else value


def _text_items(text: str) -> list[str]:
    """ "(1, 2)", "[1,2]", "1,2", "(3,)" -> the element texts; quoted ones lose their quotes: '["a", 'b']' -> a, b
    (as JSON or Python would write a list of names)."""
    inner = text.strip()
    if inner[:1] in "([" and inner[-1:] in ")]":
        inner = inner[1:-1]
    items = [s.strip() for s in inner.split(",")] if inner.strip() else []
    if items and items[-1] == "":  # trailing comma, as in "(3,)"
        items = items[:-1]
    return [s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" else s for s in items]


def convert_value(value, tp, key: str, *, text: bool):
    """`value` as a value of annotation `tp`: command-line text (`text=True`) or a JSON-decoded value (lists become
    tuples where the field is a tuple). ValueError naming `key` and the type otherwise."""
    bad = ValueError(f"bad value for {key}: {value!r} is not a {_type_name(tp)}")
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if tp is Any:
        if not text:
            return value
        try:
            return ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    if _is_union(tp):
        is_none = value.strip().lower() in ("none", "null") if text else value is None
        if is_none and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert_value(value, arg, key, text=text)
            except ValueError:
                continue
        raise bad
    if origin is Literal:
        for allowed in args:
            try:
                if text and convert_value(value, type(allowed), key, text=True) == allowed:
                    return allowed
            except ValueError:
                continue
            if not text and value == allowed and type(value) is type(allowed):
                return value
        raise ValueError(f"bad value for {key}: {value!r} is not one of {list(args)}")
    if tp in (bool, int, float, str):
        return _scalar_from_text(value, tp, bad) if text else _scalar_from_json(value, tp, bad)
    if origin in (tuple, list):
        if text:
            items = _text_items(value)
        elif isinstance(value, (list, tuple)):
            items = list(value)
        else:
            raise bad
        return _coerce_sequence(items, tp, key, lambda v, t, k: convert_value(v, t, k, text=text))
    if text and dataclasses.is_dataclass(tp):
        raise ValueError(f"{key} is a group of settings, not a value; set one of its fields, e.g. {key}.<name>=...")
    if text:
        raise ValueError(f"{key}: cannot parse values of type {_type_name(tp)} from the command line")
    raise ValueError(f"{key}: cannot check values of type {_type_name(tp)}")


def parse_value(text: str, tp, key: str):
    """Parse command-line `text` as a value of annotation `tp` (`convert_value` on text)."""
    return convert_value(text, tp, key, text=True)


def positive_int(text: str) -> int:
    """argparse type of the command lines' counts (`--num`, `--batch-size`): an int >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an int >= 1, got {value}")
    return value


def coerce_value(value, tp, key: str):
    """Check a JSON-decoded `value` against annotation `tp` (`convert_value` on a decoded value)."""
    return convert_value(value, tp, key, text=False)


def _coerce_sequence(items: list, tp, key: str, convert):
    """Convert each element of `items` with `convert` against the element types of tuple[...] or list[...]."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is list:
        elem = args[0] if args else Any
        return [convert(v, elem, f"{key}[{i}]") for i, v in enumerate(items)]
    if not args or (len(args) == 2 and args[1] is Ellipsis):
        elem = args[0] if args else Any
        return tuple(convert(v, elem, f"{key}[{i}]") for i, v in enumerate(items))
    if len(items) != len(args):
        raise ValueError(f"bad value for {key}: expected {len(args)} values ({_type_name(tp)}), got {len(items)}")
    return tuple(convert(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(items, args)))


def _replace_leaf(obj, path: list[str], make_value, prefix: str):
    """Return a copy of dataclass `obj` with the leaf at `path` set to `make_value(annotation, full_key)`."""
    types_ = _field_types(obj)
    name, key = path[0], prefix + path[0]
    if name not in types_:
        where = prefix[:-1] or "the top level"
        raise ValueError(f"unknown config key {key!r}; valid keys at {where}: {', '.join(sorted(types_))}")
    current = getattr(obj, name)
    if len(path) > 1:
        if not dataclasses.is_dataclass(current):
            raise ValueError(f"unknown config key {prefix + '.'.join(path)!r}: {key} is a value, not a group")
        new = _replace_leaf(current, path[1:], make_value, key + ".")
    else:
        if dataclasses.is_dataclass(current):
            valid = ", ".join(sorted(_field_types(current)))
            raise ValueError(f"{key} is a group of settings, not a value; set one of its fields: {valid}")
        new = make_value(types_[name], key)
    try:
        return dataclasses.replace(obj, **{name: new})
    except (ValueError, TypeError) as err:
        raise ValueError(f"{key}: {err}") from None


def apply_overrides(cfg, overrides: list[str]):
    """Apply "dotted.key=value" strings to the nested frozen dataclass `cfg`, in order; returns a new config."""
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value, e.g. train.optim.lr=1e-3")
        key, text = item.split("=", 1)
        key = key.strip()
        if key in RENAMED_KEYS:
            warnings.warn(f"{key} is deprecated; use {RENAMED_KEYS[key]}", DeprecationWarning, stacklevel=2)
            key = RENAMED_KEYS[key]
        path = key.split(".")
        if not key or any(not p for p in path):
            raise ValueError(f"override {item!r} has an empty key")
        cfg = _replace_leaf(cfg, path, lambda tp, k, text=text: parse_value(text, tp, k), "")
    return cfg


# ------------------------------------------------------------------------------------------------ dict and JSON


def config_to_dict(cfg) -> dict:
    """Nested plain dict (JSON-ready: tuples become lists) of the init fields of dataclass `cfg`."""

    def convert(value):
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            return {f.name: convert(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
        if isinstance(value, (list, tuple)):
            return [convert(v) for v in value]
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        return value

    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"cfg must be a dataclass instance, got {type(cfg)}")
    return convert(cfg)


def flatten_dict(d: dict, prefix: str = "") -> dict:
    """{"train": {"optim": {"lr": 1e-3}}} -> {"train.optim.lr": 1e-3}: a nested config dict by dotted keys."""
    out = {}
    for k, v in d.items():
        out.update(flatten_dict(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def _rebuild(template, d: dict, prefix: str):
    types_ = _field_types(template)
    if not isinstance(d, dict):
        raise ValueError(f"config key {prefix[:-1] or '<root>'} must be a mapping, got {type(d).__name__}")
    unknown, missing = sorted(set(d) - set(types_)), sorted(set(types_) - set(d))
    if unknown or missing:
        where = prefix[:-1] or "the top level"
        raise ValueError(
            f"config does not match the task's defaults at {where}: unknown keys {unknown}, missing keys {missing}"
        )
    changes = {}
    for name, tp in types_.items():
        current, key = getattr(template, name), prefix + name
        if dataclasses.is_dataclass(current):
            changes[name] = _rebuild(current, d[name], key + ".")
        else:
            changes[name] = coerce_value(d[name], tp, key)
    try:
        return dataclasses.replace(template, **changes)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{prefix[:-1] or 'config'}: {err}") from None


def _migrate(d: dict, template) -> dict:
    """A copy of config dict `d` with the keys of RENAMED_KEYS moved and those of ADDED_KEYS filled in."""
    d = json.loads(json.dumps(d))  # deep copy
    for old, new in RENAMED_KEYS.items():
        *old_parents, old_leaf = old.split(".")
        *new_parents, new_leaf = new.split(".")
        src = d
        for p in old_parents:
            src = src.get(p) if isinstance(src, dict) else None
        if not isinstance(src, dict) or old_leaf not in src:
            continue
        value, dst = src.pop(old_leaf), d
        for p in new_parents:
            dst = dst.setdefault(p, {}) if isinstance(dst, dict) else None
        if isinstance(dst, dict) and new_leaf not in dst:
            dst[new_leaf] = value
    for key, meant in ADDED_KEYS.items():
        *parents, leaf = key.split(".")
        dst, obj = d, template
        for p in parents:
            dst, obj = dst.get(p) if isinstance(dst, dict) else None, getattr(obj, p, None)
        if not (isinstance(dst, dict) and leaf not in dst and dataclasses.is_dataclass(obj) and hasattr(obj, leaf)):
            continue
        if callable(meant):
            dst[leaf] = meant(d)  # reads keys the old file has
        else:
            f = next(f for f in dataclasses.fields(obj) if f.name == leaf)
            value = f.default_factory() if f.default is dataclasses.MISSING else f.default
            dst[leaf] = list(value) if isinstance(value, tuple) else value
    return d


def config_from_dict(d: dict, template_cfg):
    """Rebuild a config by setting every leaf of `d` on `template_cfg`; keys that do not match are an error.

    Keys renamed or added since `d` was written (RENAMED_KEYS, ADDED_KEYS) are migrated first.
    """
    return _rebuild(template_cfg, _migrate(d, template_cfg), "")


def atomic_write_text(path: Path, text: str) -> None:
    """Write `text` to `path` through a temporary file in the same directory and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_config(cfg, path, *, overrides: list[str] | tuple[str, ...] = (), extra: dict | None = None) -> None:
    """Write `cfg` as JSON to `path` atomically, with the override strings and the library version."""
    from slotssm import __version__

    payload = {"slotssm_version": __version__, "overrides": list(overrides), **(extra or {})}
    payload["config"] = config_to_dict(cfg)
    atomic_write_text(Path(path), json.dumps(payload, indent=2) + "\n")


def read_json_file(path: Path) -> Any:
    """The decoded JSON of file `path` (the reading side of `atomic_write_text`); a ValueError naming the file when
    it is not JSON."""
    try:
        return json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from None


def read_config_file(run_dir) -> dict:
    """The decoded `config.json` of a run directory (or the path of the file itself)."""
    path = Path(run_dir)
    path = path / "config.json" if path.is_dir() else path
    if not path.is_file():
        raise FileNotFoundError(f"no config.json in {path.parent}: not a run directory")
    payload = read_json_file(path)
    if not isinstance(payload, dict) or not isinstance(payload.get("config"), dict):
        raise ValueError(f"{path} has no 'config' mapping")
    return payload


