"""End to end through the command line: the demo writes its report; reproduce writes a results page."""

import json

import pytest

from slotssm.cli import main


def test_demo_writes_report_with_pictures(tmp_path):
    out = tmp_path / "demo"
    code = main(["demo", "--out", str(out), "--no-progress", "--set", "train.steps=3", "--set", "data.num_train=4",
                 "--set", "data.num_val=2", "--set", "train.batch_size=2"])
    assert code == 0
    report = (out / "report.md").read_text()
    assert "rollout MSE, mean over 20 steps" in report and "| last frame repeated |" in report and "| mean image |" in report
    pictures = [line.split("(")[1].rstrip(")") for line in report.splitlines() if line.startswith("![")]
    assert any(p.endswith(".gif") for p in pictures) and any(p.endswith(".png") for p in pictures)
    assert all((out / p).stat().st_size > 0 for p in pictures)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["step"] == 3 and 0 <= summary["rollout_mse"] <= 1
    assert set(summary["references"]) == {"blank frame", "mean image", "mean context frame", "last frame repeated"}
    assert summary["learned"] is False and "**Verdict: not learned" in report  # 3 steps learn nothing


def test_demo_stops_at_its_deadline(tmp_path):
    import time

    out = tmp_path / "demo"
    start = time.perf_counter()
    # 0.9 minute: about 9 s of training after the evaluation reserve, then evaluation on 2 videos
    code = main(["demo", "--out", str(out), "--no-progress", "--minutes", "0.9", "--model", "single_state_ssm",
                 "--set", "data.num_train=4",
                 "--set", "data.num_val=2", "--set", "train.batch_size=2"])
    wall = time.perf_counter() - start
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    train_cfg = json.loads((out / "run" / "config.json").read_text())["config"]["train"]
    assert 0 < train_cfg["time_limit_s"] <= 0.9 * 60
    assert 1 <= summary["step"] < train_cfg["steps"]  # the clock stopped it, not the step count
    assert wall <= 0.9 * 60 + 60  # budget + 1 minute, evaluation included


def test_reproduce_runs_seeds_and_writes_a_page(tmp_path, capsys):
    import shutil

    args = ["reproduce", "object_centric", "--preset", "tiny", "--steps", "2", "--seeds", "2", "--jobs", "1",
            "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"),
            "--results-dir", str(tmp_path / "results"), "--set", "data.num_train=4", "--set", "data.num_val=4",
            "--set", "train.batch_size=2"]
    # Past --stop-after-minutes before the first run: nothing starts and no page is written.
    assert main(args + ["--stop-after-minutes", "1e-6"]) == 0
    assert "0 of 6 runs have a record" in capsys.readouterr().out
    assert not (tmp_path / "results" / "object_centric.md").exists()
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "[6/6]" in printed and "oc_slotssm seed 1: fg_ari " in printed and "ETA" in printed  # one line per run
    page = (tmp_path / "results" / "object_centric.md").read_text()
    assert "| oc_slotssm |" in page and "| savi |" in page and "| psb |" in page and "+-" in page
    assert "Training health at the last probe" in page
    assert "![oc_slotssm: slots](object_centric_runs/main/oc_slotssm/seed0.png)" in page  # the record's picture
    assert "| *reference: one segment* |" in page and "Order by `fg_ari`" in page and "Runs made at commit" in page
    raw = json.loads((tmp_path / "results" / "object_centric.json").read_text())
    assert len(raw["runs"]) == 6 and raw["steps"] == 2
    # Every run left a record beside the page (seed 0 with its picture).
    records = tmp_path / "results" / "object_centric_runs" / "main"
    rec = json.loads((records / "psb" / "seed1.json").read_text())
    assert rec["settings"]["steps"] == 2 and "fg_ari" in rec["metrics"] and rec["run_s"] > 0 and rec["commit"]
    assert (records / "savi" / "seed0.png").stat().st_size > 0 and "picture" not in rec
    # A second call on a fresh machine (no run directories) takes every run from its record: no training, the
    # same page.
    shutil.rmtree(tmp_path / "runs")
    assert main(args) == 0
    assert not (tmp_path / "runs").exists() and "[6/6]" in capsys.readouterr().out
    assert (tmp_path / "results" / "object_centric.md").read_text() == page
    # Other settings are refused, not mixed with the recorded runs.
    more = list(args)
    more[more.index("--steps") + 1] = "3"
    assert main(more) == 2
    err = capsys.readouterr().err
    assert "--records-dir" in err and "'steps': (2, 3)" in err
    # A reproduction split over sittings: two runs lack a record; a deadline stops before them, the same command
    # then trains them and writes the page.
    for model in ("savi", "psb"):
        (records / model / "seed1.json").unlink()
    assert main(args + ["--stop-after-minutes", "1e-6"]) == 0
    assert "4 of 6 runs have a record" in capsys.readouterr().out
    assert main(args + ["--plan"]) == 0
    printed = capsys.readouterr().out
    assert "- psb seed 1: to run" in printed and "- savi seed 0: recorded" in printed and "4 of 6 runs recorded" in printed
    assert main(args) == 0
    assert "[6/6]" in capsys.readouterr().out and (records / "psb" / "seed1.json").exists()
    # Records kept outside the results directory: the page gets copies of their pictures.
    shutil.copytree(tmp_path / "results" / "object_centric_runs", tmp_path / "elsewhere")
    assert main(args + ["--records-dir", str(tmp_path / "elsewhere")]) == 0
    page = (tmp_path / "results" / "object_centric.md").read_text()
    assert "![savi: slots](object_centric_slots/main-savi.png)" in page
    assert (tmp_path / "results" / "object_centric_slots" / "main-savi.png").stat().st_size > 0


