"""Helpers of the tasks' evaluation: in-order batches over a whole dataset, weighted means of per-batch metrics."""

from __future__ import annotations


def batch_iter(dataset, batch_size: int, collate):
    """Deterministic, in-order batches over a whole dataset (evaluation)."""
    for start in range(0, len(dataset), batch_size):
        yield collate([dataset[i] for i in range(start, min(len(dataset), start + batch_size))])


def mean_dict(rows: list[dict[str, float]], weights: list[int]) -> dict[str, float]:
    total = sum(weights)
    return {k: float(sum(r[k] * w for r, w in zip(rows, weights)) / total) for k in rows[0]}
