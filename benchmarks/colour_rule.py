"""Which colour does a Blinking Color Balls model give each ball: the rule's, the last one shown, or white?

For a blinking_balls run, on its held-out videos (regenerated from the run's settings, with the blink log), this
takes the model's colour guess on every true ball pixel of the target frame (the argmax over the six ball classes,
as `colour_acc` does) and prints, for the balls blinked 0 times, once, and more than once:

- how often the guess is the rule's colour (the target: `colour_acc` restricted to these balls);
- how often it is the last colour the ball was shown in (a memory without the rule's "keep the first" part);
- how often it is white.

A ball blinked once has the same rule and last colour; one blinked more often tells a model that keeps the first
colour (the "earliest" rule) from one that keeps the latest.

    python benchmarks/colour_rule.py RUN_DIR [--data-dir DIR] [--batch 32]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from slotssm.data.blinking_balls import _render_classes
from slotssm.data.registry import generate
from slotssm.tasks.datasets import VAL_SEED_OFFSET


def last_colours(picked_ball: np.ndarray, picked_color: np.ndarray, num_balls: int) -> np.ndarray:
    """Blink log (n, T) x2 -> (n, K): the last colour each ball was shown in, 1 (white) if never."""
    n, t = picked_ball.shape
    out = np.ones((n, num_balls), dtype=np.int64)
    for step in range(t):
        out[np.arange(n), picked_ball[:, step]] = picked_color[:, step]
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--data-dir", default=None, help="where the run's data is (default: the run's own)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from slotssm.train.checkpoint import load_model_from_run

    try:
        task, model, cfg = load_model_from_run(args.run, "cpu", data_dir=args.data_dir, task="blinking_balls")
    except ValueError as err:
        raise SystemExit(str(err)) from None
    d = cfg.data
    raw = generate("blinking_balls", d.num_val, d.seed + VAL_SEED_OFFSET, num_frames=d.num_frames,
                   image_size=d.image_size, num_objects=d.num_objects, patch=d.patch, rule=d.rule)
    val = task.datasets()[1]
    if not np.array_equal(raw["target_classes"], np.stack([np.asarray(val[i]["target_classes"])
                                                           for i in range(len(val))])):
        raise SystemExit("the regenerated held-out videos differ from the run's: cannot pair them with the log")
    k, t = d.num_objects, d.num_frames
    pos = raw["positions"][:, t:t + 1]  # (n, 1, K, 2): the target frame
    ids = _render_classes(pos, raw["radii"], np.broadcast_to(np.arange(1, k + 1, dtype=np.uint8), (len(pos), 1, k)),
                          d.image_size)[:, 0]  # (n, H, W): 1 + the ball on top, 0 background
    rule = raw["target_colors"]  # (n, K)
    last = last_colours(raw["picked_ball"], raw["picked_color"], k)
    blinks = np.stack([(raw["picked_ball"] == b).sum(1) for b in range(k)], 1)  # (n, K)
    guess = []
    with torch.no_grad():
        for s in range(0, len(val), args.batch):
            frames = torch.from_numpy(np.ascontiguousarray(raw["frames"][s:s + args.batch]))
            logits = task.logits(model, frames)
            guess.append((logits[:, 1:].argmax(1) + 1).numpy())
    guess = np.concatenate(guess)  # (n, H, W) in 1..6
    rows = {"0 blinks": [], "1 blink": [], "2+ blinks": []}
    once = {f: [] for f in range(t)}  # the balls blinked once, by the frame of that blink
    for v in range(len(val)):
        for b in range(k):
            pix = ids[v] == b + 1
            if not pix.any():
                continue
            name = "0 blinks" if blinks[v, b] == 0 else "1 blink" if blinks[v, b] == 1 else "2+ blinks"
            g = guess[v][pix]
            rows[name].append(((g == rule[v, b]).mean(), (g == last[v, b]).mean(), (g == 1).mean(), pix.sum()))
            if blinks[v, b] == 1:
                once[int(np.argmax(raw["picked_ball"][v] == b))].append(((g == rule[v, b]).mean(), pix.sum()))
    print(f"{args.run}: L = {d.seq_len}, rule {d.rule}, {len(val)} held-out videos; share of the balls' pixels "
          f"guessed as")
    for name, r in rows.items():
        if not r:
            continue
        a = np.array(r)
        w = a[:, 3] / a[:, 3].sum()
        print(f"  {name:9s} ({len(a)} balls): the rule's colour {w @ a[:, 0]:.3f}, "
              f"the last colour shown {w @ a[:, 1]:.3f}, white {w @ a[:, 2]:.3f}")
    print(f"  blinked once, by the frame of the blink (of {t}): the rule's colour " + ", ".join(
        f"{f}: {np.average([r[0] for r in once[f]], weights=[r[1] for r in once[f]]):.2f}" for f in once if once[f]))


if __name__ == "__main__":
    main()
