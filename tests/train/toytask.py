"""A tiny sequence-regression task registered as "toy": the trainer's tests run on it.

Legend: B batch, T time, D feature width. Targets are y_t = tanh(x_t W) for a fixed random W, so an MLP learns it
in a few dozen steps. Class attributes let tests inject a NaN loss or a crash at a given call of `loss`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from slotssm.tasks import Task, register_task
from slotssm.train.config import OptimConfig, RunConfig, TrainConfig


@dataclass(frozen=True)
class ToyDataConfig:
    n_train: int = 64
    n_val: int = 32
    seq_len: int = 4
    dim: int = 3
    seed: int = 0


@dataclass(frozen=True)
class ToyModelConfig:
    hidden: int = 16
    dropout: float = 0.1  # makes the run depend on torch's RNG, which resume must restore


class SimulatedCrash(RuntimeError):
    pass


class ToyDataset(Dataset):
    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y  # (N, T, D) each

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"x": self.x[i], "y": self.y[i]}


class ToyModel(nn.Module):
    def __init__(self, cfg: ToyModelConfig, dim: int):
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.net = nn.Sequential(nn.Linear(dim, cfg.hidden), nn.Tanh(), nn.Dropout(cfg.dropout), nn.Linear(cfg.hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))  # (B, T, D)


@register_task
class ToyTask(Task):
    name = "toy"
    models = ("mlp",)
    last_model: nn.Module | None = None  # the model built by the latest instance (read by the DDP worker)
    nan_at_call = 0  # > 0: the loss of that call (1-based, per instance) is NaN
    crash_at_call = 0  # > 0: that call raises SimulatedCrash

    @classmethod
    def default_config(cls, preset: str, model_name: str) -> RunConfig:
        cls.check_preset(preset)
        if model_name not in cls.models:
            raise ValueError(f"unknown model {model_name!r} for task 'toy'; choose one of {', '.join(cls.models)}")
        steps = {"tiny": 40, "small": 200, "paper": 1000}[preset]
        train = TrainConfig(
            steps=steps, batch_size=8, eval_batch_size=16, log_every=5, ckpt_every=10,
            optim=OptimConfig(lr=1e-2, warmup_steps=5),
        )  # fmt: skip
        return RunConfig("toy", model_name, preset, ToyDataConfig(), ToyModelConfig(), train)

    def __init__(self, config, data_dir):
        super().__init__(config, data_dir)
        self.calls = 0

    def build_model(self) -> nn.Module:
        model = ToyModel(self.config.model, self.config.data.dim)
        type(self).last_model = model
        return model

    def datasets(self):
        d = self.config.data
        rng = np.random.default_rng(d.seed)
        w = rng.normal(size=(d.dim, d.dim))
        x = rng.normal(size=(d.n_train + d.n_val, d.seq_len, d.dim))
        y = np.tanh(x @ w)
        x, y = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
        return ToyDataset(x[: d.n_train], y[: d.n_train]), ToyDataset(x[d.n_train :], y[d.n_train :])

    def loss(self, model, batch):
        self.calls += 1
        if self.calls == type(self).crash_at_call:
            raise SimulatedCrash(f"simulated crash at call {self.calls}")
        loss = torch.mean((model(batch["x"]) - batch["y"]) ** 2)
        if self.calls == type(self).nan_at_call:
            loss = loss * float("nan")
        return loss, {"mse": loss.detach().item()}

    def evaluate(self, model, dataset, *, batch_size, device):
        torch.rand(1)  # draws from the global generator, as a sampling evaluation would; must not shift training
        total, count = 0.0, 0
        for batch in DataLoader(dataset, batch_size=batch_size):
            pred = model(batch["x"].to(device))
            total += float(((pred - batch["y"].to(device)) ** 2).sum())
            count += batch["y"].numel()
        return {"mse": total / count}

    def visualise(self, model, dataset, out_dir: Path, *, device):
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        item = dataset[0]
        pred = model(item["x"][None].to(device))[0].detach().cpu()  # (T, D)
        fig, ax = plt.subplots(figsize=(3, 2))
        ax.plot(item["y"][:, 0], label="target")
        ax.plot(pred[:, 0], label="prediction")
        ax.legend()
        path = Path(out_dir) / "toy_prediction.png"
        fig.savefig(path)
        plt.close(fig)
        return [path]


def weights_digest(model: nn.Module) -> str:
    """sha256 over the model's state dict, keys sorted; equal digests mean bit-identical weights."""
    digest = hashlib.sha256()
    for key, tensor in sorted(model.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
