"""Real data in the formats it ships in: TFRecord framing, MOVi shards, video files, the R-NEM HDF5 layout, the
frame-fitting rule, `slotssm data import`, and every task's data.source through the CLI (tiny presets)."""

import json
import struct
import sys

import numpy as np
import pytest

from slotssm.cli import main
from slotssm.data.readers import BouncingBallsH5Dataset, CaterDataset, MoviTFRecordDataset
from slotssm.data.readers.common import MissingExtraError, fit_frames, fit_positions, read_video, to_grey
from slotssm.data.readers.tfrecord import index_records, iter_records, make_example, parse_example, write_records
from slotssm.data.sources import SplitRequest, check_source, fit_item, open_reader
from tests.data import realdata

CPU = ["--set", "train.device=cpu", "--no-progress"]


# ------------------------------------------------------------------------------------------------ TFRecord


def test_tfrecord_round_trip_and_tensorboards_writer(tmp_path):
    ex = make_example({"a": [b"x", b"yz"], "b": np.arange(4), "c": np.array([0.5, 2.0], np.float32)})
    write_records(tmp_path / "r.tfrecord", [ex, b"", ex])
    records = list(iter_records(tmp_path / "r.tfrecord"))
    assert records == [ex, b"", ex]
    parsed = parse_example(records[0])
    assert parsed["a"] == [b"x", b"yz"] and parsed["b"].tolist() == [0, 1, 2, 3] and parsed["c"].tolist() == [0.5, 2]
    # An independent writer of the same framing (tensorboard's event files are TFRecords) reads back the same.
    from tensorboard.summary.writer.record_writer import RecordWriter

    with open(tmp_path / "tb.tfrecord", "wb") as f:
        writer = RecordWriter(f)
        for data in (b"hello", ex):
            writer.write(data)
        writer.flush()
    assert list(iter_records(tmp_path / "tb.tfrecord")) == [b"hello", ex]


def test_tfrecord_truncated_or_corrupted_names_the_file(tmp_path):
    path = tmp_path / "movi_a-train.tfrecord-00000-of-00001"
    write_records(path, [b"a" * 100, b"b" * 100])
    data = path.read_bytes()
    path.write_bytes(data[:-30])
    with pytest.raises(ValueError, match=r"movi_a-train.tfrecord-00000-of-00001: truncated"):
        index_records(path)
    bad = bytearray(data)
    bad[20] ^= 1  # a byte inside the first record's data
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match=r"00000-of-00001: corrupted record at byte 0"):
        list(iter_records(path))
    bad = bytearray(data)
    bad[2] ^= 1  # the length field
    path.write_bytes(bytes(bad))
    with pytest.raises(ValueError, match="corrupted record header at byte 0"):
        index_records(path)
    with pytest.raises(ValueError, match="record 7: not a tf.train.Example"):
        parse_example(struct.pack("<B", 0xFF) * 5, "record 7")


# ------------------------------------------------------------------------------------------------ readers


def test_movi_tfrecord_matches_the_videos_written(tmp_path):
    a = realdata.movi_arrays(5)
    realdata.write_movi_shards(tmp_path, "train", a, shards=2)
    ds = MoviTFRecordDataset(tmp_path, "train", max_objects=2)
    assert len(ds) == 5
    order = [0, 2, 4, 1, 3]  # shard 0 holds videos 0, 2, 4; shard 1 holds 1, 3
    for i, j in enumerate(order):
        item = ds.read(i)
        assert (item["video"] == a["video"][j]).all() and (item["segmentations"] == a["segmentations"][j]).all()
        assert item["shape"].tolist() == a["shape"][j].tolist() and item["color_id"].tolist() == a["color_id"][j].tolist()
        assert item["num_objects"].shape == () and item["num_objects"] == a["num_objects"][j]
        np.testing.assert_allclose(item["positions"], a["positions"][j], atol=1e-4)  # image_positions * (W, H)
        assert np.abs(item["color"].astype(int) - a["color"][j]).max() <= 1
    assert ds[0]["video"].shape == (4, 24, 24, 3)
    with pytest.raises(FileNotFoundError, match="no TFRecord shards of split 'validation'"):
        MoviTFRecordDataset(tmp_path, "validation")
    with pytest.raises(ValueError, match="more than max_objects=1"):
        MoviTFRecordDataset(tmp_path, "train", max_objects=1).read(next(i for i, j in enumerate(order)
                                                                         if a["num_objects"][j] == 2))


