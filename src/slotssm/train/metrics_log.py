"""Training logs: `metrics.jsonl` (one JSON object per line) and TensorBoard scalars, written by rank 0 only.

Each line has `step` and `split` ("train" or "val"); train lines carry loss, lr, grad_norm, it/s and the task's own
logs, val lines the task's evaluation metrics. A resumed run first drops the lines (and TensorBoard events) after
the checkpoint it resumes from, so the files read as one uninterrupted run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

METRICS_FILE, TB_DIR = "metrics.jsonl", "tb"


def read_metrics(path) -> list[dict]:
    """All records of a metrics.jsonl file (a torn last line from a crash is skipped)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


class MetricsLogger:
    """Append-only writer of metrics.jsonl + TensorBoard; every method is a no-op when `enabled` is False."""

    def __init__(self, run_dir, *, enabled: bool, resume_step: int | None = None):
        self.enabled = enabled
        self.path = Path(run_dir) / METRICS_FILE
        self._writer = None
        if not enabled:
            return
        if resume_step is not None and self.path.exists():
            kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= resume_step]
            self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        from torch.utils.tensorboard import SummaryWriter  # imported here: it is slow and rank 0 alone needs it

        purge = resume_step + 1 if resume_step is not None else None
        self._writer = SummaryWriter(log_dir=str(Path(run_dir) / TB_DIR), purge_step=purge)

    def log(self, step: int, split: str, values: dict[str, float]) -> None:
        """Record `values` (floats) at `step` under `split`."""
        if not self.enabled:
            return
        record = {"step": step, "split": split, "time": time.time()}
        record.update({k: (float(v) if math.isfinite(float(v)) else str(float(v))) for k, v in values.items()})
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        for key, value in values.items():
            self._writer.add_scalar(f"{split}/{key}", float(value), global_step=step)
        self._writer.flush()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
