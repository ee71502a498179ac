"""`slotssm train | eval | viz` run in-process through slotssm.cli.main on the toy task."""

import json

import pytest
import toytask

import slotssm.cli


@pytest.fixture
def main(monkeypatch):
    # Only this package's commands: the test does not depend on the other command groups importing cleanly.
    monkeypatch.setattr(slotssm.cli, "COMMAND_MODULES", ("slotssm.train.cli",))
    return slotssm.cli.main


def test_train_commands_are_wired_into_the_cli():
    assert "slotssm.train.cli" in slotssm.cli.COMMAND_MODULES


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "nope", "--model", "mlp"], "unknown task 'nope'; known tasks: "),
        (["train", "toy", "--model", "gru"], "unknown model 'gru' for task 'toy'"),
        (["train", "toy", "--model", "mlp", "--preset", "huge"], "unknown preset 'huge'"),
        (["train", "toy", "--model", "mlp", "--set", "train.bogus=1"], "unknown config key 'train.bogus'"),
        (["train", "toy", "--model", "mlp", "--set", "train.steps=many"], "bad value for train.steps"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(main, capsys, tmp_path, args, message):
    assert main([*args, "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("slotssm train: error: ") and message in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()


def test_train_eval_viz_resume(main, capsys, tmp_path):
    out, data = tmp_path / "run", tmp_path / "data"
    common = ["--out", str(out), "--data-dir", str(data), "--no-progress"]
    sets = ["--set", "train.steps=10", "--set", "train.device=cpu", "--set", "train.log_every=2"]
    assert main(["train", "toy", "--model", "mlp", "--preset", "tiny", *sets, *common]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 10
    assert json.loads((out / "config.json").read_text())["overrides"] == sets[1::2]

    assert main(["eval", str(out), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["step"] == 10 and printed == json.loads((out / "eval.json").read_text())
    assert main(["eval", str(out), "--device", "cpu", "--split", "train"]) == 0
    assert json.loads((out / "eval-train.json").read_text())["split"] == "train"

    assert main(["viz", str(out), "--device", "cpu"]) == 0
    assert (out / "viz" / "toy_prediction.png").is_file()
    assert {"loss.png", "mse.png", "lr.png"} <= {p.name for p in (out / "viz" / "curves").iterdir()}
    capsys.readouterr()

    # Resume from the run's own config (preset and earlier --set included), here to train longer.
    assert main(["train", "toy", "--model", "mlp", "--resume", "--set", "train.steps=14", *common]) == 0
    assert json.loads(capsys.readouterr().out)["step"] == 14
    assert json.loads((out / "eval.json").read_text())["step"] == 14
    assert json.loads((out / "config.json").read_text())["overrides"][-1] == "train.steps=14"
    assert main(["train", "toy", "--model", "mlp", "--preset", "small", "--resume", *common]) == 2
    assert "not 'small'" in capsys.readouterr().err


def test_diverged_run_exits_1(main, capsys, tmp_path, monkeypatch):
    monkeypatch.setattr(toytask.ToyTask, "nan_at_call", 3)
    args = ["train", "toy", "--model", "mlp", "--preset", "tiny", "--out", str(tmp_path / "run"), "--no-progress"]
    assert main([*args, "--data-dir", str(tmp_path), "--set", "train.device=cpu"]) == 1
    assert "the loss is nan at step 3" in capsys.readouterr().err


def test_eval_of_a_directory_without_a_run_exits_2(main, capsys, tmp_path):
    assert main(["eval", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
