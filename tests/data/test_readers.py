"""Readers for real data: tiny fixtures in each documented layout, read into the generators' keys."""

import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from slotssm.data.readers import CaterDataset, ClevrerDataset, MoviDataset
from slotssm.data.readers.common import read_video

RNG = np.random.default_rng(0)


def _frames(t=3, h=8, w=8):
    return RNG.integers(0, 256, size=(t, h, w, 3), dtype=np.uint8)


def _write_png_folder(folder, frames):
    folder.mkdir(parents=True)
    for i, f in enumerate(frames):
        iio.imwrite(folder / f"{i:05d}.png", f)


def test_read_video_formats(tmp_path):
    frames = _frames()
    np.save(tmp_path / "a.npy", frames)
    _write_png_folder(tmp_path / "b", frames)
    assert (read_video(tmp_path / "a.npy") == frames).all()
    assert (read_video(tmp_path / "b") == frames).all()  # PNG is lossless
    (tmp_path / "c").mkdir()
    with pytest.raises(FileNotFoundError, match="c: frame folder"):
        read_video(tmp_path / "c")


def test_movi(tmp_path):
    video = _frames(t=3)
    seg = np.zeros((3, 8, 8), np.uint8)
    seg[:, :4, :4] = 1
    seg[:2, 5:, 5:] = 2  # object 2 leaves the view in the last frame
    a = tmp_path / "train" / "vid0"
    a.mkdir(parents=True)
    np.save(a / "video.npy", video)
    np.save(a / "segmentations.npy", seg)
    meta = {"instances": [
        {"shape_label": 2, "color_label": 5, "size_label": 1, "color": [1.0, 0.0, 0.5]},
        {"shape_label": 0, "color_label": 1, "size_label": 0, "color": [0.0, 1.0, 0.0]},
    ]}
    (a / "metadata.json").write_text(json.dumps(meta))
    b = tmp_path / "train" / "vid1"  # frames as PNG folders, no metadata
    _write_png_folder(b / "rgb", video)
    _write_png_folder(b / "segmentations", seg)
    ds = MoviDataset(tmp_path, "train", max_objects=4)
    assert len(ds) == 2
    item = ds[0]
    assert item["video"].dtype == torch.uint8 and torch.equal(item["video"], torch.from_numpy(video))
    assert item["shape"].tolist() == [2, 0, -1, -1] and item["color_id"].tolist() == [5, 1, -1, -1]
    assert item["color"][0].tolist() == [255, 0, 128] and item["num_objects"].item() == 2
    assert item["visibility"][:, :2].tolist() == [[True, True], [True, True], [True, False]]
    np.testing.assert_allclose(item["positions"][0, 0].numpy(), [2.0, 2.0])  # mask centroid (x, y)
    other = ds[1]
    assert torch.equal(other["segmentations"], torch.from_numpy(seg)) and other["num_objects"].item() == 2
    assert other["shape"].tolist() == [-1] * 4
    assert MoviDataset(tmp_path, "train", max_objects=4, frame_indices=[2])[0]["video"].shape == (1, 8, 8, 3)
    with pytest.raises(FileNotFoundError, match="validation"):
        MoviDataset(tmp_path, "validation")


def test_cater(tmp_path):
    v0, v1 = _frames(t=4), _frames(t=4)
    (tmp_path / "videos").mkdir()
    np.save(tmp_path / "videos" / "CATER_new_000001.npy", v0)
    _write_png_folder(tmp_path / "videos" / "CATER_new_000002", v1)
    lists = tmp_path / "lists" / "localize"
    lists.mkdir(parents=True)
    (lists / "train.txt").write_text("CATER_new_000001.avi 7\nCATER_new_000002.avi 35\n")
    ds = CaterDataset(tmp_path, "train", frame_indices=lambda t: np.arange(0, t, 2))
    assert len(ds) == 2
    item = ds[1]
    assert item["label"].item() == 35 and torch.equal(item["video"], torch.from_numpy(v1[::2]))
    assert ds[0]["label"].item() == 7
    (lists / "val.txt").write_text("CATER_new_000001.avi 40\n")
    with pytest.raises(ValueError, match="val.txt:1"):
        CaterDataset(tmp_path, "val")
    (lists / "test.txt").write_text("CATER_new_000009.avi 1\n")
    with pytest.raises(FileNotFoundError, match="CATER_new_000009"):
        CaterDataset(tmp_path, "test")[0]


def test_clevrer(tmp_path):
    video = _frames(t=3)
    vdir = tmp_path / "video_train" / "video_00000-01000"
    vdir.mkdir(parents=True)
    np.save(vdir / "video_00007.npy", video)
    adir = tmp_path / "annotation_train" / "annotation_00000-01000"
    adir.mkdir(parents=True)
    ann = {
        "scene_index": 7,
        "object_property": [
            {"object_id": 0, "color": "red", "material": "metal", "shape": "cube"},
            {"object_id": 1, "color": "cyan", "material": "rubber", "shape": "cylinder"},
        ],
        "motion_trajectory": [
            {"frame_id": t, "objects": [
                {"object_id": 0, "location": [t, 0.5, 0.2], "inside_camera_view": True},
                {"object_id": 1, "location": [-1.0, t, 0.2], "inside_camera_view": t < 2},
            ]} for t in range(5)  # more frames annotated than exported: ignored
        ],
    }
    (adir / "annotation_00007.json").write_text(json.dumps(ann))
    ds = ClevrerDataset(tmp_path, "train", max_objects=4)
    item = ds[0]
    assert torch.equal(item["video"], torch.from_numpy(video))
    assert item["shape"].tolist() == [0, 2, -1, -1] and item["color_id"].tolist() == [1, 6, -1, -1]
    assert item["material"].tolist() == [1, 0, -1, -1] and item["num_objects"].item() == 2
    assert item["visibility"][:, 1].tolist() == [True, True, False]
    assert item["positions"][2, 0].tolist() == pytest.approx([2.0, 0.5, 0.2])
    assert set(ClevrerDataset(tmp_path, "train", annotations=False)[0]) == {"video"}
    (adir / "annotation_00007.json").unlink()
    with pytest.raises(FileNotFoundError, match="annotation_00007"):
        ClevrerDataset(tmp_path, "train")
