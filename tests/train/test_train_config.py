"""Config overrides (typed, nested, errors), dict/JSON round-trip, config.json of a run."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal, Optional

import pytest
import toytask  # noqa: F401  (registers "toy")

from slotssm.train.config import (
    OptimConfig,
    RunConfig,
    TrainConfig,
    apply_overrides,
    config_from_dict,
    config_to_dict,
    load_run_config,
    save_config,
)


@dataclass(frozen=True)
class Inner:
    size: tuple[int, int] = (8, 8)
    dims: tuple[int, ...] = (1, 2)
    names: list[str] = field(default_factory=lambda: ["a"])
    flag: bool = False
    mode: Literal["fast", "slow"] = "fast"
    limit: Optional[int] = None
    rate: float = 0.5

    def __post_init__(self):
        if self.rate < 0:
            raise ValueError(f"rate must be >= 0, got {self.rate}")


@dataclass(frozen=True)
class Outer:
    name: str = "x"
    count: int = 1
    inner: Inner = field(default_factory=Inner)


def toy_config() -> RunConfig:
    return toytask.ToyTask.default_config("tiny", "mlp")


def test_nested_overrides_on_a_run_config():
    cfg = toy_config()
    new = apply_overrides(cfg, ["train.optim.lr=1e-3", "model.hidden=4", "train.optim.betas=(0.8, 0.95)"])
    assert new.train.optim.lr == 0.001 and isinstance(new.train.optim.lr, float)
    assert new.model.hidden == 4
    assert new.train.optim.betas == (0.8, 0.95)
    assert cfg.train.optim.lr == 1e-2 and cfg.model.hidden == 16  # the original is untouched
    assert new.data == cfg.data and new.train.steps == cfg.train.steps


@pytest.mark.parametrize(
    "override, attr, expected",
    [
        ("name=hello=world", "name", "hello=world"),
        ("count=7", "count", 7),
        ("count=1e3", "count", 1000),
        ("inner.size=16,32", ("inner", "size"), (16, 32)),
        ("inner.size=[4, 5]", ("inner", "size"), (4, 5)),
        ("inner.dims=3,4,5", ("inner", "dims"), (3, 4, 5)),
        ("inner.dims=()", ("inner", "dims"), ()),
        ("inner.names=b,c", ("inner", "names"), ["b", "c"]),
        ('inner.names=["seq", "head"]', ("inner", "names"), ["seq", "head"]),  # as JSON writes a list of names
        ("inner.names='a,b'", ("inner", "names"), ["'a", "b'"]),  # quotes split by a comma stay
        ("inner.flag=true", ("inner", "flag"), True),
        ("inner.flag=0", ("inner", "flag"), False),
        ("inner.mode=slow", ("inner", "mode"), "slow"),
        ("inner.limit=5", ("inner", "limit"), 5),
        ("inner.limit=none", ("inner", "limit"), None),
        ("inner.rate=2", ("inner", "rate"), 2.0),
    ],
)
def test_values_are_parsed_by_annotation(override, attr, expected):
    cfg = apply_overrides(Outer(), [override])
    value = cfg
    for name in (attr,) if isinstance(attr, str) else attr:
        value = getattr(value, name)
    assert value == expected and type(value) is type(expected)


def test_later_override_wins():
    assert apply_overrides(Outer(), ["count=2", "count=3"]).count == 3


@pytest.mark.parametrize(
    "override, words",
    [
        ("count=2.5", ["count", "int"]),
        ("count=abc", ["count", "int"]),
        ("inner.flag=maybe", ["inner.flag", "bool"]),
        ("inner.size=1,2,3", ["inner.size", "expected 2 values"]),
        ("inner.size=1,x", ["inner.size[1]", "int"]),
        ("inner.mode=medium", ["inner.mode", "fast", "slow"]),
        ("inner.limit=lots", ["inner.limit", "int"]),
        ("inner.rate=-1", ["inner", "rate must be >= 0"]),  # the dataclass's own check, with the key in front
        ("inner=3", ["inner", "group"]),
        ("count", ["key=value"]),
    ],
)
def test_bad_values_name_the_key_and_type(override, words):
    with pytest.raises(ValueError) as info:
        apply_overrides(Outer(), [override])
    for word in words:
        assert word in str(info.value)


def test_unknown_key_lists_valid_keys_at_its_level():
    with pytest.raises(ValueError) as info:
        apply_overrides(toy_config(), ["train.optim.lrr=1"])
    valid = str(info.value).split("valid keys at train.optim: ")[1].split(", ")
    assert "'train.optim.lrr'" in str(info.value)
    assert valid == ["betas", "grad_clip", "lr", "min_lr_ratio", "warmup_steps", "weight_decay"]
    with pytest.raises(ValueError, match="valid keys at the top level: .*train"):
        apply_overrides(toy_config(), ["trian.steps=3"])
    with pytest.raises(ValueError, match="train.steps is a value, not a group"):
        apply_overrides(toy_config(), ["train.steps.x=3"])


def test_train_config_checks():
    with pytest.raises(ValueError, match="train.amp"):
        TrainConfig(amp="fp8")
    with pytest.raises(ValueError, match="train.steps"):
        apply_overrides(toy_config(), ["train.steps=0"])
    with pytest.raises(ValueError, match="optim.betas"):
        OptimConfig(betas=(0.9, 1.5))
    assert apply_overrides(toy_config(), ["train.amp=bf16"]).train.amp == "bf16"


def test_dict_round_trip_through_json():
    cfg = apply_overrides(toy_config(), ["train.optim.betas=0.8,0.9", "model.dropout=0.0", "train.device=cpu"])
    d = json.loads(json.dumps(config_to_dict(cfg)))
    assert d["train"]["optim"]["betas"] == [0.8, 0.9]
    rebuilt = config_from_dict(d, toy_config())
    assert rebuilt == cfg
    assert isinstance(rebuilt.train.optim.betas, tuple)
    outer = apply_overrides(Outer(), ["inner.limit=3", "inner.names=p,q"])
    assert config_from_dict(json.loads(json.dumps(config_to_dict(outer))), Outer()) == outer


def test_from_dict_rejects_mismatching_keys_and_types():
    d = config_to_dict(toy_config())
    d["model"]["depth"] = 3
    with pytest.raises(ValueError, match=r"at model: unknown keys \['depth'\]"):
        config_from_dict(d, toy_config())
    d = config_to_dict(toy_config())
    del d["train"]["optim"]["lr"]
    with pytest.raises(ValueError, match=r"missing keys \['lr'\]"):
        config_from_dict(d, toy_config())
    d = config_to_dict(toy_config())
    d["train"]["steps"] = "many"
    with pytest.raises(ValueError, match="train.steps"):
        config_from_dict(d, toy_config())


def test_save_and_load_run_config(tmp_path):
    cfg = apply_overrides(toy_config(), ["train.steps=12", "model.hidden=8"])
    save_config(cfg, tmp_path / "config.json", overrides=["train.steps=12", "model.hidden=8"])
    payload = json.loads((tmp_path / "config.json").read_text())
    assert payload["overrides"] == ["train.steps=12", "model.hidden=8"] and "slotssm_version" in payload
    assert load_run_config(tmp_path) == cfg
    assert not [p for p in tmp_path.iterdir() if p.name != "config.json"]  # no temporary file left behind


def test_config_files_written_before_init_from_still_load():
    # Files written before train.init_from existed lack it (and may hold the old data.init_from): they still load.
    cfg = apply_overrides(toy_config(), ["train.init_from=/runs/pre"])
    d = config_to_dict(cfg)
    del d["train"]["init_from"], d["train"]["init_modules"]
    assert config_from_dict(d, toy_config()).train.init_from == ""
    d["data"]["init_from"] = "/runs/pre"  # the old key of the snitch task
    rebuilt = config_from_dict(d, toy_config())
    assert rebuilt == cfg and "init_from" not in config_to_dict(rebuilt)["data"]


def test_one_converter_for_text_and_json():
    from slotssm.config import convert_value

    assert convert_value("1e3", int, "k", text=True) == 1000
    assert convert_value(1000, int, "k", text=False) == 1000
    with pytest.raises(ValueError, match="k"):
        convert_value("1000", int, "k", text=False)  # JSON holds numbers as numbers
    assert convert_value("(1, 2)", tuple[int, ...], "k", text=True) == convert_value([1, 2], tuple[int, ...], "k",
                                                                                     text=False) == (1, 2)


def test_config_files_written_before_an_option_existed_get_its_off_value():
    """A task preset may switch a newer option on; a file written before the option existed meant it off (or,
    for the inverted-attention head counts, one head per attention head), whatever the preset says today."""
    from slotssm.tasks import get_task

    cls = get_task("object_centric")
    template = apply_overrides(cls.default_config("small", "oc_slotssm"), ["model.num_heads=2"])
    assert template.data.decoder_norm and template.data.even_masks  # the small preset switches them on
    d = config_to_dict(template)
    template = apply_overrides(template, ["data.decoder_out_stride=2"])
    d = config_to_dict(template)
    for key in ("decoder_norm", "even_masks", "source", "root", "resize", "decoder_out_stride"):
        del d["data"][key]
    del d["model"]["inverted_heads"], d["train"]["time_limit_s"]
    old = config_from_dict(d, template)
    assert not old.data.decoder_norm and not old.data.even_masks and old.data.source == "generated"
    assert old.data.decoder_out_stride == 1
    assert old.model.inverted_heads == 2 and old.train.time_limit_s == 0.0
    blink = apply_overrides(get_task("blinking_balls").default_config("small", "slotssm"), ["data.max_frames=8"])
    d = config_to_dict(blink)
    del d["data"]["max_frames"]
    assert config_from_dict(d, blink).data.max_frames == 0
    assert blink.train.stages  # the small preset is a curriculum now; a run written before stages had none
    del d["train"]["stages"], d["train"]["stage_modules"]
    assert config_from_dict(d, blink).train.stages == ()
    snitch = get_task("snitch_localization").default_config("small", "slotssm")
    d = config_to_dict(snitch)
    del d["data"]["decoder_resolution"]
    assert config_from_dict(d, snitch).data.decoder_resolution == snitch.data.image_size
    # a pre-training written before data.snitch_weight and model.dt_range: plain MSE, mamba_ssm's step sizes
    pre = apply_overrides(snitch, ["data.objective=reconstruct", "data.snitch_weight=50", "model.dt_range=(1e-4,1e-2)"])
    d = config_to_dict(pre)
    del d["data"]["snitch_weight"], d["model"]["dt_range"]
    old = config_from_dict(d, pre)
    assert old.data.snitch_weight == 1.0 and tuple(old.model.dt_range) == (0.001, 0.1)
    # a SlotRNN run written before model.residual: its mixer read the GRU's output alone, though the default is on
    rnn = get_task("blinking_balls").default_config("small", "slot_rnn")
    assert rnn.model.residual
    d = config_to_dict(rnn)
    del d["model"]["residual"]
    assert config_from_dict(d, rnn).model.residual is False
