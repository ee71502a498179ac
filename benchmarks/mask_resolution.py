"""How much does the decoder's map size cap FG-ARI? The ground-truth masks, taken down to the decoder's side and
bilinearly upsampled back, scored as if a model had predicted them.

A spatial broadcast decoder that decodes at side r < image_size and upsamples its alpha logits bilinearly (the
object-centric `small` preset: r = 16 on 32x32 frames) cannot draw a mask sharper than that. This prints, for each
side r, the FG-ARI, ARI and mIoU of the best such answer we know: the one-hot ground truth area-averaged to r x r,
its log bilinearly upsampled to the image (as the decoder upsamples its logits), then the argmax per pixel. It also
prints the objects' share of the pixels. On the held-out split of the task's preset:

    python benchmarks/mask_resolution.py [--preset small] [--sides 8 16 32] [--data-dir DIR] [--set KEY=VALUE ...]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from slotssm import metrics


def coarse_masks(seg: torch.Tensor, side: int) -> torch.Tensor:
    """Integer ids (B, T, H, W) -> the ids a decoder at side x side would give at best: one-hot, area-averaged to
    the side, log-probabilities bilinearly upsampled back to H x W, argmax. (B, T, H, W) int64."""
    b, t, h, w = seg.shape
    if side == h:
        return seg.long()
    n = int(seg.max()) + 1
    onehot = F.one_hot(seg.long(), n).permute(0, 1, 4, 2, 3).float().reshape(b * t, n, h, w)
    low = F.interpolate(onehot, size=(side, side), mode="area")
    up = F.interpolate(low.clamp_min(1e-4).log(), size=(h, w), mode="bilinear", align_corners=False)
    return up.argmax(1).reshape(b, t, h, w)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="small")
    p.add_argument("--sides", type=int, nargs="+", default=[8, 16, 32])
    p.add_argument("--data-dir", default="data")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="config overrides of the preset, as `slotssm train --set` (say data.object_sizes=[0.1,0.15])")
    args = p.parse_args(argv)
    from slotssm.tasks import get_task
    from slotssm.train.config import apply_overrides

    cls = get_task("object_centric")
    task = cls(apply_overrides(cls.default_config(args.preset, "oc_slotssm"), args.overrides), args.data_dir)
    val = task.datasets()[1]
    seg = torch.from_numpy(np.stack([np.asarray(val[i]["segmentations"]) for i in range(len(val))]))
    seg = seg.squeeze(-1) if seg.dim() == 5 else seg  # (B, T, H, W)
    size = seg.shape[-1]
    print(f"object_centric/{args.preset} {' '.join(args.overrides)}: {len(val)} held-out videos of {seg.shape[1]} frames at {size}x{size}, "
          f"objects cover {(seg > 0).float().mean().item():.3f} of the pixels")
    for side in args.sides:
        if side > size or size % side:
            raise SystemExit(f"--sides: expected divisors of the image side {size}, got {side}")
        pred = coarse_masks(seg, side).numpy()
        true = seg.numpy()
        print(f"  ground truth through a {side}x{side} map: FG-ARI {np.nanmean(metrics.ari(true, pred, True)):.3f}, "
              f"ARI {np.mean(metrics.ari(true, pred)):.3f}, mIoU {np.mean(metrics.miou(true, pred)):.3f}")


if __name__ == "__main__":
    main()