def test_bouncing_balls_h5_layout(tmp_path):
    written = realdata.write_bouncing_balls_h5(tmp_path / "balls.h5", {"training": 3, "validation": 2})
    ds = BouncingBallsH5Dataset(tmp_path / "balls.h5", "validation")
    assert len(ds) == 2 and ds.num_frames == 8
    item = ds.read(1)
    assert (item["frames"] == written["validation"][1] * 255).all() and item["ids"].max() == 2
    with pytest.raises(ValueError, match="balls.h5: no group 'test'"):
        BouncingBallsH5Dataset(tmp_path / "balls.h5", "test")
    with pytest.raises(FileNotFoundError, match="nothing.h5"):
        BouncingBallsH5Dataset(tmp_path / "nothing.h5")


def test_video_files_decode_and_missing_extra_is_named(tmp_path, monkeypatch):
    frames = realdata.smooth_video(6, 32, 40, 0)
    for name in ("a.mp4", "b.avi"):
        realdata.write_video(tmp_path / name, frames)
        got = read_video(tmp_path / name)
        assert got.shape == frames.shape and np.abs(got.astype(int) - frames).mean() < 12  # lossy codec
    (tmp_path / "c.mp4").write_bytes(b"not a video")
    with pytest.raises(ValueError, match="c.mp4: cannot decode"):
        read_video(tmp_path / "c.mp4")
    monkeypatch.setitem(sys.modules, "av", None)  # as if PyAV were not installed
    with pytest.raises(MissingExtraError, match=r"a.mp4.*'av'.*slotssm\[datasets\]"):
        read_video(tmp_path / "a.mp4")


def test_missing_packages_name_the_extra(tmp_path, monkeypatch):
    write_records(tmp_path / "r.tfrecord", [b"x"])
    realdata.write_bouncing_balls_h5(tmp_path / "b.h5", {"training": 1})
    monkeypatch.setitem(sys.modules, "crc32c", None)
    with pytest.raises(MissingExtraError, match=r"'crc32c'.*slotssm\[datasets\]"):
        index_records(tmp_path / "r.tfrecord")
    monkeypatch.setitem(sys.modules, "h5py", None)
    with pytest.raises(MissingExtraError, match=r"b.h5.*'h5py'.*slotssm\[datasets\]"):
        BouncingBallsH5Dataset(tmp_path / "b.h5")


def test_cater_missing_list_entry_names_it(tmp_path):
    realdata.write_cater(tmp_path, {"train": 2})
    with open(tmp_path / "lists" / "localize" / "train.txt", "a") as f:
        f.write("CATER_new_009999.avi 3\n")
    with pytest.raises(FileNotFoundError, match="train.txt lists CATER_new_009999.avi, which is missing"):
        CaterDataset(tmp_path, "train", check=True)


# ------------------------------------------------------------------------------------------------ fitting rule


def test_fit_frames_crop_and_stretch():
    x = np.zeros((1, 4, 8), np.uint8)
    x[0, :, 2:6] = 200  # the central 4x4 square of a 4x8 frame
    assert (fit_frames(x, 4, "crop") == 200).all()  # crop keeps exactly the central square
    assert fit_frames(x, 4, "stretch").shape == (1, 4, 4)
    seg = np.zeros((2, 6, 6), np.uint8)
    seg[:, :3] = 1
    seg[:, 3:] = 2
    out = fit_frames(seg, 3, nearest=True)
    assert set(np.unique(out)) == {1, 2}  # nearest neighbour: no label invented between 1 and 2
    np.testing.assert_allclose(fit_positions(np.array([[4.0, 2.0]]), 4, 8, 8, "crop"), [[4.0, 4.0]])
    assert to_grey(np.array([[[255, 255, 255], [255, 0, 0]]], np.uint8)).tolist() == [[255, 76]]


