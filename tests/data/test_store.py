"""Store, VideoDataset and the data CLI: round trips, manifest checks, error messages naming files and fields."""

import json
import pickle

import numpy as np
import pytest
import torch

from slotssm.cli import main
from slotssm.data import VideoDataset, generate, generate_to_dir, get_or_generate, load, save

SMALL = dict(num_frames=4, image_size=16, num_objects=2)


@pytest.fixture()
def stored(tmp_path):
    root = tmp_path / "bb"
    manifest = generate_to_dir("bouncing_balls", root, 5, seed=2, batch_size=2, **SMALL)
    return root, manifest


def test_save_load_round_trip(tmp_path):
    arrays = {"frames": np.arange(96, dtype=np.uint8).reshape(2, 3, 4, 4), "x": np.linspace(0, 1, 6).reshape(2, 3)}
    manifest = save(arrays, tmp_path, {"generator": "custom", "version": 1, "params": {}, "seed": 0, "num_videos": 2})
    loaded, m = load(tmp_path, verify=True)
    assert m == manifest and m["generator"] == "custom"
    for key, a in arrays.items():
        assert isinstance(loaded[key], np.memmap) and not loaded[key].flags.writeable
        assert loaded[key].dtype == a.dtype and (loaded[key] == a).all()
    assert set(m["arrays"]["x"]) >= {"file", "shape", "dtype", "sha256"}


def test_generate_to_dir_matches_generate_whatever_the_batches(stored, tmp_path):
    root, manifest = stored
    arrays, m = load(root, verify=True)
    direct = generate("bouncing_balls", 5, seed=2, **SMALL)
    for key in direct:
        assert arrays[key].tobytes() == direct[key].tobytes(), key
    other = generate_to_dir("bouncing_balls", tmp_path / "b", 5, seed=2, batch_size=3, **SMALL)
    assert {k: e["sha256"] for k, e in other["arrays"].items()} == {k: e["sha256"] for k, e in m["arrays"].items()}
    assert m["params"]["num_objects"] == 2 and m["seed"] == 2 and m["num_videos"] == 5 and m["version"] == 1
    assert m["arrays"]["frames"]["dims"] == ["video", "time", "height", "width"]


def test_static_arrays_are_stored_once(tmp_path):
    generate_to_dir("blinking_balls", tmp_path, 3, batch_size=2, num_frames=2, image_size=16, patch=4, num_objects=2)
    arrays, _ = load(tmp_path)
    assert arrays["palette"].shape == (7, 3) and arrays["frames"].shape == (3, 2, 16, 16, 3)


def test_get_or_generate_loads_and_refuses_mismatches(tmp_path):
    root = tmp_path / "d"
    a1, m1 = get_or_generate("bouncing_balls", root, 3, seed=1, **SMALL)
    stamp = (root / "frames.npy").stat().st_mtime_ns
    a2, m2 = get_or_generate("bouncing_balls", root, 3, seed=1, **SMALL)
    assert (root / "frames.npy").stat().st_mtime_ns == stamp and m1 == m2  # loaded, not regenerated
    with pytest.raises(ValueError, match="params.num_objects"):
        get_or_generate("bouncing_balls", root, 3, seed=1, **{**SMALL, "num_objects": 3})
    with pytest.raises(ValueError, match="seed"):
        get_or_generate("bouncing_balls", root, 3, seed=2, **SMALL)
    with pytest.raises(ValueError, match="num_videos"):
        get_or_generate("bouncing_balls", root, 4, seed=1, **SMALL)
    with pytest.raises(ValueError, match="generator"):
        get_or_generate("shapes_video", root, 3, seed=1)


