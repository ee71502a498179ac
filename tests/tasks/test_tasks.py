"""Every task: a tiny preset learns (loss goes down on a batch), evaluates with every metric, draws its pictures."""

import dataclasses
import itertools
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from slotssm.models import list_models
from slotssm.tasks import get_task, list_tasks
from slotssm.train.config import apply_overrides

EXPECTED = {
    "video_prediction": {"rollout_mse", "rollout_mse_first", "rollout_mse_last", "mse_step_1"},
    "blinking_balls": {"pixel_acc", "ball_acc", "ball_iou", "colour_acc", "image_mse", "seq_len"},
    "object_centric": {"fg_ari", "ari", "miou", "mse"},
    "snitch_localization": {"top1", "top5", "grid_l1"},
}
DEFAULT_MODEL = {"object_centric": "oc_slotssm"}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("data")


def make(name, data_dir, model="slotssm", **data):
    cls = get_task(name)
    cfg = cls.default_config("tiny", model)
    if data:
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data))
    return cls(cfg, data_dir)


def test_every_task_is_registered():
    # Other test modules may register their own tasks (the trainer's "toy"); the library's own are exactly these.
    builtin = {n for n in list_tasks() if get_task(n).__module__.startswith("slotssm.")}
    assert builtin == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_task_learns_evaluates_and_draws(name, data_dir, tmp_path):
    torch.manual_seed(0)
    task = make(name, data_dir, DEFAULT_MODEL.get(name, "slotssm"))
    model = task.build_model()
    train, val = task.datasets()
    batch = task.collate([train[i] for i in range(4)])
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        torch.manual_seed(1)  # the same frame sampling each step: a fixed batch to fit
        loss, logs = task.loss(model, batch)
        assert all(isinstance(v, float) for v in logs.values())
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.9 * losses[0], losses
    model.eval()
    metrics = task.evaluate(model, val, batch_size=4, device=torch.device("cpu"))
    assert EXPECTED[name] <= set(metrics), metrics
    assert all(v == v for v in metrics.values())  # no NaN
    paths = task.visualise(model, val, tmp_path / "viz", device=torch.device("cpu"))
    assert paths and all(p.exists() and p.stat().st_size > 0 for p in paths)


@pytest.mark.parametrize("model", ["oc_slotssm", "slotssm", "slot_transformer", "single_state_ssm"])
def test_snitch_draws_which_slot_reads_each_token(model, data_dir, tmp_path):
    """The snitch page's picture per model (App. D.1): the encoder attention's argmax over the sampled frames."""
    task = make("snitch_localization", data_dir, model)
    net = task.build_model().eval()
    names = {p.name for p in task.visualise(net, task.datasets()[1], tmp_path, device=torch.device("cpu"))}
    assert "slot_attention.png" in names and (tmp_path / "slot_attention.png").stat().st_size > 0


@pytest.mark.parametrize("model", list_models())
def test_every_model_runs_on_every_task_interface(model, data_dir):
    # One flag swaps the sequence model: the same task builds, computes a loss and back-propagates.
    task = make("video_prediction", data_dir, model)
    net = task.build_model()
    train, _ = task.datasets()
    loss, _ = task.loss(net, task.collate([train[0], train[1]]))
    loss.backward()
    assert torch.isfinite(loss)


