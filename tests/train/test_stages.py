"""Curricula (`train.stages`): the chain of run directories, weights carried over, resume anywhere, early errors."""

import json

import pytest
import safetensors.torch
import toytask
import torch

from slotssm.tasks import get_task
from slotssm.train.config import apply_overrides, load_run_config
from slotssm.train.stages import check_stages, stage_configs, stage_dir
from slotssm.train.trainer import train

TOY_STAGES = 'train.stages=["train.steps=3 train.optim.lr=0.05", "train.steps=2"]'


def make_config(*overrides):
    return apply_overrides(toytask.ToyTask.default_config("tiny", "mlp"),
                           ["train.device=cpu", "train.stage_modules=[norm,net]", *overrides])


def run(cfg, out, **kwargs):
    return train(cfg, out, data_dir=out.parent / "data", progress=False, **kwargs)


def weights(run_dir):
    return safetensors.torch.load_file(str(run_dir / "ckpt-latest" / "model.safetensors"))


def test_stages_train_in_order_and_each_starts_from_the_last(tmp_path):
    # The run and its second stage learn at lr 1e-12: their weights must stay those the first stage ended with.
    cfg = make_config(TOY_STAGES, "train.steps=2", "train.optim.lr=1e-12", "train.optim.weight_decay=0")
    out = tmp_path / "run"
    metrics = run(cfg, out)
    assert metrics["step"] == 2
    s1, s2 = stage_dir(out, 0), stage_dir(out, 1)
    assert json.loads((s1 / "eval.json").read_text())["step"] == 3
    assert json.loads((s2 / "eval.json").read_text())["step"] == 2
    assert load_run_config(s1).train.optim.lr == 0.05 and load_run_config(s2).train.optim.lr == 1e-12
    assert load_run_config(out) == cfg  # the whole chain, for --resume
    assert json.loads((s2 / "config.json").read_text())["started_from"] == {"run": str(s1), "modules": ["norm", "net"]}
    assert json.loads((out / "config.json").read_text())["started_from"]["run"] == str(s2)
    assert "started_from" not in json.loads((s1 / "config.json").read_text())
    w1, w2, w = weights(s1), weights(s2), weights(out)
    torch.manual_seed(cfg.train.seed)
    fresh = toytask.ToyModel(cfg.model, cfg.data.dim).state_dict()
    assert any((w1[k] - fresh[k]).abs().max() > 1e-3 for k in w1)  # stage 1 trained
    for k in w1:
        torch.testing.assert_close(w2[k], w1[k], atol=1e-6, rtol=0)
        torch.testing.assert_close(w[k], w1[k], atol=1e-6, rtol=0)
    # without stage_modules' carry-over (a fresh model each time) the run's weights would be the fresh ones
    assert any((w[k] - fresh[k]).abs().max() > 1e-3 for k in w)


def test_a_chain_stopped_in_a_stage_resumes_bit_identical(tmp_path, monkeypatch):
    cfg = make_config(TOY_STAGES, "train.steps=4", "train.ckpt_every=1")
    run(cfg, tmp_path / "straight")

    calls, original = [0], toytask.ToyTask.loss

    def crashing(self, model, batch):
        calls[0] += 1
        if calls[0] == 5:  # the second step of stage 2 (stage 1 has 3)
            raise toytask.SimulatedCrash("stopped")
        return original(self, model, batch)

    monkeypatch.setattr(toytask.ToyTask, "loss", crashing)
    out = tmp_path / "resumed"
    with pytest.raises(toytask.SimulatedCrash):
        run(cfg, out)
    assert (stage_dir(out, 0) / "eval.json").is_file() and not (stage_dir(out, 1) / "eval.json").exists()
    with pytest.raises(ValueError, match="already holds a run"):
        run(cfg, out)  # a fresh start over a chain begun: refused, as for one run
    monkeypatch.setattr(toytask.ToyTask, "loss", original)
    stage1 = (stage_dir(out, 0) / "eval.json").stat().st_mtime_ns
    run(cfg, out, resume=True)
    assert (stage_dir(out, 0) / "eval.json").stat().st_mtime_ns == stage1  # the finished stage is not run again
    for d in ("", "stages/stage1", "stages/stage2"):
        a, b = weights(tmp_path / "straight" / d), weights(out / d)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a), d


