"""Pixels -> tokens: a SAVi-style CNN encoder, a ViT patch tokenizer, positional embeddings.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. Images are (C, height, width); a feature map has h x w = M cells.

Both encoders map frames (B, T, C, height, width) to tokens (B, T, M, D), the input of every sequence model.
uint8 frames are scaled to [0, 1]; float frames are used as given.
"""

from __future__ import annotations

import torch
from einops import rearrange
from torch import Tensor, nn

from slotssm.params import no_decay

__all__ = ["build_grid", "SoftPositionEmbedding", "CNNEncoder", "PatchTokenizer", "sincos_2d"]


def _pair(x: int | tuple[int, int]) -> tuple[int, int]:
    return (x, x) if isinstance(x, int) else (int(x[0]), int(x[1]))


def _check_frames(frames: Tensor, channels: int, name: str = "frames") -> Tensor:
    if frames.dim() != 5 or frames.shape[2] != channels:
        raise ValueError(f"{name}: expected shape (B, T, {channels}, height, width), got {tuple(frames.shape)}")
    return frames.float() / 255.0 if frames.dtype == torch.uint8 else frames


def build_grid(h: int, w: int, device=None, dtype=None) -> Tensor:
    """SAVi's position grid: (h, w, 4) with channels (y, x, 1 - y, 1 - x), coordinates in [0, 1]."""
    ys = torch.linspace(0.0, 1.0, h, device=device, dtype=dtype)
    xs = torch.linspace(0.0, 1.0, w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")  # (h, w) each
    return torch.stack([gy, gx, 1.0 - gy, 1.0 - gx], dim=-1)  # (h, w, 4)


class SoftPositionEmbedding(nn.Module):
    """Adds Linear(grid) to channels-last features (SAVi): x (..., h, w, D) -> (..., h, w, D)."""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = d_model
        self.proj = nn.Linear(4, d_model)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() < 3 or x.shape[-1] != self.d_model:
            raise ValueError(f"x: expected shape (..., h, w, {self.d_model}), got {tuple(x.shape)}")
        grid = build_grid(x.shape[-3], x.shape[-2], device=x.device, dtype=x.dtype)  # (h, w, 4)
        return x + self.proj(grid)


class CNNEncoder(nn.Module):
    """SAVi-style CNN encoder: frames (B, T, C, height, width) -> tokens (B, T, M, D), M = h * w.

    `num_layers` convolutions (kernel_size, `channels` wide, stride from `strides`, 'same' padding) with ReLU
    between them, a soft position embedding, flatten, LayerNorm and an MLP (Linear-ReLU-Linear) to D.
    Frames in [0, 1] are mapped to [-1, 1] first, and the convs start kaiming-initialised with zero biases (STEVE,
    PSB). With PyTorch's default conv init, random biases and raw [0, 1] frames, the image-dependent part of a token
    was measured at std ~0.01 against ~0.4 for the position term: slots barely depended on the image.
    The feature map is height / prod(strides) x width / prod(strides) (see `grid_size`).

    Args:
        in_channels: C.  d_model: D of the tokens.
        channels: conv width.  num_layers: number of convs.  kernel_size: conv kernel (odd).
        strides: one stride per conv (default (2, 2, 1, 1): 64x64 frames -> 16x16 = 256 tokens).
        mlp_hidden: hidden width of the output MLP (default D).
    """

    def __init__(self, in_channels: int = 3, d_model: int = 64, *, channels: int = 64, num_layers: int = 4,
                 kernel_size: int = 5, strides: tuple[int, ...] | None = None, mlp_hidden: int | None = None) -> None:
        super().__init__()
        strides = (2, 2) + (1,) * (num_layers - 2) if strides is None else tuple(strides)
        if len(strides) != num_layers:
            raise ValueError(f"strides: expected {num_layers} values (one per layer), got {len(strides)}")
        if kernel_size % 2 != 1:
            raise ValueError(f"kernel_size: expected an odd size, got {kernel_size}")
        self.in_channels, self.d_model, self.strides = in_channels, d_model, strides
        layers: list[nn.Module] = []
        for i, s in enumerate(strides):
            pad = kernel_size // 2  # 'same' at stride 1
            layers.append(nn.Conv2d(in_channels if i == 0 else channels, channels, kernel_size, s, pad))
            if i < num_layers - 1:
                layers.append(nn.ReLU())
        self.convs = nn.Sequential(*layers)
        for conv in self.convs:
            if isinstance(conv, nn.Conv2d):  # as STEVE / PSB: kaiming (ReLU gain), zero bias
                nn.init.kaiming_uniform_(conv.weight, nonlinearity="relu")
                nn.init.zeros_(conv.bias)
        self.pos = SoftPositionEmbedding(channels)
        self.norm = nn.LayerNorm(channels)
        hidden = d_model if mlp_hidden is None else mlp_hidden
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, d_model))

    def grid_size(self, height: int, width: int) -> tuple[int, int]:
        """Feature map (h, w) for frames of size height x width."""
        for s in self.strides:  # Conv2d with pad k // 2: out = (in - 1) // s + 1
            height, width = (height - 1) // s + 1, (width - 1) // s + 1
        return height, width

    def forward(self, frames: Tensor) -> Tensor:
        x = _check_frames(frames, self.in_channels) * 2.0 - 1.0  # [0, 1] -> [-1, 1], as SAVi and SlotSSMs feed frames
        B = x.shape[0]
        x = self.convs(rearrange(x, "b t c y x -> (b t) c y x"))  # (B*T, channels, h, w)
        x = self.pos(rearrange(x, "n c h w -> n h w c"))  # (B*T, h, w, channels)
        x = self.mlp(self.norm(rearrange(x, "(b t) h w c -> b t (h w) c", b=B)))  # (B, T, M, D)
        return x


