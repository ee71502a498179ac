"""Where a Blinking Color Balls model loses the colour it must remember: linear probes along the sequence.

For a one-ball run (`data.num_objects=1`: the ball is painted in every frame, and under the "earliest" rule its
target colour is the one it has in frame 0), fit a multinomial logistic probe of the target colour on

- the input tokens of the frame-0 step that shows the most ball pixels (is the colour in the input at all?),
- the slots at that step, one step and four steps later (does the model read it, and keep it?),
- the slots at the end of each frame (how long does it last?),

fitted on `--fit` training videos and scored on the held-out split. The answer a probe must beat is the most
frequent colour of the held-out videos.

    python benchmarks/colour_memory.py RUN_DIR [--fit 600]

Prints one line per probe, for three ridge penalties (a probe on 384 features from 600 videos can overfit).
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from slotssm.metrics import linear_probe_accuracy


def probe_accuracy(x_fit, y_fit, x_test, y_test, l2: float) -> float:
    """Held-out accuracy of a linear probe fitted on (x_fit, y_fit) and scored on (x_test, y_test)."""
    return linear_probe_accuracy(np.concatenate([x_fit, x_test]), np.concatenate([y_fit, y_test]), l2=l2,
                                 fit_rows=len(x_fit))


@torch.no_grad()
def collect(task, model, dataset, n: int) -> dict[str, np.ndarray]:
    """Features of the first n videos: name -> (n, F), and the target colour "y" (n,)."""
    from slotssm.patches import patchify

    d = task.config.data
    m = (d.image_size // d.patch) ** 2  # steps per frame
    out: dict[str, list] = {}
    for i in range(0, min(n, len(dataset)), 16):
        batch = task.collate([dataset[j] for j in range(i, min(n, len(dataset), i + 16))])
        frames = batch["frames"]  # (B, T, H, W, 3) uint8
        tokens = model.encoder(frames)  # (B, L, S, D_in)
        slots = model.seq(tokens).slots  # (B, L, K, D)
        pix = patchify(frames[:, :1].float(), d.patch, channels_last=True).flatten(1, 2)  # (B, M, p*p*3)
        lit = pix.unflatten(-1, (-1, 3)).amax(-1) > 127  # (B, M, p*p): ball pixels of each frame-0 patch
        seen = lit.float().sum(-1).argmax(1)  # (B,) the frame-0 step with the most ball pixels
        rows = torch.arange(len(seen))
        last = slots.shape[1] - 1
        feats = {"input tokens at the step that shows the ball": tokens[rows, seen],
                 "slots at that step": slots[rows, seen],
                 "slots one step later": slots[rows, (seen + 1).clamp(max=last)],
                 "slots four steps later": slots[rows, (seen + 4).clamp(max=last)]}
        feats |= {f"slots at the end of frame {t}": slots[:, m * (t + 1) - 1] for t in range(d.num_frames)}
        for k, v in feats.items():
            out.setdefault(k, []).append(v.flatten(1).numpy())
        out.setdefault("y", []).append(batch["target_classes"].long().flatten(1).amax(1).numpy())
    return {k: np.concatenate(v) for k, v in out.items()}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("run", help="a blinking_balls run directory with data.num_objects=1")
    p.add_argument("--fit", type=int, default=600, help="training videos the probes are fitted on")
    p.add_argument("--data-dir", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    from slotssm.train.checkpoint import load_model_from_run

    kw = {"data_dir": args.data_dir} if args.data_dir else {}
    task, model, cfg = load_model_from_run(args.run, "cpu", **kw)
    if cfg.task != "blinking_balls" or cfg.data.num_objects != 1 or cfg.data.rule != "earliest":
        raise SystemExit("run: expected a blinking_balls run with data.num_objects=1 and rule 'earliest'")
    model.eval()
    train, val = task.datasets()
    fit, test = collect(task, model, train, args.fit), collect(task, model, val, len(val))
    print(f"{args.run}: {len(fit['y'])} videos fitted, {len(test['y'])} scored; most frequent colour "
          f"{np.bincount(test['y']).max() / len(test['y']):.3f}")
    for name in (k for k in fit if k != "y"):
        accs = [probe_accuracy(fit[name], fit["y"], test[name], test["y"], l2) for l2 in (1e-3, 1e-1, 10.0)]
        print(f"  {name:48s} " + " / ".join(f"{a:.3f}" for a in accs) + "  (l2 1e-3 / 1e-1 / 10)")


if __name__ == "__main__":
    main()
