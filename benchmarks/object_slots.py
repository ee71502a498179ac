"""Where an object-centric run loses FG-ARI: objects left in the background's slot, split, or merged.

For an object_centric run, on its held-out videos, each pixel goes to the slot with the largest alpha mask (as
the task's FG-ARI does). Per video, the background slots are the slots (owning >= 10 pixels) of which most pixels
are background; every other used slot is an object slot. Per true object, its main slot is the slot holding most
of its pixels. This prints

- FG-ARI (mean, and the share of videos under 0.3);
- per object: the share of its pixels in its main slot, and how often its main slot is a background slot (the
  object is not segmented out), with the mean size of the objects left so and of the others;
- per object slot: how often it is the main slot of two or more objects (merged objects);
- by the number of objects in the video: slots used, background slots, objects left in a background slot.

    python benchmarks/object_slots.py RUN_DIR [--data-dir DIR] [--batch 16]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from slotssm import metrics
from slotssm.tasks.evaluation import batch_iter


def video_rows(true: np.ndarray, pred: np.ndarray, min_pixels: int = 10) -> tuple[list, tuple]:
    """One video's true ids and slot ids (T, H, W) -> per-object rows (main share, in a background slot, pixels) and
    (objects, slots used, background slots, objects in a background slot, object slots holding 2+ objects)."""
    t, p = true.ravel(), pred.ravel()
    used = [k for k in np.unique(p) if (p == k).sum() >= min_pixels]
    background = {k for k in used if (t[p == k] == 0).mean() > 0.5}
    objects, owners = [], {}
    for o in np.unique(t[t > 0]):
        counts = np.bincount(p[t == o])
        main = int(counts.argmax())
        objects.append((counts[main] / counts.sum(), main in background, counts.sum() / true.shape[0]))
        owners.setdefault(main, 0)
        owners[main] += 1
    merged = sum(1 for k, n in owners.items() if k not in background and n > 1)
    in_background = sum(1 for _, bg, _ in objects if bg)
    return objects, (len(objects), len(used), len(background), in_background, merged)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--data-dir", default=None, help="where the run's data is (default: the run's own)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from slotssm.train.checkpoint import load_model_from_run

    try:
        task, model, cfg = load_model_from_run(args.run, "cpu", data_dir=args.data_dir, task="object_centric")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    fg, objects, videos = [], [], []
    with torch.no_grad():
        for batch in batch_iter(task.datasets()[1], args.batch, task.collate):
            _, masks, _ = task.forward(model, batch["video"])
            pred = masks[:, :, :, 0].argmax(2).numpy()  # (B, T, H, W)
            true = batch["segmentations"].numpy()
            fg.append(metrics.ari(true, pred, ignore_background=True))
            for b in range(len(true)):
                rows, video = video_rows(true[b], pred[b])
                objects += rows
                videos.append(video)
    fg, obj, vid = np.concatenate(fg), np.array(objects, dtype=float), np.array(videos)
    print(f"{args.run}: FG-ARI {np.nanmean(fg):.3f} ({(fg < 0.3).mean():.2f} of the videos under 0.3); "
          f"{len(obj)} objects: {obj[:, 0].mean():.3f} of an object's pixels in its main slot, "
          f"{obj[:, 1].mean():.3f} of the objects left in a background slot; object slots holding 2+ objects per "
          f"video {vid[:, 4].mean():.2f}")
    left = obj[:, 1] > 0
    print(f"  pixels per frame of the objects left in a background slot {obj[left, 2].mean():.1f}, of the others "
          f"{obj[~left, 2].mean():.1f}")
    for n in np.unique(vid[:, 0]):
        r = vid[vid[:, 0] == n]
        print(f"  {n} objects ({len(r)} videos): slots used {r[:, 1].mean():.2f}, background slots "
              f"{r[:, 2].mean():.2f}, objects left in a background slot {r[:, 3].mean():.2f}")


if __name__ == "__main__":
    main()
