"""Where a video prediction run's rollout error comes from: videos with and without a ball-ball collision in it.

For a video_prediction run on generated bouncing balls, on `--videos` held-out videos of its data settings (the
task's validation seed; more videos than the task's own `num_val`, for groups large enough to compare), this rolls
the model out as the task's evaluation does (`data.context` true frames, then `data.rollout` steps on its own
predictions) and splits the videos by what happens in the rollout's frames, from the simulator's positions and
radii: a ball-ball contact (centres closer than the radii's sum + `--margin` pixels), else a wall bounce, else
neither. Per group it prints the number of videos, the rollout MSE, the per-pixel mean image's MSE on the same
videos (the best model-free answer of the task's page) and their ratio, and the MSE at a few rollout steps; then,
at each of a few rollout steps, the MSE of the videos still in free flight, past a wall bounce, past a contact;
and how much of the balls' brightness the predictions keep (fading against drifting).

    python benchmarks/rollout_events.py RUN_DIR [--data-dir DIR] [--videos 256] [--margin 0.5]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def contacts(positions: np.ndarray, radii: np.ndarray, image_size: int, margin: float) -> tuple[np.ndarray, ...]:
    """positions (n, T, K, 2), radii (n, K) -> per video and frame: a ball-ball contact (n, T) and a wall contact
    (n, T), both bool."""
    d = np.linalg.norm(positions[:, :, :, None] - positions[:, :, None, :], axis=-1)  # (n, T, K, K)
    reach = radii[:, None, :, None] + radii[:, None, None, :] + margin
    k = positions.shape[2]
    pair = (d <= reach) & ~np.eye(k, dtype=bool)
    r = radii[:, None, :, None]
    wall = (positions - r <= margin) | (positions + r >= image_size - margin)  # (n, T, K, 2)
    return pair.any(axis=(2, 3)), wall.any(axis=(2, 3))


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--data-dir", default=None, help="where the run's data is (default: the run's own)")
    p.add_argument("--videos", type=int, default=256)
    p.add_argument("--margin", type=float, default=0.5, help="pixels added to the contact distance")
    p.add_argument("--batch", type=int, default=32)
    args = p.parse_args(argv)
    if args.videos < 1:
        raise SystemExit(f"--videos: expected >= 1, got {args.videos}")
    torch.set_num_threads(1)
    from slotssm.tasks.datasets import VAL_SEED_OFFSET, generated_split
    from slotssm.tasks.model import to_float_frames
    from slotssm.train.checkpoint import load_model_from_run

    try:
        task, model, cfg = load_model_from_run(args.run, "cpu", data_dir=args.data_dir, task="video_prediction")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    d = cfg.data
    if d.source != "generated" or d.root:
        raise SystemExit("run: needs a run on generated bouncing balls (positions come from the simulator)")
    frames_n = d.context + d.rollout
    ds = generated_split(task.data_dir, "bouncing_balls",
                         dict(num_objects=d.num_objects, image_size=d.image_size, num_frames=frames_n),
                         args.videos, d.seed + VAL_SEED_OFFSET, keys=["frames", "positions", "radii"])
    raw = {key: np.stack([np.asarray(ds[j][key]) for j in range(len(ds))]) for key in ("frames", "positions", "radii")}
    sq, mass = [], []
    with torch.no_grad():
        for i in range(0, len(ds), args.batch):
            frames = to_float_frames(torch.from_numpy(raw["frames"][i:i + args.batch]))
            preds, _ = task.rollout(model, frames, d.context, d.rollout)
            target = frames[:, d.context:]
            sq.append(((preds - target) ** 2).mean(dim=(2, 3, 4)).numpy())  # (B, rollout)
            mass.append(torch.stack([preds.sum(dim=(2, 3, 4)), target.sum(dim=(2, 3, 4))], -1).numpy())
    sq, mass = np.concatenate(sq), np.concatenate(mass)  # (n, rollout), (n, rollout, 2)
    video = raw["frames"].reshape(len(ds), frames_n, -1).astype(np.float32) / 255.0
    mean_image = video.mean(axis=(0, 1))  # the task's mean-image reference: over every frame of these videos
    ref = ((video[:, d.context:] - mean_image) ** 2).mean(-1)  # (n, rollout)
    pair, wall = contacts(raw["positions"][:, d.context - 1:], raw["radii"], d.image_size, args.margin)
    groups = {"all": np.ones(len(ds), bool), "ball-ball contact": pair.any(1),
              "wall bounce only": ~pair.any(1) & wall.any(1), "neither": ~pair.any(1) & ~wall.any(1)}
    steps = [s for s in (1, 5, 10, 20) if s <= d.rollout]
    print(f"{args.run}: {len(ds)} held-out videos, {d.num_objects} balls, rollout {d.rollout} steps after "
          f"{d.context} frames")
    print("| videos | n | rollout MSE | mean image | ratio | " + " | ".join(f"step {s}" for s in steps) + " |")
    print("|---" * (5 + len(steps)) + "|")
    for name, m in groups.items():
        if not m.any():
            print(f"| {name} | 0 | - | - | - |" + " - |" * len(steps))
            continue
        model_mse, ref_mse = sq[m].mean(), ref[m].mean()
        print(f"| {name} | {m.sum()} | {model_mse:.4f} | {ref_mse:.4f} | {model_mse / ref_mse:.2f}x | "
              + " | ".join(f"{sq[m, s - 1].mean():.4f}" for s in steps) + " |")
    kept = mass[:, :, 0].mean(0) / mass[:, :, 1].mean(0)
    print("predicted brightness / true brightness (below 1: the balls fade; near 1 with a high error: they drift): "
          + ", ".join(f"step {s} {kept[s - 1]:.2f}" for s in steps))
    # At the same rollout step: videos in free flight so far, against those past a wall bounce or a ball contact
    # (the contact flags start at the last context frame, so flag index s is rollout step s).
    seen_pair, seen_any = np.cumsum(pair, 1) > 0, np.cumsum(pair | wall, 1) > 0
    print("\nMSE at a rollout step, by what has happened up to it (videos in brackets; mean image after the slash)")
    print("| step | no contact yet | past a wall bounce, no ball contact | past a ball contact |")
    print("|---|---|---|---|")
    for s in [s for s in (3, 5, 10, 15, 20) if s <= d.rollout]:
        cells = []
        for m in (~seen_any[:, s], seen_any[:, s] & ~seen_pair[:, s], seen_pair[:, s]):
            cells.append(f"{sq[m, s - 1].mean():.4f} / {ref[m, s - 1].mean():.4f} ({m.sum()})" if m.any() else "-")
        print(f"| {s} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