def test_snitch_pretrain_then_finetune(data_dir, tmp_path):
    from slotssm.config import apply_overrides
    from slotssm.train.checkpoint import init_from_run, load_model_from_run
    from slotssm.train.trainer import train as run_training

    pre = make("snitch_localization", data_dir, objective="reconstruct")
    run_training(pre.config, tmp_path / "pre", data_dir=data_dir, progress=False)
    fine = make("snitch_localization", data_dir)
    config = apply_overrides(fine.config, [f"train.init_from={tmp_path / 'pre'}"])
    with pytest.warns(DeprecationWarning, match="train.init_from"):  # the old key still works
        assert apply_overrides(fine.config, [f"data.init_from={tmp_path / 'pre'}"]) == config
    model = fine.build_model()
    init_from_run(model, config, data_dir)  # what the trainer does for a fresh run with train.init_from
    _, pre_model, _ = load_model_from_run(tmp_path / "pre")
    for name in ("encoder", "seq"):
        for a, b in zip(getattr(model, name).state_dict().values(), getattr(pre_model, name).state_dict().values()):
            assert torch.equal(a, b)
    assert not torch.equal(model.head.out.weight, torch.zeros_like(model.head.out.weight))  # the head is its own
    run_training(config, tmp_path / "fine", data_dir=data_dir, progress=False)  # the trainer applies it
    with pytest.raises(ValueError, match="init_modules"):
        init_from_run(model, apply_overrides(config, ["train.init_modules=(encoder,nope)"]), data_dir)
    with pytest.raises(ValueError, match="objective"):
        make("snitch_localization", data_dir, objective="nope")


def test_snitch_weight_counts_the_gold_pixels_error_that_many_times(data_dir):
    """The diagnostic pre-training loss: weight 1 is plain MSE; weight w counts each gold pixel's error w times,
    normalised by the total weight, against a slow per-pixel reference."""
    from slotssm.data.snitch import GOLD
    from slotssm.tasks.snitch_localization import gold_pixels

    frames = torch.rand(2, 3, 3, 6, 6)
    frames[0, 1, :, 2, 3] = torch.as_tensor(GOLD) / 255.0
    frames[1, 0, :, 5, 0] = (torch.as_tensor(GOLD) + 10.0) / 255.0  # within the tolerance (L1 30 < 40)
    frames[1, 2, :, 0, 0] = (torch.as_tensor(GOLD) + 15.0) / 255.0  # not (L1 45)
    gold = gold_pixels(frames.movedim(2, -1) * 255.0)
    assert torch.equal(gold, gold_pixels((frames.movedim(2, -1) * 255.0).round().to(torch.uint8)))  # either layout
    assert gold.shape == (2, 3, 6, 6) and gold.sum() == 2 and gold[0, 1, 2, 3] and gold[1, 0, 5, 0]

    plain = make("snitch_localization", data_dir, objective="reconstruct")
    weighted = make("snitch_localization", data_dir, objective="reconstruct", snitch_weight=5.0)
    recon = torch.rand_like(frames)

    # a model whose reconstruction is fixed, so the loss is the weighting alone
    model = SimpleNamespace(encoder=lambda x: x, seq=lambda x: SimpleNamespace(slots=x),
                            head=lambda slots: (recon, None, None))
    with torch.no_grad():
        for task, w in ((plain, 1.0), (weighted, 5.0)):
            task.sample_frames = lambda video, train: frames
            loss, _ = task.loss(model, {"video": frames})
            num = den = 0.0
            for idx in itertools.product(*(range(n) for n in gold.shape)):
                pixel_w = w if gold[idx] else 1.0
                err = ((recon[idx[0], idx[1], :, idx[2], idx[3]] - frames[idx[0], idx[1], :, idx[2], idx[3]]) ** 2)
                num += pixel_w * err.sum().item()
                den += pixel_w * 3
            assert loss.item() == pytest.approx(num / den, rel=1e-5)
    assert loss.item() != pytest.approx(F.mse_loss(recon, frames).item(), rel=1e-3)  # the weight matters here
    with pytest.raises(ValueError, match="snitch_weight"):
        make("snitch_localization", data_dir, objective="reconstruct", snitch_weight=0.5)
    with pytest.raises(ValueError, match="snitch_weight.*objective"):
        make("snitch_localization", data_dir, snitch_weight=5.0)


