import json

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from slotssm import viz


def _frames(T=4, H=8, W=8, C=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((T, H, W, C)).astype(np.float32)


def test_to_uint8_layouts():
    f = _frames()
    out = viz.to_uint8(f)
    assert out.dtype == np.uint8 and out.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(viz.to_uint8(torch.as_tensor(f).permute(0, 3, 1, 2)), out)  # (T, C, H, W)
    gray = viz.to_uint8(f[..., 0])
    assert gray.shape == (4, 8, 8, 3) and (gray[..., 0] == gray[..., 2]).all()
    assert viz.to_uint8(np.full((1, 2, 2), 2.0)).max() == 255  # clipped
    with pytest.raises(ValueError, match="frames"):
        viz.to_uint8(np.zeros((2, 5, 5, 7)))


def test_save_gif_roundtrip(tmp_path):
    f = _frames(T=5)
    path = viz.save_gif(f, tmp_path / "sub" / "roll.gif", fps=5, scale=2)
    assert path.exists()
    back = iio.imread(path, index=None)
    assert back.shape[:3] == (5, 16, 16)
    # GIF quantises colours: the round trip is close, not exact
    want = viz.to_uint8(f).repeat(2, 1).repeat(2, 2)
    assert np.abs(back[..., :3].astype(int) - want).mean() < 20


def test_frame_grid(tmp_path):
    rows = {"ground truth": _frames(T=6), "prediction": torch.as_tensor(_frames(T=4, seed=1))}
    path = viz.frame_grid(rows, tmp_path / "grid.png", max_cols=3, cell_inches=1.0, dpi=50)
    img = iio.imread(path)
    assert img.shape[:2] == (2 * 50, 3 * 50)  # rows x cols cells of 1 inch at 50 dpi
    assert img.std() > 0
    with pytest.raises(ValueError, match="rows"):
        viz.frame_grid({}, tmp_path / "empty.png")


def _extent(img, colour, min_run):
    """(top, bottom, left, right) of the pixels of `colour` in rows/columns holding at least `min_run` of them.

    Panels are large blocks of one colour; the small swatches of the colour key and text edges fall below min_run.
    """
    mask = (img[..., :3] == colour).all(-1)
    ys, xs = np.flatnonzero(mask.sum(1) >= min_run), np.flatnonzero(mask.sum(0) >= min_run)
    return ys.min(), ys.max(), xs.min(), xs.max()


def _keep_figure(monkeypatch):
    figs = []
    monkeypatch.setattr(viz.plt, "close", figs.append)
    return figs


def test_attention_argmax_maps_layout_and_labels(tmp_path, monkeypatch):
    T, h, w, K = 10, 2, 4, 10
    attn = np.zeros((T, h * w, K))
    attn[np.arange(T), :, np.arange(T)] = 1.0  # every patch of step t goes to slot t
    figs = _keep_figure(monkeypatch)
    img = iio.imread(viz.attention_argmax_maps(attn, tmp_path / "maps.png", grid=(h, w), scale=4, pad=2))
    pal = viz.slot_palette(K)
    boxes = [_extent(img, pal[t], 90) for t in range(T)]
    (fig,) = figs
    assert all(ax.bbox.height >= 96 - 0.5 and ax.bbox.width >= 192 - 0.5 for ax in fig.axes)  # (2 x 4) * 4 * 12
    for top, bottom, left, right in boxes:  # the slot colour itself fills the panel (less its frame line)
        assert bottom - top + 1 >= 92 and right - left + 1 >= 2 * 92
    tops, lefts = [b[0] for b in boxes], [b[2] for b in boxes]
    assert len(set(tops[:8])) == 1 and len(set(lefts[:8])) == 8 and lefts == sorted(lefts[:8]) + lefts[:2]
    assert tops[8] == tops[9] > boxes[0][1]  # steps 8 and 9 wrap into a second row, under steps 0 and 1
    assert img.shape[0] > 2 * 96 + 40 and img.shape[1] >= 8 * 192  # room for the title, step titles and key
    assert "Slot attention" in fig._suptitle.get_text()
    assert [ax.get_title() for ax in fig.axes] == [f"t={t}" for t in range(T)]
    assert [t.get_text() for t in fig.legends[0].get_texts()] == [f"slot {k}" for k in range(K)]
    viz.plt.close("all")


def test_attention_argmax_maps_patches_and_frames(tmp_path, monkeypatch):
    T, h, w, K = 3, 2, 4, 8
    attn = np.zeros((T, h * w, K))
    attn[:, np.arange(h * w), np.arange(h * w)] = 1.0  # patch m goes to slot m
    figs = _keep_figure(monkeypatch)
    img = iio.imread(viz.attention_argmax_maps(attn[:1], tmp_path / "one.png", grid=(h, w), scale=4))
    pal = viz.slot_palette(K)
    top, bottom, left, right = _extent(img, pal[0], 40)  # patch 0: one 48 x 48 block (8 px map x 12, nearest)
    assert bottom - top + 1 >= 46 and right - left + 1 >= 46
    below, right_of = _extent(img, pal[w], 40), _extent(img, pal[1], 40)
    assert below[0] == bottom + 1 and below[2] == left  # row-major: patch w sits right under patch 0
    assert right_of[2] == right + 1 and right_of[0] == top
    # with frames: a "frame" row above a "slots" overlay row, both labelled, each panel >= 96 px
    frames = _frames(T=T, H=8, W=16)
    img = iio.imread(viz.attention_argmax_maps(attn, tmp_path / "over.png", grid=(h, w), frames=frames))
    fig = figs[-1]
    assert len(fig.axes) == 2 * T and all(ax.bbox.height >= 96 - 0.5 and ax.bbox.width >= 192 - 0.5 for ax in fig.axes)
    assert {"frame", "slots"} <= {t.get_text() for t in fig.texts}
    assert img.shape[0] >= 2 * 96 + 40 and img.shape[1] >= T * 192
    viz.plt.close("all")


def test_attention_argmax_maps_gif_and_errors(tmp_path):
    T, h, w, K = 3, 2, 4, 5
    attn = np.zeros((T, h * w, K))
    attn[:, np.arange(h * w), np.arange(h * w) % K] = 1.0
    # (T, h, w, K) input with frames, as a GIF: one frame per step, rows (frames, overlay) stacked
    frames = _frames(T=T, H=8, W=16)
    gif = viz.attention_argmax_maps(torch.as_tensor(attn.reshape(T, h, w, K)), tmp_path / "maps.gif", frames=frames)
    back = iio.imread(gif, index=None)
    assert back.shape[:3] == (T, 16, 16)
    with pytest.raises(ValueError, match="grid"):
        viz.attention_argmax_maps(attn, tmp_path / "bad.png", grid=(3, 3))
    with pytest.raises(ValueError, match="frames"):
        viz.attention_argmax_maps(attn, tmp_path / "bad.png", grid=(h, w), frames=_frames(T=T, H=7, W=16))


def test_plot_curves(tmp_path):
    path = viz.plot_curves({"a": ([0, 10, 20], [3.0, 2.0, 1.0]), "b": [1.0, 0.5, 0.2, 0.1]}, tmp_path / "c.png",
                           ylabel="loss", title="t", logy=True)
    img = iio.imread(path)
    assert img.shape[:2] == (350, 500)
    with pytest.raises(ValueError, match="curves"):
        viz.plot_curves({"a": ([0, 1], [1.0, 2.0, 3.0])}, tmp_path / "bad.png")


def test_plot_bars_draws_means_stds_and_references(tmp_path):
    groups = {"L=20": {"a": (0.5, 0.1), "b": (0.3, 0.0)}, "L=40": {"a": (0.4, 0.05)}}
    refs = {"L=20": {"chance": 0.2, "unknown": float("nan")}, "L=40": {"chance": 0.25}}
    img = iio.imread(viz.plot_bars(groups, tmp_path / "b.png", "acc", "t", refs=refs))
    assert img.ndim == 3 and img.shape[0] == 350 and (img[..., :3].std((0, 1)) > 0).all()
    with pytest.raises(ValueError, match=r"groups\['L=20'\]\['a'\]"):
        viz.plot_bars({"L=20": {"a": (0.5,)}}, tmp_path / "bad.png")


def test_plot_metric_curves_from_jsonl(tmp_path):
    lines = [{"step": s, "split": "train", "time": 0.0, "loss": 1.0 / s, "lr": 1e-3} for s in range(1, 6)]
    lines += [{"step": 5, "split": "val", "loss": 0.3, "ari": 0.5}, {"step": 6, "split": "train", "loss": "nan"}]
    text = "".join(json.dumps(r) + "\n" for r in lines) + '{"step": 7, "lo'  # torn last line
    (tmp_path / "metrics.jsonl").write_text(text)
    paths = viz.plot_metric_curves_from_jsonl(tmp_path / "metrics.jsonl", tmp_path / "curves")
    assert [p.name for p in paths] == ["loss.png", "lr.png"]  # ari has one point: no curve, no PNG
    assert not (tmp_path / "curves" / "ari.png").exists()
    assert all(p.exists() and iio.imread(p).shape[:2] == (350, 500) for p in paths)


def test_frame_grid_names_its_columns(tmp_path, monkeypatch):
    import matplotlib.figure

    titles = []
    real = matplotlib.figure.Figure.savefig

    def spy(fig, *args, **kwargs):
        titles.extend(ax.get_title() for ax in fig.axes)
        return real(fig, *args, **kwargs)

    monkeypatch.setattr(matplotlib.figure.Figure, "savefig", spy)
    viz.frame_grid({"video": _frames(T=3)}, tmp_path / "t.png")
    viz.frame_grid({"slot masks": _frames(T=3)}, tmp_path / "s.png", column="slot")
    assert titles == ["t=0", "t=1", "t=2", "slot 0", "slot 1", "slot 2"]
