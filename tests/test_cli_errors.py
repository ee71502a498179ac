"""Every bad command line gets one error line, a non-zero exit, and writes nothing; `--version`, `list`, `--help`."""

import pytest

from slotssm import __version__
from slotssm.cli import main

TRAIN = ["train", "video_prediction", "--model", "slotssm", "--preset", "tiny", "--no-progress"]

# (id, argv (OUT/DATA replaced by temporary paths), words the error line must hold)
CASES = [
    ("negative_width", TRAIN + ["--set", "model.d_model=-4"], ["model", "does not build", "negative dimension"]),
    ("set_task", TRAIN + ["--set", "task=object_centric"], ["--set task=object_centric", "TASK"]),
    ("set_model_name", TRAIN + ["--set", "model_name=rim"], ["model_name", "--model"]),
    ("set_preset", TRAIN + ["--set", "preset=paper"], ["preset", "--preset"]),
    ("bad_impl", TRAIN + ["--set", "model.impl=nope"], ["model.impl", "nope"]),
    ("unavailable_impl", TRAIN + ["--set", "model.impl=cuda"], ["model.impl", "cuda"]),
    ("data_dir_is_file", TRAIN + ["--data-dir", "FILE"], ["--data-dir", "not a directory"]),
    ("data_dir_under_file", TRAIN + ["--data-dir", "FILE/sub"], ["--data-dir", "not a directory"]),
    ("out_is_file", TRAIN + ["--out", "FILE"], ["--out", "not a directory"]),
    ("device_unknown", TRAIN + ["--device", "tpu9"], ["train.device", "tpu9"]),
    ("device_cuda_missing", TRAIN + ["--device", "cuda:0"], ["train.device", "CUDA"]),
    ("unknown_task", ["train", "nope", "--model", "slotssm"], ["unknown task 'nope'"]),
    ("unknown_key", TRAIN + ["--set", "model.widthh=3"], ["unknown config key", "model.widthh"]),
    ("resume_other_model", ["train", "video_prediction", "--model", "rim", "--resume", "--no-progress"],
     ["model_name='slotssm'", "not 'rim'"]),
    ("eval_missing_run", ["eval", "OUT"], ["config.json"]),
    ("viz_missing_run", ["viz", "OUT"], ["config.json"]),
    ("data_info_missing", ["data", "info", "OUT"], ["manifest"]),
    ("data_generate_unknown", ["data", "generate", "nope", "--num", "2", "--out", "OUT"], ["nope"]),
]

# argparse's own errors: usage, then one "error:" line, exit code 2.
USAGE_CASES = [
    ("eval_batch_negative", ["eval", "OUT", "--batch-size", "-3"], ["--batch-size", ">= 1"]),
    ("generate_num_negative", ["data", "generate", "shapes_video", "--num", "-4", "--out", "OUT"], ["--num", ">= 1"]),
    ("generate_num_zero", ["data", "generate", "shapes_video", "--num", "0", "--out", "OUT"], ["--num", ">= 1"]),
    ("generate_batch_zero", ["data", "generate", "shapes_video", "--num", "2", "--batch-size", "0", "--out", "OUT"],
     ["--batch-size"]),
    ("train_no_model", ["train", "video_prediction"], ["--model"]),
]


def _argv(args, tmp_path):
    (tmp_path / "file").write_text("not a directory\n")
    subs = {"OUT": str(tmp_path / "run"), "DATA": str(tmp_path / "data"), "FILE": str(tmp_path / "file")}
    argv = [a.replace("FILE", subs["FILE"]) if a.startswith("FILE") else subs.get(a, a) for a in args]
    if argv[0] == "train" and "--out" not in argv:
        argv += ["--out", subs["OUT"]]
    if argv[0] == "train" and "--data-dir" not in argv:
        argv += ["--data-dir", subs["DATA"]]
    return argv


@pytest.mark.parametrize("case, args, words", CASES, ids=[c[0] for c in CASES])
def test_one_error_line_nonzero_exit_nothing_written(case, args, words, tmp_path, capsys):
    if case == "resume_other_model":  # a run of slotssm exists; resuming it as rim is refused
        from slotssm.tasks.registry import get_task
        from slotssm.train.config import save_config

        (tmp_path / "run").mkdir()
        save_config(get_task("video_prediction").default_config("tiny", "slotssm"), tmp_path / "run" / "config.json")
    argv = _argv(args, tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and ": error: " in err, err
    for word in words:
        assert word in err, f"{word!r} not in {err!r}"
    if case != "resume_other_model":
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # no run directory, no dataset


@pytest.mark.parametrize("case, args, words", USAGE_CASES, ids=[c[0] for c in USAGE_CASES])
def test_argument_errors_exit_2(case, args, words, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        main(_argv(args, tmp_path))
    err = capsys.readouterr().err
    assert info.value.code == 2 and "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert "error:" in last and all(w in last for w in words), last
    assert not (tmp_path / "run").exists()


def test_generate_refuses_to_overwrite(tmp_path, capsys):
    out = str(tmp_path / "d")
    assert main(["data", "generate", "shapes_video", "--num", "2", "--out", out, "--quiet"]) == 0
    manifest = (tmp_path / "d" / "manifest.json").read_text()
    capsys.readouterr()
    assert main(["data", "generate", "shapes_video", "--num", "3", "--seed", "4", "--out", out, "--quiet"]) == 2
    assert "already holds a dataset" in capsys.readouterr().err
    assert (tmp_path / "d" / "manifest.json").read_text() == manifest  # untouched
    assert main(["data", "generate", "shapes_video", "--num", "3", "--out", out, "--quiet", "--force"]) == 0
    assert '"num_videos": 3' in (tmp_path / "d" / "manifest.json").read_text()


def test_version_list_and_help_name_everything(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"slotssm {__version__}"
    assert main(["list"]) == 0
    listing = capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    help_text = capsys.readouterr().out
    for text in (listing, help_text):
        for name in ("video_prediction", "snitch_localization", "slotssm", "oc_slotssm", "psb", "tiny", "small",
                     "paper"):
            assert name in text
    assert "--device" in help_text