def test_hard_pixels_reach_the_task_losses(data_dir):
    """data.hard_pixels adds the worst pixels' term to both reconstruction tasks' losses (vision.reconstruction_loss
    is tested against a slow reference); the classifier has no reconstruction to weight."""
    for name, extra in (("snitch_localization", dict(objective="reconstruct")), ("object_centric", {})):
        plain, hard = make(name, data_dir, **extra), make(name, data_dir, hard_pixels=0.1, **extra)
        torch.manual_seed(0)
        model = plain.build_model()
        batch = plain.collate([plain.datasets()[0][i] for i in range(2)])
        with torch.no_grad():
            torch.manual_seed(1)
            base, _ = plain.loss(model, batch)
            torch.manual_seed(1)  # the same sampled frames
            worst, _ = hard.loss(model, batch)
        assert worst.item() >= 2 * base.item() > 0  # the worst pixels' mean is at least the mean
        with pytest.raises(ValueError, match="hard_pixels"):
            make(name, data_dir, hard_pixels=1.0, **extra)
    with pytest.raises(ValueError, match="hard_pixels.*objective"):
        make("snitch_localization", data_dir, hard_pixels=0.1)


def test_unknown_preset_and_model():
    cls = get_task("video_prediction")
    with pytest.raises(ValueError, match="preset"):
        cls.default_config("huge", "slotssm")
    with pytest.raises(ValueError, match="unknown name 'nope'"):
        cls.default_config("tiny", "nope")


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_reference_metrics_are_the_model_free_answers(name, data_dir):
    task = make(name, data_dir)
    val = task.datasets()[1]
    refs = task.reference_metrics(val)
    assert refs and all(isinstance(v, dict) and v for v in refs.values())
    batch = task.collate([val[i] for i in range(len(val))])
    if name == "video_prediction":
        d = task.config.data
        frames = batch["frames"].double() / 255
        want = ((frames[:, d.context - 1] - frames[:, d.context]) ** 2).mean()
        assert refs["last frame repeated"]["mse_step_1"] == pytest.approx(float(want), rel=1e-6)
        assert refs["blank frame"]["rollout_mse"] == pytest.approx(float((frames[:, d.context:] ** 2).mean()), rel=1e-6)
    elif name == "blinking_balls":
        target = batch["target_classes"]
        assert refs["all background"]["pixel_acc"] == pytest.approx(float((target == 0).float().mean()), rel=1e-5)
        assert refs["all background"]["ball_acc"] == 0.0 and refs["all background"]["ball_iou"] == 0.0
        assert "colour_acc" not in refs["all background"]
        ball = target > 0
        common = np.bincount(target[ball].numpy(), minlength=7)[1:].argmax() + 1
        want = float((target[ball] == common).float().mean())
        assert refs["last frame, most frequent colour"]["colour_acc"] == pytest.approx(want, rel=1e-5)
        white = refs["last frame, balls white"]
        assert white["colour_acc"] == pytest.approx(float((target[ball] == 1).float().mean()), rel=1e-5)
        assert white["ball_iou"] > 0.5  # the balls barely move in one frame
    elif name == "snitch_localization":
        assert refs["uniform guess"]["top1"] == pytest.approx(1 / 36)
        assert 0 <= refs["centre cell"]["top1"] <= 1
        labels = batch["label"].numpy()
        prior = refs["label prior of this split"]
        assert prior["top1"] == pytest.approx(np.bincount(labels).max() / len(labels))
        assert prior["top5"] >= prior["top1"] and prior["top5"] >= min(1.0, 5 / 36)
        assert 0 <= refs["hand-written gold tracker"]["top1"] <= 1
    else:
        from sklearn.metrics import adjusted_rand_score

        true = batch["segmentations"].numpy()
        want = [adjusted_rand_score(t[t > 0], np.zeros((t > 0).sum())) for t in true.reshape(len(true), -1)]
        assert refs["one segment"]["fg_ari"] == pytest.approx(float(np.mean(want)))  # 0 unless one object only
        assert 0 < refs["one segment"]["miou"] < 1
        vis = batch["visibility"][:, -1].numpy()
        shapes = batch["shape"].numpy()[vis]
        chance = refs["most frequent attribute, mean position"]
        assert chance["probe_shape_acc"] == pytest.approx(np.bincount(shapes).max() / len(shapes))
        assert chance["probe_position_r2"] == 0.0