def sincos_2d(h: int, w: int, d: int) -> Tensor:
    """Fixed 2-D sine-cosine position table (h*w, d), row-major; d/4 frequencies per axis (as in MAE).

    Used to initialise learned position embeddings: patches and decoder queries start out knowing where they are,
    which measured here halves the steps a transformer decoder needs to leave the blank-image plateau. When d is
    not a multiple of 4 the table is N(0, 0.02^2) noise instead.
    """
    if d % 4:
        return torch.randn(h * w, d) * 0.02
    y, x = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64), indexing="ij")
    omega = 1.0 / 10000 ** (torch.arange(d // 4, dtype=torch.float64) / (d // 4))  # (d/4,)
    parts = [fn(c.reshape(-1, 1) * omega) for c in (x, y) for fn in (torch.sin, torch.cos)]
    return torch.cat(parts, 1).float()  # (h*w, d)


class PatchTokenizer(nn.Module):
    """ViT tokenizer: frames (B, T, C, height, width) -> tokens (B, T, M, D) (paper App. C.3).

    A linear map of each non-overlapping patch (a strided conv), plus a learned spatial embedding (M, D; starts as
    `sincos_2d`) and,
    when `max_frames` is given, a learned temporal embedding (max_frames, D) indexed by t0 + t.

    Args:
        image_size: height (= width) or (height, width).  patch_size: side or (ph, pw).
        in_channels: C.  d_model: D.  max_frames: longest sequence with a temporal embedding (None: none).
    """

    def __init__(self, image_size: int | tuple[int, int], patch_size: int | tuple[int, int], in_channels: int,
                 d_model: int, max_frames: int | None = None) -> None:
        super().__init__()
        (H, W), (ph, pw) = _pair(image_size), _pair(patch_size)
        if H % ph or W % pw:
            raise ValueError(f"patch_size: must divide image_size {(H, W)}, got {(ph, pw)}")
        self.image_size, self.patch_size, self.in_channels = (H, W), (ph, pw), in_channels
        self.grid = (H // ph, W // pw)
        self.num_patches = self.grid[0] * self.grid[1]
        self.max_frames = max_frames
        self.proj = nn.Conv2d(in_channels, d_model, kernel_size=(ph, pw), stride=(ph, pw))
        self.pos_space = no_decay(nn.Parameter(sincos_2d(*self.grid, d_model)))  # (M, D), learned from a sin-cos start
        self.pos_time = (no_decay(nn.Parameter(torch.randn(max_frames, d_model) * 0.02))  # (T_max, D)
                         if max_frames else None)

    def forward(self, frames: Tensor, *, t0: int = 0) -> Tensor:
        """frames (B, T, C, height, width) -> (B, T, M, D); `t0` is the index of the first frame (streaming)."""
        x = _check_frames(frames, self.in_channels)
        (B, T), size = x.shape[:2], tuple(x.shape[-2:])
        if size != self.image_size:
            raise ValueError(f"frames: expected spatial size {self.image_size}, got {size}")
        x = self.proj(rearrange(x, "b t c y x -> (b t) c y x"))  # (B*T, D, h, w)
        x = rearrange(x, "(b t) d h w -> b t (h w) d", b=B) + self.pos_space  # (B, T, M, D)
        if self.pos_time is not None:
            if t0 < 0 or t0 + T > self.max_frames:
                raise ValueError(f"frames: frames t0={t0}..{t0 + T - 1} exceed max_frames={self.max_frames}")
            x = x + self.pos_time[t0: t0 + T, None, :]  # (T, 1, D) broadcast over M
        return x
