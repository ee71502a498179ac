"""Model presets by scale (slotssm.models.presets): every model has every scale, the old dataset-named presets are
aliases, and every task preset gives every model exactly the config it had before the presets were keyed by scale.

`model_configs.json` was written from the dataset-named presets (before the change): "tasks" holds the model config
of `Task.default_config(preset, model)` for every task, preset and model; "models" the config of
`model_config(model, old_name)` for every model and old preset name. Rewrite it (`python
tests/models/test_presets.py --write`) only for a change of a model size that is meant, and say so in the commit.
"""

import dataclasses
import json
import sys
from pathlib import Path

import pytest
import torch

from slotssm.config import config_to_dict
from slotssm.models import build_model, count_parameters, list_models, list_presets, model_config
from slotssm.models.presets import ALIASES, SCALES, Scale, describe_scales, scaled
from slotssm.tasks.registry import TASK_MODULES, catalogue, get_task, list_tasks

FIXTURE = Path(__file__).with_name("model_configs.json")


def _as_json(cfg) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))  # tuples -> lists, as in the fixture


def project_tasks() -> list[str]:
    """The tasks of `TASK_MODULES` (other tests register toy tasks too)."""
    return [t for t in list_tasks() if get_task(t).__module__ in TASK_MODULES]


def current() -> dict:
    """The fixture's two tables, computed from the code as it is."""
    tasks = {f"{t}/{p}/{m}": _as_json(get_task(t).default_config(p, m).model)
             for t in project_tasks() for p in get_task(t).presets for m in list_models()}
    models = {f"{m}/{old}": _as_json(model_config(m, old)) for m in list_models() for old in ["tiny", *ALIASES]}
    return {"tasks": tasks, "models": models}


@pytest.fixture(scope="module")
def pinned():
    return json.loads(FIXTURE.read_text())


def test_every_task_preset_gives_every_model_its_config_of_before(pinned):
    now = current()["tasks"]
    assert sorted(now) == sorted(pinned["tasks"])  # 4 tasks x 3 presets x every model
    changed = {}
    for key, cfg in now.items():
        was = pinned["tasks"][key]
        diff = {f: (was.get(f), cfg.get(f)) for f in set(was) | set(cfg) if was.get(f) != cfg.get(f)}
        if diff:
            changed[key] = diff  # field: (before, now)
    assert changed == {}


def test_old_preset_names_are_aliases_with_the_same_values(pinned):
    now = current()["models"]
    assert sorted(now) == sorted(pinned["models"])
    assert {k: v for k, v in now.items() if v != pinned["models"][k]} == {}
    for model in list_models():
        for old, new in ALIASES.items():
            assert model_config(model, old) == model_config(model, new)


def test_every_model_has_tiny_and_every_scale():
    for model in list_models():
        assert list_presets(model) == ["tiny", *SCALES]


def test_the_paper_columns_are_named():
    for name, (d, k) in {"paper_blinking": (64, 6), "paper_movi": (192, 11)}.items():
        s = SCALES[name]
        assert (s.d_model, s.num_slots, s.expand) == (d, k, 1.25) and "Table 2" in s.note
    cfg = model_config("oc_slotssm", "paper_movi")
    assert (cfg.d_model, cfg.num_slots, cfg.expand, cfg.d_state, cfg.num_heads, cfg.encoder) == (
        192, 11, 1.25, 16, 4, "inverted")


def test_models_follow_the_scale():
    for name, s in SCALES.items():
        for model in list_models():
            cfg = model_config(model, name)
            if model not in ("single_state_ssm", "single_state_ssm_split"):  # parameter-matched widths of their own
                assert cfg.d_model == s.d_model, (model, name)
            if model not in ("transformer", "single_state_ssm"):  # K = 1
                assert cfg.num_slots == s.num_slots, (model, name)
        assert model_config("slotssm", name).expand == s.expand
        assert model_config("rim", name).top_k == round(2 * s.num_slots / 3)


def test_unknown_preset_names_the_new_and_the_old_names():
    with pytest.raises(ValueError, match=r"preset: model 'rim' has presets \['tiny', 'w64k6'.*old names: "
                                         r"blinking_balls=paper_blinking.*got 'huge'"):
        model_config("rim", "huge")
    with pytest.raises(ValueError, match="exceptions: unknown scale"):
        scaled({}, lambda s: {}, w1k1=dict(d_model=1))


def test_a_new_scale_is_one_line(monkeypatch):
    """One more entry in SCALES is a preset of every model, whose rule gives a valid config; the baselines that are
    matched to SlotSSM's parameter count stay within 15% of it."""
    monkeypatch.setitem(SCALES, "w96k7", Scale(96, 7))
    counts = {}
    for model in list_models():
        assert "w96k7" in list_presets(model)
        with torch.device("meta"):  # sizes only
            counts[model] = count_parameters(build_model(model, preset="w96k7", input_dim=64))
    matched = ("psb", "transformer", "slot_transformer", "single_state_ssm", "single_state_ssm_split", "slot_rnn",
               "savi")
    assert {m: round(counts[m] / counts["slotssm"], 2) for m in matched
            if abs(counts[m] / counts["slotssm"] - 1) > 0.15} == {}
    assert model_config("rim", "w96k7").top_k == 5


def test_listing_names_the_sizes_and_what_each_task_preset_picks():
    text = catalogue()
    assert all(any(line.strip().startswith(name) for line in describe_scales()) for name in SCALES)
    assert "small (paper_blinking)" in text and "paper (paper_movi)" in text and "old names: " in text


def test_an_old_run_directory_loads(tmp_path, pinned):
    """config.json holds the resolved model config (no model preset name): one written before loads unchanged."""
    from slotssm.train.config import load_run_config

    for task, model in (("object_centric", "oc_slotssm"), ("blinking_balls", "single_state_ssm")):
        cfg = get_task(task).default_config("paper", model)
        stored = {**config_to_dict(cfg), "model": pinned["tasks"][f"{task}/paper/{model}"]}  # as written before
        run = tmp_path / task
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"slotssm_version": "0", "overrides": [], "config": stored}))
        assert load_run_config(run) == cfg


if __name__ == "__main__" and "--write" in sys.argv:
    tables = current()

    def block(d):
        return ",\n".join(f"  {json.dumps(k)}: {json.dumps(v, sort_keys=True)}" for k, v in sorted(d.items()))

    FIXTURE.write_text('{\n "tasks": {\n' + block(tables["tasks"]) + '\n },\n "models": {\n' + block(tables["models"])
                       + "\n }\n}\n")