def test_fit_item_rule_and_short_video_names_it():
    a = realdata.movi_arrays(1, t=5, size=24)
    item = {k: v[0] for k, v in a.items()}
    req = SplitRequest(("video", "segmentations", "positions", "visibility"), 3, "data.num_frames", 12)
    out = fit_item(item, req, "crop", "vid0")
    assert set(out) == set(req.keys) and out["video"].shape == (3, 12, 12, 3) and out["segmentations"].shape == (3, 12, 12)
    np.testing.assert_allclose(out["positions"], a["positions"][0, :3] / 2, atol=1e-6)
    grey = fit_item(item, SplitRequest(("frames",), 3, "data.train_frames", 12, grey=True), "crop", "vid0")
    assert grey["frames"].shape == (3, 12, 12)
    with pytest.raises(ValueError, match=r"vid0: 5 frames, fewer than the 6 this run needs \(data.num_frames\)"):
        fit_item(item, SplitRequest(("video",), 6, "data.num_frames", 12), "crop", "vid0")


def test_check_source_names_the_field():
    check_source("object_centric", "movi", "crop", "/data/movi")
    with pytest.raises(ValueError, match="'cater' is not a data source of task 'object_centric'.*generated, movi"):
        check_source("object_centric", "cater", "crop")
    with pytest.raises(ValueError, match="data.source=movi needs the dataset's path"):
        check_source("object_centric", "movi", "crop", "")
    with pytest.raises(ValueError, match="data.root='/x' is only read with a reader source"):
        check_source("video_prediction", "generated", "crop", "/x")
    with pytest.raises(ValueError, match="data.resize"):
        check_source("video_prediction", "generated", "squash")


def test_movi_exported_folders_reach_the_same_dispatch(tmp_path):
    a = realdata.movi_arrays(1)
    folder = tmp_path / "train" / "vid0"
    folder.mkdir(parents=True)
    np.save(folder / "video.npy", a["video"][0])
    np.save(folder / "segmentations.npy", a["segmentations"][0])
    reader = open_reader("movi", tmp_path, "train", max_objects=2)
    assert type(reader).__name__ == "MoviDataset" and (reader.read(0)["video"] == a["video"][0]).all()
    with pytest.raises(FileNotFoundError, match="neither TFRecord shards"):
        open_reader("movi", tmp_path, "validation")


# ------------------------------------------------------------------------------------------------ import


def _videos(folder, n, t=8, h=24, w=32):
    for i in range(n):
        realdata.write_video(folder / f"clip{i}.mp4", realdata.smooth_video(t, h, w, i))


