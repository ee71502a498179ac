"""shapes_video: masks partition the image and agree with the pixels, attributes padded, occlusion happens."""

import numpy as np
import pytest

from slotssm.data import generate
from slotssm.data.shapes_video import BACKGROUND_A, COLORS, SHAPES_A
from slotssm.data.render import SHAPES


@pytest.fixture(scope="module", params=[True, False], ids=["antialias", "hard"])
def scene(request):
    return generate("shapes_video", 6, seed=4, num_frames=5, image_size=48, num_objects=(3, 8),
                    antialias=request.param), request.param


def test_labels_partition_the_image_into_present_objects(scene):
    out, _ = scene
    seg, num = out["segmentations"], out["num_objects"]
    assert seg.shape == (6, 5, 48, 48) and seg.dtype == np.uint8
    for v in range(6):
        assert set(np.unique(seg[v])) <= set(range(num[v] + 1))  # no label of an absent slot
        areas = np.bincount(seg[v].ravel(), minlength=9)
        assert areas.sum() == 5 * 48 * 48  # every pixel has exactly one label
    vis = np.stack([(seg == k + 1).any(axis=(2, 3)) for k in range(8)], -1)  # (n, T, K)
    assert (vis == out["visibility"]).all()


def test_masks_agree_with_rendered_pixels(scene):
    out, antialias = scene
    video, seg = out["video"].astype(int), out["segmentations"]
    exact, total = 0, 0
    for v in range(6):
        for k in range(out["num_objects"][v]):
            mask = seg[v] == k + 1
            err = np.abs(video[v][mask] - out["color"][v, k]).max(-1)  # (pixels,)
            exact, total = exact + (err == 0).sum(), total + mask.sum()
            if not antialias:
                assert (err == 0).all()  # hard edges: every labelled pixel is its object's colour
        back = video[v][seg[v] == 0]
        if not antialias:
            assert (back == BACKGROUND_A).all()
    # Anti-aliased: only edge pixels blend, the bulk of the masks is exactly the objects' colours.
    assert exact / total > (0.6 if antialias else 0.999)


def test_antialiasing_does_not_move_the_masks():
    kw = dict(num_frames=3, image_size=40, num_objects=(4, 7), variant="b")
    soft, hard = generate("shapes_video", 4, seed=9, **kw), generate("shapes_video", 4, seed=9, antialias=False, **kw)
    assert (soft["segmentations"] == hard["segmentations"]).all()
    assert (soft["video"] != hard["video"]).any()


def test_attributes_and_padding(scene):
    out, _ = scene
    num = out["num_objects"]
    assert ((num >= 3) & (num <= 8)).all()
    slots = np.arange(8)[None] < num[:, None]  # (n, K) present
    assert ((out["shape"] >= 0) == slots).all() and (out["shape"] < SHAPES_A).all()
    assert ((out["color_id"] >= 0) == slots).all()
    assert (out["color"][~slots] == 0).all() and (out["size"][~slots] == 0).all()
    assert (out["color"][slots] == COLORS[out["color_id"][slots]]).all()
    assert (out["size"][slots] > 0).all()
    pos = out["positions"]
    assert (pos[:, :, :, :][np.broadcast_to(slots[:, None], pos.shape[:3])] >= 0).all()
    assert (pos <= 48).all()
    for v in range(6):  # depth is a permutation of the present objects
        assert sorted(out["depth"][v, : num[v]]) == list(range(num[v]))


def test_objects_occlude_each_other():
    out = generate("shapes_video", 8, seed=0, num_frames=6, image_size=48, num_objects=(8, 8))
    area = np.stack([(out["segmentations"] == k + 1).sum((2, 3)) for k in range(8)], -1)  # (n, T, K)
    full = np.pi * (0.9 * out["size"][:, None]) ** 2  # a disc's area; other shapes are smaller
    assert (area < 0.5 * full).any()  # some object is mostly hidden in some frame


def test_variant_b_has_more_shapes_and_varied_backgrounds():
    out = generate("shapes_video", 12, seed=0, num_frames=2, image_size=32, variant="b", num_objects=(6, 6))
    assert out["shape"].max() >= SHAPES_A and out["shape"].max() < len(SHAPES)
    corners = out["video"][:, 0, 0, 0]  # top-left pixel of each video (usually background)
    assert len(np.unique(corners, axis=0)) > 3