def test_get_or_generate_called_at_once_generates_once(tmp_path, monkeypatch):
    # Two runs started together ask for the same dataset: one generates it, the other waits and loads it. Without
    # the lock both wrote .frames.npy.tmp and one failed renaming it (seen with `slotssm reproduce --jobs 2`).
    import threading
    import time

    from slotssm.data import store

    calls, real = [], store.generate_to_dir

    def slow_generate(*a, **kw):
        calls.append(1)
        time.sleep(0.3)  # the window in which the second caller arrives
        return real(*a, **kw)

    monkeypatch.setattr(store, "generate_to_dir", slow_generate)
    root, out, errors = tmp_path / "d", [], []

    def fetch():
        try:
            out.append(get_or_generate("bouncing_balls", root, 3, seed=1, **SMALL))
        except Exception as err:  # noqa: BLE001 - reported below
            errors.append(err)

    threads = [threading.Thread(target=fetch) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(calls) == 1 and len(out) == 2
    np.testing.assert_array_equal(out[0][0]["frames"], out[1][0]["frames"])


def test_truncated_missing_and_changed_files_are_named(stored):
    root, _ = stored
    path = root / "positions.npy"
    data = path.read_bytes()
    path.write_bytes(data[:-8])
    with pytest.raises(ValueError, match="positions.npy: truncated"):
        load(root)
    path.write_bytes(data[:-8] + b"\x01" * 8)  # right size, different bytes
    load(root)  # size and header are fine ...
    with pytest.raises(ValueError, match="positions.npy: sha256"):
        load(root, verify=True)  # ... the checksum is not
    path.unlink()
    with pytest.raises(FileNotFoundError, match="positions.npy"):
        load(root)
    (root / "manifest.json").unlink()
    with pytest.raises(FileNotFoundError, match="manifest"):
        load(root)


def test_header_mismatch_is_named(stored):
    root, _ = stored
    np.save(root / "masses.npy", np.zeros((5, 3)))
    with pytest.raises(ValueError, match="masses.npy: holds"):
        load(root)


@pytest.mark.parametrize("where", ["parent", "absolute", "etc"])
def test_manifest_file_outside_the_root_is_refused_before_opening(stored, tmp_path, monkeypatch, where):
    root, _ = stored
    outside = tmp_path / "outside.npy"
    np.save(outside, np.load(root / "masses.npy"))  # a valid file: only the path check can stop it
    file = {"parent": "../outside.npy", "absolute": str(outside), "etc": "../../../../etc/passwd"}[where]
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["arrays"]["masses"]["file"] = file
    (root / "manifest.json").write_text(json.dumps(manifest))
    opened = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda f, *a, **k: opened.append(str(f)) or real_open(f, *a, **k))
    monkeypatch.setattr(np, "load", lambda *a, **k: pytest.fail(f"np.load{a} before the path was checked"))
    for call in (lambda: load(root), lambda: load(root, verify=True), lambda: VideoDataset(root)):
        with pytest.raises(ValueError, match=r"manifest\.json: arrays\.masses\.file: .* outside the dataset root"):
            call()
    assert opened == [], opened  # nothing opened through open() either (the manifest is read with read_text)
    with pytest.raises(ValueError, match="outside") as err:
        load(root)
    assert file in str(err.value)


def test_video_dataset_items(stored):
    root, _ = stored
    ds = VideoDataset(root)
    assert len(ds) == 5
    item = ds[1]
    assert item["frames"].dtype == torch.uint8 and item["frames"].shape == (4, 16, 16)
    assert item["positions"].dtype == torch.float32 and item["positions"].shape == (4, 2, 2)
    direct = generate("bouncing_balls", 5, seed=2, **SMALL)
    assert torch.equal(item["frames"], torch.from_numpy(direct["frames"][1]))
    picked = VideoDataset(root, keys=["frames", "masses"], frame_indices=[0, 3], transform=lambda d: {**d, "tag": 1})[2]
    assert set(picked) == {"frames", "masses", "tag"} and picked["frames"].shape == (2, 16, 16)
    assert torch.equal(picked["frames"][1], torch.from_numpy(direct["frames"][2, 3]))
    called = VideoDataset(root, keys=["positions"], frame_indices=lambda t: np.arange(t)[::-1])[0]
    assert torch.equal(called["positions"][0], torch.from_numpy(direct["positions"][0, -1]).float())
    with pytest.raises(ValueError, match="keys: 'nope'"):
        VideoDataset(root, keys=["nope"])
    # Pickling (DataLoader workers) carries the path, not the data.
    ds[0]
    assert len(pickle.dumps(ds)) < 20_000
    assert torch.equal(pickle.loads(pickle.dumps(ds))[1]["frames"], item["frames"])


def test_cli_generate_and_info(tmp_path, capsys):
    out, png = tmp_path / "sv", tmp_path / "prev.png"
    rc = main(["data", "generate", "shapes_video", "--num", "3", "--out", str(out), "--seed", "1", "--quiet",
               "--set", "num_frames=3", "--set", "image_size=24", "--set", "variant=b", "--set", "num_objects=2,4"])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["params"]["variant"] == "b" and manifest["params"]["num_objects"] == [2, 4]
    assert manifest["arrays"]["video"]["shape"] == [3, 3, 24, 24, 3]
    rc = main(["data", "info", str(out), "--png", str(png), "--verify"])
    text = capsys.readouterr().out
    assert rc == 0 and "shapes_video" in text and str(png) in text and "sha256" in text
    import imageio.v3 as iio

    image = iio.imread(png)
    assert image.ndim == 3 and image.shape[2] == 3 and image.shape[0] >= 2 * 24
    assert main(["data", "generate", "shapes_video", "--num", "1", "--out", str(tmp_path / "x"), "--set", "bad=1"]) == 2
    assert "unknown parameter 'bad'" in capsys.readouterr().err
    assert main(["data", "info", str(tmp_path / "missing")]) == 2