def test_import_refuses_overwrite_and_names_bad_files(tmp_path, capsys):
    src = tmp_path / "src"
    _videos(src, 2)
    realdata.write_video(src / "short.mp4", realdata.smooth_video(3, 24, 32, 9))
    frames = src / "frames_clip"
    frames.mkdir()
    for i, f in enumerate(realdata.smooth_video(8, 24, 32, 5)):
        import imageio.v3 as iio

        iio.imwrite(frames / f"{i:03d}.png", f)
    (src / "notes.txt").write_text("not a video")
    out = tmp_path / "store"
    assert main(["data", "import", str(src), "--out", str(out), "--size", "16", "--frames", "6", "--quiet"]) == 2
    assert "short.mp4: 3 frames" in capsys.readouterr().err and not out.exists()
    assert main(["data", "import", str(src), "--out", str(out), "--size", "16", "--quiet"]) == 0  # T = 3
    printed = capsys.readouterr().out
    assert "not videos, left out: notes.txt" in printed and "imported 4 videos of 3 frames" in printed
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["videos"] == ["clip0.mp4", "clip1.mp4", "frames_clip", "short.mp4"]
    assert manifest["arrays"]["video"]["shape"] == [4, 3, 16, 16, 3]
    assert main(["data", "import", str(src), "--out", str(out), "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    (src / "broken.avi").write_bytes(b"\x00" * 64)
    assert main(["data", "import", str(src), "--out", str(tmp_path / "other"), "--quiet"]) == 2
    assert "broken.avi" in capsys.readouterr().err and not (tmp_path / "other").exists()


# ------------------------------------------------------------------------------------------------ tasks, CLI


def _train(tmp_path, task, model, source, root, *extra):
    out = tmp_path / f"run-{task}-{source}"
    args = ["train", task, "--model", model, "--preset", "tiny", "--out", str(out), "--data-dir",
            str(tmp_path / "cache"), "--set", f"data.source={source}", "--set", f"data.root={root}", *CPU, *extra]
    assert main(args) == 0
    return out, json.loads((out / "eval.json").read_text())["metrics"]


def test_object_centric_on_movi_shards_then_eval_and_viz(tmp_path, capsys):
    realdata.write_movi_shards(tmp_path / "movi", "train", realdata.movi_arrays(4, size=24))
    realdata.write_movi_shards(tmp_path / "movi", "validation", realdata.movi_arrays(2, size=24, seed=1), shards=1)
    out, metrics = _train(tmp_path, "object_centric", "oc_slotssm", "movi", tmp_path / "movi")
    assert {"mse", "fg_ari", "ari", "miou"} <= set(metrics)
    assert main(["eval", str(out), "--device", "cpu"]) == 0
    assert main(["viz", str(out), "--device", "cpu"]) == 0
    assert (out / "viz" / "segmentation.png").stat().st_size > 0
    caches = sorted(p.name for p in (tmp_path / "cache").iterdir())
    assert [c.rsplit("-", 1)[0] for c in caches] == ["movi-train", "movi-validation"]
    # A source that changed after its conversion is an error naming the cache, not a stale dataset.
    realdata.write_movi_shards(tmp_path / "movi", "validation", realdata.movi_arrays(2, size=24, seed=2), shards=1)
    capsys.readouterr()
    assert main(["eval", str(out), "--device", "cpu"]) == 2
    assert "movi-validation-" in capsys.readouterr().err


def test_snitch_on_cater(tmp_path):
    realdata.write_cater(tmp_path / "cater", {"train": 4, "val": 2})
    _, metrics = _train(tmp_path, "snitch_localization", "slotssm", "cater", tmp_path / "cater")
    assert {"top1", "top5", "grid_l1"} <= set(metrics)


def test_cater_video_shorter_than_the_run_names_it(tmp_path, capsys):
    realdata.write_cater(tmp_path / "cater", {"train": 4, "val": 2}, t=8)
    args = ["train", "snitch_localization", "--model", "slotssm", "--preset", "tiny", "--out", str(tmp_path / "r"),
            "--data-dir", str(tmp_path / "cache"), "--set", "data.source=cater", "--set",
            f"data.root={tmp_path / 'cater'}", *CPU]
    assert main(args) == 2
    assert "CATER_new_000000.avi: 8 frames, fewer than the 12 this run needs (data.num_frames)" in capsys.readouterr().err


@pytest.mark.parametrize("source", ["bouncing_balls_h5", "clevrer"])
def test_video_prediction_on_real_sources(tmp_path, source):
    if source == "clevrer":
        realdata.write_clevrer(tmp_path / "clevrer", {"train": 4, "validation": 2})
        root = tmp_path / "clevrer"
    else:
        root = tmp_path / "balls.h5"
        realdata.write_bouncing_balls_h5(root, {"training": 4, "validation": 2})
    _, metrics = _train(tmp_path, "video_prediction", "slotssm", source, root)
    assert {"rollout_mse", "mse_step_1"} <= set(metrics)


def test_import_then_train_on_folder(tmp_path, caplog):
    _videos(tmp_path / "mine", 5)
    store = tmp_path / "store"
    assert main(["data", "import", str(tmp_path / "mine"), "--out", str(store), "--size", "16", "--quiet"]) == 0
    _, metrics = _train(tmp_path, "video_prediction", "slotssm", "folder", store)
    assert "rollout_mse" in metrics
    with caplog.at_level("WARNING", logger="slotssm.data"):
        out, metrics = _train(tmp_path, "object_centric", "oc_slotssm", "folder", store)
    assert set(metrics) >= {"mse"} and not {"fg_ari", "miou"} & set(metrics)  # no masks: skipped, never faked
    assert "skipping fg_ari, ari, miou, probes: the validation data has no segmentations" in caplog.text
    assert main(["eval", str(out), "--device", "cpu"]) == 0 and main(["viz", str(out), "--device", "cpu"]) == 0
    assert (out / "viz" / "slot_masks.png").stat().st_size > 0  # the slots on one's own videos