def test_a_finished_stage_with_other_settings_is_refused_and_longer_steps_continue_it(tmp_path):
    cfg = make_config(TOY_STAGES, "train.steps=2")
    out = tmp_path / "run"
    run(cfg, out)
    changed = make_config('train.stages=["train.steps=3 train.optim.lr=0.02", "train.steps=2"]', "train.steps=2")
    with pytest.raises(ValueError, match="cannot resume"):
        run(changed, out, resume=True)
    longer = make_config('train.stages=["train.steps=3 train.optim.lr=0.05", "train.steps=4"]', "train.steps=2")
    with pytest.raises(ValueError, match="train.stages"):  # the run's own config records its chain
        run(longer, out, resume=True)
    with pytest.raises(FileNotFoundError, match="no run"):
        run(cfg, tmp_path / "none", resume=True)


@pytest.mark.parametrize("stages, message", [
    ('["train.steps"]', r"train.stages\[0\]: expected overrides"),
    ('["train.steps=2", " "]', r"train.stages\[1\]: expected overrides"),
    ('["train.init_from=x"]', r"train.stages\[0\]: train.init_from is set by the stage chain"),
    ('["train.stages=[a=1]"]', r"train.stages\[0\]: train.stages is set by the stage chain"),
])
def test_bad_stage_strings_name_the_stage(stages, message):
    with pytest.raises(ValueError, match=message):
        make_config(f"train.stages={stages}")


def test_stage_configs_name_the_stage_of_a_bad_override():
    cfg = make_config('train.stages=["train.steps=2", "data.no_such_key=1"]')
    with pytest.raises(ValueError, match=r"train.stages\[1\]: .*no_such_key"):
        stage_configs(cfg)
    first, second = stage_configs(make_config('train.stages=["train.steps=2", "train.steps=3"]',
                                              "train.init_from=elsewhere", "train.init_modules=[net]"))
    assert first.train.init_from == "elsewhere" and second.train.init_from == ""  # later ones start from the chain
    assert first.train.stages == () and first.train.steps == 2 and second.train.steps == 3


def test_check_stages_names_a_shape_that_does_not_carry_over(tmp_path):
    cls = get_task("blinking_balls")
    base = cls.default_config("tiny", "slotssm")  # 3 context frames
    one_frame = 'train.stages=["data.num_frames=1"]'
    with pytest.raises(ValueError, match=r"train.stages\[0\]: encoder.pos_time has shape \(1, .*max_frames"):
        check_stages(apply_overrides(base, [one_frame]), tmp_path)
    check_stages(apply_overrides(base, [one_frame, "data.max_frames=3"]), tmp_path)  # the same table: fine
    with pytest.raises(ValueError, match=r"train.stages\[0\]: its model config differs"):
        check_stages(apply_overrides(base, ['train.stages=["model.num_slots=2"]']), tmp_path)


def test_blinking_curriculum_in_one_command(tmp_path, capsys):
    from slotssm.cli import main

    out = tmp_path / "run"
    args = ["train", "blinking_balls", "--model", "slotssm", "--preset", "tiny", "--out", str(out),
            "--data-dir", str(tmp_path / "data"), "--no-progress", "--set", "train.device=cpu",
            "--set", "data.max_frames=3", "--set", "train.steps=2",
            "--set", 'train.stages=["data.num_frames=1 train.steps=2", "data.num_frames=2 train.steps=1"]']
    assert main(args) == 0
    assert [load_run_config(stage_dir(out, i)).data.num_frames for i in range(2)] == [1, 2]
    assert json.loads((out / "eval.json").read_text())["step"] == 2
    assert main(["train", "blinking_balls", "--model", "slotssm", "--out", str(out), "--data-dir",
                 str(tmp_path / "data"), "--no-progress", "--resume", "--set", "train.steps=3"]) == 0
    assert json.loads((out / "eval.json").read_text())["step"] == 3
    capsys.readouterr()
    bad = [a.replace("data.max_frames=3", "data.max_frames=0") for a in args]
    assert main([*bad[:7], str(tmp_path / "bad"), *bad[8:]]) == 2
    assert "max_frames" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()  # refused before anything is written