def test_unknown_command_and_experiment_exit_with_usage(capsys):
    import pytest

    for argv in (["nope"], ["reproduce", "nope"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 2


def test_reproduce_reuse_ignores_the_checkpoint_cadence(tmp_path):
    """Runs checkpoint every CKPT_EVERY steps (a stopped reproduction resumes mid-run); runs made when the cadence
    was another value are still reused, while any setting that changes results is refused."""
    from slotssm import reproduce

    run = tmp_path / "run"
    run.mkdir()
    base = {"preset": "small", "steps": 20}
    (run / "reproduce.json").write_text(json.dumps({**base, "sets": ["train.steps=20", "train.ckpt_every=100000"]}))
    reproduce._check_reuse(run, {**base, "sets": ["train.steps=20", f"train.ckpt_every={reproduce.CKPT_EVERY}"]})
    with pytest.raises(ValueError, match="other settings"):
        reproduce._check_reuse(run, {**base, "sets": ["train.steps=20", "train.seed=1"]})


def test_reproduce_settings_name_the_runs_dir_by_a_placeholder_and_plan_reads_each_state(tmp_path):
    """A fine-tuning run's settings name its pre-training by a path under --runs-dir; the settings carry a
    placeholder there, so a record made with another --runs-dir still matches. --plan tells a run stopped mid-way."""
    import argparse

    from slotssm import reproduce

    exp = reproduce.EXPERIMENTS["snitch_localization"]

    def args_for(runs):
        return argparse.Namespace(experiment="snitch_localization", preset="small", overrides=[], seeds=1,
                                  runs_dir=str(runs), results_dir=str(tmp_path / "results"), records_dir="")

    settings = []
    for runs in (tmp_path / "a", tmp_path / "b"):
        a = args_for(runs)
        sets, st = reproduce._run_settings(exp, a, runs / a.experiment, "pre-trained", "slotssm", 0, False, 10)
        assert any(s.startswith(f"train.init_from={runs}") for s in sets)  # the command gets the real path
        settings.append(st)
    assert settings[0] == settings[1] and any(s.startswith("train.init_from=<runs-dir>/") for s in settings[0]["sets"])
    a = args_for(tmp_path / "a")
    root = tmp_path / "a" / a.experiment
    run = reproduce._run_dir(root, "no pre-training", "slotssm", 0, False)
    (run / "ckpt-latest").mkdir(parents=True)
    (run / "ckpt-latest" / "checkpoint.json").write_text(json.dumps({"step": 7}))
    _, st = reproduce._run_settings(exp, a, root, "no pre-training", "slotssm", 0, False, 10)
    (run / "reproduce.json").write_text(json.dumps(st))
    states = dict(reproduce.run_states(exp, a, root, 10))
    assert states[("no pre-training", "slotssm", 0, False)] == "stopped at step 7 (resumes there)"
    assert states[("pre-trained", "slotssm", 0, True)] == "to run"
    states = dict(reproduce.run_states(exp, a, root, 11))  # another step count: that run would be refused
    assert states[("no pre-training", "slotssm", 0, False)].startswith("other settings: --runs-dir")


def test_reproduce_reports_a_failed_run_and_goes_on(tmp_path, capsys, monkeypatch):
    """A run whose training exits with an error is named with its train.log as it fails; the other runs go on (and
    print their own lines), the call exits 1 and writes no page."""
    from slotssm import reproduce

    calls = []

    def failing_call(cmd, **kw):
        calls.append(cmd[cmd.index("--model") + 1])
        return 3

    monkeypatch.setattr(reproduce.subprocess, "call", failing_call)
    args = ["reproduce", "object_centric", "--preset", "tiny", "--steps", "2", "--seeds", "1", "--jobs", "2",
            "--runs-dir", str(tmp_path / "runs"), "--data-dir", str(tmp_path / "data"),
            "--results-dir", str(tmp_path / "results")]
    assert main(args) == 1
    printed = capsys.readouterr().out
    assert sorted(calls) == ["oc_slotssm", "psb", "savi"]  # every run was tried, not only the first to fail
    log = tmp_path / "runs" / "object_centric" / "main" / "savi" / "seed0" / "train.log"
    assert f"failed: - savi seed 0: exit code 3; see {log}" in printed
    assert "3 run(s) failed" in printed and "0 of 3 runs have a record" in printed
    assert not (tmp_path / "results" / "object_centric.md").exists()


def test_reproduce_eta_counts_only_the_runs_it_trained():
    from slotssm import reproduce

    exp = reproduce.EXPERIMENTS["blinking_balls"]
    p = ("L=80", "slotssm", 0, False)
    line = reproduce.progress_line(exp, p, {"colour_acc": 0.5}, 600.0, 24, 30, [600.0, 1200.0], 2)
    assert line == "  [24/30] L=80 slotssm seed 0: colour_acc 0.5000 (10.0 min); ETA 45 min"  # 15 min x 6 / 2
    assert reproduce.progress_line(exp, p, {"colour_acc": 0.5}, 60.0, 23, 30, [], 2).endswith(
        "ETA unknown until a run is trained")  # 23 runs from records say nothing about the 7 left
    assert reproduce.progress_line(exp, p, {"colour_acc": 0.5}, 60.0, 30, 30, [60.0], 2).endswith("; done")


def test_reproduce_next_run_finishes_begun_work_first(tmp_path):
    """A fine-tuning waits for its pre-training; a fine-tuning whose pre-training is done, then a run stopped
    mid-way, go before new runs (a sitting's unfinished work dies with its run directories)."""
    from slotssm import reproduce

    exp = reproduce.EXPERIMENTS["snitch_localization"]
    plan, root = reproduce._plan(exp, 1), tmp_path / "runs"
    direct = ("no pre-training", "oc_slotssm", 0, False)
    pre, fine = ("pre-trained", "slotssm", 0, True), ("pre-trained", "slotssm", 0, False)
    assert reproduce._next_run(list(plan), [], root) == direct  # plan order
    (reproduce._run_dir(root, *pre) / "ckpt-latest").mkdir(parents=True)
    assert reproduce._next_run(list(plan), [], root) == pre  # stopped mid-way: resumed first
    # Its fine-tuning is never picked while the pre-training is pending or running.
    assert reproduce._next_run([fine], [pre], root) is None
    assert reproduce._next_run([fine, direct], [pre], root) == direct
    (reproduce._run_dir(root, *pre) / "eval.json").write_text("{}")
    pending = [p for p in plan if p != pre]
    assert reproduce._next_run(pending, [], root) == fine  # its weights are only in the run directory


def test_reproduce_deadline_still_starts_a_finished_pretrainings_fine_tuning(tmp_path, monkeypatch):
    """Past --stop-after-minutes no run starts, but the fine-tuning of a finished pre-training does: its weights
    live only in the run directory, which the end of a sitting may take."""
    import argparse
    import time

    from slotssm import reproduce

    exp = reproduce.EXPERIMENTS["snitch_localization"]
    a = argparse.Namespace(experiment="snitch_localization", preset="small", overrides=[], seeds=1,
                           runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), records_dir="",
                           data_dir=str(tmp_path / "data"))
    root = tmp_path / "runs" / a.experiment
    started = []
    monkeypatch.setattr(reproduce.subprocess, "call",
                        lambda cmd, **kw: started.append(cmd[cmd.index("--out") + 1]) or 0)
    monkeypatch.setattr(reproduce, "_write_record", lambda *_: {"metrics": {}, "run_s": 1.0})
    past = time.perf_counter() - 1
    direct, pre = ("no pre-training", "slotssm", 0, False), ("pre-trained", "slotssm", 0, True)
    fine = ("pre-trained", "slotssm", 0, False)
    assert reproduce._train(exp, a, root, *direct, 10, past) is None
    assert reproduce._train(exp, a, root, *pre, 10, past) is None
    assert reproduce._train(exp, a, root, *fine, 10, past) is None  # its pre-training has not run
    assert started == []
    (reproduce._run_dir(root, *pre)).mkdir(parents=True)
    (reproduce._run_dir(root, *pre) / "eval.json").write_text("{}")
    assert reproduce._train(exp, a, root, *fine, 10, past) == {"metrics": {}, "run_s": 1.0, "trained": True}
    assert started == [str(reproduce._run_dir(root, *fine))]


def test_reproduce_reads_a_curriculum_run_and_calibrates_its_stages(tmp_path):
    """A run with curriculum stages: begun once a stage is, --plan says which stage it stopped in, its minutes
    count from the first stage, and the budget's calibration counts the stages as a fixed cost."""
    import os

    from slotssm import reproduce

    run = tmp_path / "run"
    s1, s2 = run / "stages" / "stage1", run / "stages" / "stage2"
    assert not reproduce._begun(run)
    (s2 / "ckpt-latest").mkdir(parents=True)
    s1.mkdir(parents=True)
    assert reproduce._begun(run)
    for d in (s1, s2):
        (d / "config.json").write_text("{}")
    (s1 / "eval.json").write_text("{}")
    assert reproduce._stopped_at(run) == "stage 2, step 0"
    (s2 / "ckpt-latest" / "checkpoint.json").write_text(json.dumps({"step": 4}))
    assert reproduce._stopped_at(run) == "stage 2, step 4"
    (run / "config.json").write_text("{}")
    (run / "eval.json").write_text("{}")
    for path, t in ((s1 / "config.json", 1000), (s2 / "config.json", 1500), (run / "config.json", 1600),
                    (run / "eval.json", 1900)):
        os.utime(path, (t, t))
    assert reproduce._run_seconds(run) == 900  # from the first stage's start, not the last stage's

    exp = reproduce.Experiment("blinking_balls", ("slotssm",), ("colour_acc",))
    sets = ["data.max_frames=3", 'train.stages=["data.num_frames=1 train.steps=5", "data.num_frames=2 train.steps=7"]']
    per_step, stages = reproduce.calibrate(exp, str(tmp_path / "data"), sets, "tiny")["slotssm"]
    assert per_step > 0 and stages > 0
    assert reproduce.calibrate(exp, str(tmp_path / "data"), [], "tiny")["slotssm"][1] == 0  # no stages


def test_reproduce_refuses_a_record_whose_preset_changed_since(tmp_path):
    """Two runs with the same preset name, overrides and steps, but a preset that changed in between (the
    Blinking Color Balls preset became a curriculum): the record is refused, naming the key. A key added since,
    with the value that keeps the old behaviour, is no change; a record without a config (made before records
    had one) is compared on its settings alone."""
    import argparse
    import copy

    from slotssm import reproduce

    exp = reproduce.EXPERIMENTS["blinking_balls"]
    args = argparse.Namespace(experiment="blinking_balls", preset="small", overrides=[], seeds=1,
                              runs_dir=str(tmp_path / "runs"), results_dir=str(tmp_path / "results"), records_dir="")
    root = tmp_path / "runs" / "blinking_balls"
    _, settings = reproduce._run_settings(exp, args, root, "L=80", "slotssm", 0, False, 1500)
    assert settings["config"]["train"]["stages"] and settings["config"]["train"]["ckpt_every"] == reproduce.CKPT_EVERY
    record = reproduce._record_path(args, "L=80", "slotssm", 0, False)
    record.parent.mkdir(parents=True)

    def save(s):
        record.write_text(json.dumps({"settings": s, "metrics": {}, "run_s": 1.0}))

    before = copy.deepcopy(settings)
    before["config"]["train"]["stages"] = []  # the preset of before: no curriculum
    save(before)
    with pytest.raises(ValueError, match=r"another config .*train.stages"):
        reproduce._recorded(record, settings)
    added = copy.deepcopy(settings)
    del added["config"]["train"]["stage_modules"]  # written before the key existed: its default, the same run
    save(added)
    assert reproduce._recorded(record, settings)
    save({k: v for k, v in before.items() if k != "config"})
    assert reproduce._recorded(record, settings)