def test_snitch_gold_tracker_follows_the_last_sighting(data_dir):
    import torch

    from slotssm.data.snitch import GOLD

    task = make("snitch_localization", data_dir)
    stride = task.config.data.stride
    video = torch.zeros(3, 4 * stride, 36, 36, 3, dtype=torch.uint8)
    gold = torch.as_tensor(GOLD).to(torch.uint8)
    video[0, 0, 1:3, 1:3] = gold  # seen top-left (cell 0) on two sampled frames ...
    video[0, stride, 1:3, 1:3] = gold
    video[0, 2 * stride, 19:21, 31:33] = gold  # ... last seen centred at (y, x) = (20, 32) px: row 3, column 5
    video[1, 1, 30:32, 5:7] = gold  # only on a frame the evaluation skips: never seen, the centre cell
    video[2, 3 * stride, 7:9, 13:15] = torch.tensor([255, 0, 0], dtype=torch.uint8)  # red is not gold
    assert task.gold_tracker(video).tolist() == [3 * 6 + 5, 3 * 6 + 3, 3 * 6 + 3]


def test_blinking_class_metrics_split_where_from_which_colour():
    import torch

    from slotssm.tasks.blinking_balls import class_metrics

    palette = torch.rand(7, 3)
    target = torch.tensor([[[0, 0, 2, 2], [0, 3, 3, 0]]])  # (1, 2, 4): four ball pixels
    pred = torch.tensor([[[0, 2, 2, 4], [0, 3, 0, 0]]])  # balls found at 3 of 4, plus 1 false; 2 colours right
    colour = torch.tensor([[[1, 2, 2, 5], [1, 3, 3, 1]]])  # colour if it were a ball: right at 3 of 4 ball pixels
    m = class_metrics(pred, target, palette, colour)
    assert m["pixel_acc"] == pytest.approx(5 / 8)
    assert m["ball_acc"] == pytest.approx(2 / 4)
    assert m["ball_iou"] == pytest.approx(3 / 5)
    assert m["colour_acc"] == pytest.approx(3 / 4)
    assert "colour_acc" not in class_metrics(pred, target, palette)


def test_blinking_sub_patch_tokens_and_finer_decoder(tmp_path):
    """App. C.3: each step's patch is cut into sub-patches (several tokens per step) with in-frame and frame-index
    embeddings; the decoder has its own patch side."""
    from slotssm.patches import patchify
    from slotssm.tasks.blinking_balls import PatchSequenceEmbedding

    emb = PatchSequenceEmbedding(8, 16, 12, subpatch=4, max_frames=3)
    frames = torch.randint(0, 256, (2, 3, 16, 16, 3), dtype=torch.uint8)
    with torch.no_grad():
        x = emb(frames)
        assert x.shape == (2, 3 * 4, 4, 12)  # L = T * M steps, 4 sub-patch tokens each
        step, sub = 6, 3  # frame 1, patch 2 (top-right... row 1, col 0), sub-patch bottom-right
        t, m = divmod(step, 4)
        r, c = divmod(m, 2)
        pix = frames[0, t, r * 8 + 4: r * 8 + 8, c * 8 + 4: c * 8 + 8].float().reshape(-1) / 255.0
        expected = emb.proj(pix) + emb.pos[m, sub] + emb.pos_time[t]
        torch.testing.assert_close(x[0, step, sub], expected)
        # the same pixels with subpatch = patch are one token: the patch itself
        whole = PatchSequenceEmbedding(8, 16, 12, max_frames=3)
        assert whole(frames).shape == (2, 12, 1, 12)
        seq = patchify(frames.float() / 255.0, 8, channels_last=True).flatten(1, 2)  # (B, T*M, p*p*3)
        torch.testing.assert_close(whole.proj(seq)[0, step], whole(frames)[0, step, 0] - whole.pos[m, 0]
                                   - whole.pos_time[t])
        # token_mlp: the same sum, then the MLP, token by token
        emb_mlp = PatchSequenceEmbedding(8, 16, 12, subpatch=4, max_frames=3, mlp=True)
        plain = emb_mlp.proj(pix) + emb_mlp.pos[m, sub] + emb_mlp.pos_time[t]
        torch.testing.assert_close(emb_mlp(frames)[0, step, sub], emb_mlp.mlp(plain))
    task_cls = get_task("blinking_balls")
    cfg = apply_overrides(task_cls.default_config("tiny", "slotssm"), ["data.subpatch=4", "data.decoder_patch=4"])
    task = task_cls(cfg, tmp_path)
    model = task.build_model()
    train, _ = task.datasets()
    batch = task.collate([train[i] for i in range(2)])
    assert model.head.num_patches == 16  # (16 / 4)^2 decoder queries
    loss, _ = task.loss(model, batch)
    loss.backward()
    assert torch.isfinite(loss) and model.encoder.proj.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="subpatch"):
        apply_overrides(cfg, ["data.subpatch=3"])


