"""Does a snitch pre-training reconstruct the snitch? Reconstruction error on the snitch's pixels, and its slot.

For a snitch_localization run pre-trained on reconstruction (`data.objective=reconstruct`), on the held-out videos
and the frames a model sees in evaluation (every `stride`-th), this prints

- how often the snitch is in view, and how many pixels it covers then;
- the reconstruction's squared error on the snitch's (gold) pixels and on every other pixel, next to the error on
  the snitch's pixels of the frame with the snitch painted over by its neighbours' colour: a reconstruction whose
  error on the snitch is near that one does not draw the snitch;
- the slot whose alpha mask covers the snitch's pixels most: its share of their mask, and the snitch's part of
  that slot's whole mask (a slot of its own would be near 1; a slot for the background or a cone near 0).

    python benchmarks/snitch_pixels.py RUN_DIR [--data-dir DIR]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from slotssm.tasks.snitch_localization import gold_pixels  # the snitch's pixels, as the gold tracker finds them


def snitch_painted_over(frames: Tensor, gold: Tensor) -> Tensor:
    """frames (N, 3, H, W) in [0, 1], gold (N, H, W) bool -> the frames with each gold pixel replaced by the mean of
    the non-gold pixels in its 5x5 neighbourhood (the colour the snitch hides; unchanged where none is non-gold)."""
    keep = (~gold).float()[:, None]  # (N, 1, H, W)
    box = torch.ones(1, 1, 5, 5)
    weight = F.conv2d(keep, box, padding=2)  # (N, 1, H, W)
    colour = F.conv2d((frames * keep).flatten(0, 1)[:, None], box, padding=2).view_as(frames)
    filled = colour / weight.clamp_min(1e-8)
    return torch.where(gold[:, None] & (weight > 0), filled, frames)


@torch.no_grad()
def measure(task, model, dataset, batch_size: int = 16) -> dict[str, float]:
    from slotssm.tasks.evaluation import batch_iter

    d = task.config.data
    err_gold, err_other, err_hidden, share, part = [], [], [], [], []
    frames_seen = frames_all = gold_count = 0
    for batch in batch_iter(dataset, batch_size, task.collate):
        video = batch["video"]
        frames = task.sample_frames(video, train=False)  # (B, T, 3, H, W)
        recon, masks, _ = model.head(model.seq(model.encoder(frames)).slots)  # masks (B, T, K, 1, h, w)
        gold = gold_pixels(video[:, :: d.stride])  # (B, T, H, W)
        err = ((recon - frames) ** 2).mean(2)  # (B, T, H, W)
        hidden = snitch_painted_over(frames.flatten(0, 1), gold.flatten(0, 1)).view_as(frames)
        err_gold.append(err[gold])
        err_other.append(err[~gold])
        err_hidden.append(((hidden - frames) ** 2).mean(2)[gold])
        m = masks[:, :, :, 0].flatten(0, 1)  # (B*T, K, h, w)
        if m.shape[-2:] != gold.shape[-2:]:
            m = F.interpolate(m, size=gold.shape[-2:], mode="bilinear", align_corners=False)
        g = gold.flatten(0, 1)  # (B*T, H, W)
        frames_all += len(g)
        for mk, gk in zip(m, g):
            if not gk.any():
                continue
            frames_seen += 1
            gold_count += int(gk.sum())
            on_gold = mk[:, gk].mean(1)  # (K,) each slot's mean mask over the snitch
            owner = int(on_gold.argmax())
            share.append(float(on_gold[owner]))
            part.append(float(mk[owner][gk].sum() / mk[owner].sum().clamp_min(1e-8)))
    cat = lambda xs: torch.cat(xs).double()  # noqa: E731
    return {"frames": frames_all, "in_view": frames_seen / max(frames_all, 1),
            "gold_pixels": gold_count / max(frames_seen, 1),
            "mse_gold": float(cat(err_gold).mean()), "mse_other": float(cat(err_other).mean()),
            "mse_gold_painted_over": float(cat(err_hidden).mean()),
            "owner_share": float(np.mean(share)) if share else float("nan"),
            "owner_snitch_part": float(np.mean(part)) if part else float("nan")}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a snitch_localization run directory with data.objective=reconstruct")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from slotssm.train.checkpoint import load_model_from_run

    kw = {"data_dir": args.data_dir} if args.data_dir else {}
    task, model, cfg = load_model_from_run(args.run, "cpu", **kw)
    if cfg.task != "snitch_localization" or cfg.data.objective != "reconstruct":
        raise SystemExit("run: expected a snitch_localization run with data.objective=reconstruct")
    r = measure(task, model.eval(), task.datasets()[1])
    print(f"{args.run}: {r['frames']} held-out frames, snitch in view in {r['in_view']:.3f} of them, "
          f"{r['gold_pixels']:.2f} pixels then")
    print(f"  reconstruction MSE on the snitch's pixels {r['mse_gold']:.4f}, on the other pixels {r['mse_other']:.4f}; "
          f"the snitch painted over: {r['mse_gold_painted_over']:.4f} on its pixels")
    print(f"  the slot covering the snitch most: {r['owner_share']:.3f} of the snitch's mask, "
          f"the snitch {r['owner_snitch_part']:.4f} of that slot's mask")


if __name__ == "__main__":
    main()
