"""Launched by test_train_ddp.py under torchrun: trains the toy task, then writes this rank's weight digest.

Usage: ddp_worker.py OUT_DIR [straight|crash|resume]; "crash" fails at the 5th step, "resume" continues a run.
"""

import os
import sys
from pathlib import Path

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import toytask  # noqa: E402  (registers the "toy" task)

from slotssm.train.config import apply_overrides  # noqa: E402
from slotssm.train.trainer import train  # noqa: E402

if __name__ == "__main__":
    out_dir, mode = Path(sys.argv[1]), (sys.argv[2] if len(sys.argv) > 2 else "straight")
    config = toytask.ToyTask.default_config("tiny", "mlp")
    overrides = ["train.steps=6", "train.ckpt_every=3", "train.log_every=2", "train.batch_size=4", "train.device=cpu"]
    config = apply_overrides(config, overrides)
    toytask.ToyTask.crash_at_call = 5 if mode == "crash" else 0
    train(config, out_dir, data_dir=out_dir.parent / "data", progress=False, resume=mode == "resume")
    rank = int(os.environ["RANK"])
    (out_dir / f"weights-rank{rank}.sha256").write_text(toytask.weights_digest(toytask.ToyTask.last_model))