@pytest.mark.parametrize("grad", [False, True])
def test_video_prediction_trains_on_its_own_predictions(tmp_path, grad):
    task_cls = get_task("video_prediction")
    cfg = apply_overrides(task_cls.default_config("tiny", "slotssm"),
                          ["data.feedback_passes=2", f"data.feedback_grad={str(grad).lower()}"])
    task = task_cls(cfg, tmp_path)
    model = task.build_model()
    train, _ = task.datasets()
    from slotssm.tasks.model import to_float_frames

    frames = to_float_frames(task.collate([train[i] for i in range(2)])["frames"])
    inputs = task._feedback_inputs(model, frames)
    c = cfg.data.context
    assert inputs.shape == frames[:, :-1].shape and torch.equal(inputs[:, :c], frames[:, :c])  # context stays true
    assert not torch.allclose(inputs[:, c:], frames[:, c:-1])  # the rest are predictions
    assert inputs.requires_grad == grad
    loss, _ = task.loss(model, task.collate([train[i] for i in range(2)]))
    loss.backward()
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="feedback_passes"):
        apply_overrides(cfg, ["data.train_frames=4"])  # context 3 + 1: nothing to feed back


@pytest.mark.parametrize("task_name", ["blinking_balls", "video_prediction"])
def test_decoders_start_at_the_class_prior(tmp_path, task_name):
    """A fresh model predicts the background prior everywhere, not a 50/50 guess (which cost the first hundreds of
    steps, with the slots collapsing meanwhile)."""
    task_cls = get_task(task_name)
    task = task_cls(task_cls.default_config("tiny", "slotssm"), tmp_path)
    model = task.build_model()
    bias = model.head.head.bias.detach()
    if task_name == "video_prediction":
        assert torch.allclose(torch.sigmoid(bias), torch.full_like(bias, torch.sigmoid(bias[0]).item()))
        assert 0.01 < torch.sigmoid(bias[0]).item() < 0.3  # the balls' expected area, not 0.5
    else:
        prior = bias.view(-1, 7).softmax(-1)
        assert torch.allclose(prior, prior[:1].expand_as(prior))
        assert 0.6 < prior[0, 0].item() < 0.99 and torch.allclose(prior[0, 1:], prior[0, 1:2].expand(6))


def test_object_centric_probes_need_enough_objects(data_dir):
    """The attribute probes are scored only on >= MIN_PROBE_OBJECTS matched objects (27 scored objects moved the
    probes of one checkpoint by +-0.07); the count is reported either way."""
    import torch

    from slotssm.tasks.object_centric import MIN_PROBE_OBJECTS

    torch.manual_seed(0)
    few = make("object_centric", data_dir)
    model = few.build_model().eval()
    out = few.evaluate(model, few.datasets()[1], batch_size=8, device="cpu")
    assert out["probe_objects"] < MIN_PROBE_OBJECTS and "probe_shape_acc" not in out
    many = make("object_centric", data_dir, num_val=64, min_objects=2, max_objects=2)
    out = many.evaluate(model, many.datasets()[1], batch_size=32, device="cpu")
    assert out["probe_objects"] >= MIN_PROBE_OBJECTS
    for key in ("probe_shape_acc", "probe_color_acc"):
        assert 0 <= out[key] <= 1
    assert np.isfinite(out["probe_position_r2"])


def test_video_prediction_evaluates_on_videos_shorter_than_the_rollout(data_dir):
    """`slotssm eval --split train`: training videos have train_frames < context + rollout; the rollout runs over
    the frames past the context; with none past it the error names the context."""
    import torch

    task = make("video_prediction", data_dir, train_frames=5)  # context 3, rollout 3: 2 steps past the context
    torch.manual_seed(0)
    model = task.build_model().eval()
    train, val = task.datasets()
    short = task.evaluate(model, train, batch_size=4, device="cpu")
    assert "mse_step_2" in short and "mse_step_3" not in short
    assert "mse_step_3" in task.evaluate(model, val, batch_size=4, device="cpu")
    none_past = make("video_prediction", data_dir, train_frames=3)
    with pytest.raises(ValueError, match="data.context"):
        none_past.evaluate(model, none_past.datasets()[0], batch_size=4, device="cpu")


def test_object_centric_object_sizes_reach_the_generator(data_dir):
    """data.object_sizes sets the generated objects' sizes: larger fractions, more object pixels; bad values name it."""
    def foreground(**sizes):
        _, val = make("object_centric", data_dir, **sizes).datasets()
        return float(np.mean([(np.asarray(val[i]["segmentations"]) > 0).mean() for i in range(len(val))]))

    small, large = foreground(), foreground(object_sizes=(0.2,))
    assert large > 2 * small > 0
    for bad in ((), (0.0,), (0.5,)):
        with pytest.raises(ValueError, match="object_sizes"):
            make("object_centric", data_dir, object_sizes=bad)


def test_blinking_ball_weight_weighs_the_ball_pixels(data_dir):
    import torch
    import torch.nn.functional as F

    plain = make("blinking_balls", data_dir)
    heavy = make("blinking_balls", data_dir, ball_weight=4.0)
    torch.manual_seed(0)
    model = plain.build_model()
    batch = plain.collate([plain.datasets()[0][i] for i in range(2)])
    target = batch["target_classes"].long()
    with torch.no_grad():
        nll = F.cross_entropy(plain.logits(model, batch["frames"]), target, reduction="none")  # (B, H, W)
    w = torch.where(target > 0, 4.0, 1.0)
    assert plain.loss(model, batch)[0].item() == pytest.approx(float(nll.mean()), rel=1e-5)
    assert heavy.loss(model, batch)[0].item() == pytest.approx(float((nll * w).sum() / w.sum()), rel=1e-5)
    with pytest.raises(ValueError, match="ball_weight"):
        make("blinking_balls", data_dir, ball_weight=0.0)


def test_blinking_curriculum_weights_load_into_the_longer_context(data_dir):
    """`max_frames` sizes the frame-index table for a curriculum's longest context: a run on 1 context frame has
    the parameters of the 3-frame run, so its weights load into it strictly, and the 3-frame run trains from them."""
    short = make("blinking_balls", data_dir, num_frames=1, max_frames=3)
    long = make("blinking_balls", data_dir)  # tiny: num_frames=3, its own table of 3 rows
    torch.manual_seed(0)
    trained = short.build_model()
    batch = short.collate([short.datasets()[0][i] for i in range(2)])
    assert batch["frames"].shape[1] == 1
    short.loss(trained, batch)[0].backward()
    model = long.build_model()
    model.load_state_dict(trained.state_dict(), strict=True)
    batch = long.collate([long.datasets()[0][i] for i in range(2)])
    assert batch["frames"].shape[1] == 3 and torch.isfinite(long.loss(model, batch)[0])
    # without it the tables differ (1 row against 3), so the curriculum could not carry the weights over
    with pytest.raises(RuntimeError, match="pos_time"):
        model.load_state_dict(make("blinking_balls", data_dir, num_frames=1).build_model().state_dict())
    with pytest.raises(ValueError, match="max_frames"):
        make("blinking_balls", data_dir, max_frames=2)
