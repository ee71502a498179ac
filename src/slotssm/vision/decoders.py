"""Slots -> pixels: a transformer decoder (position queries cross-attend slots) and a spatial broadcast decoder.

Legend (docs/architecture.md): B batch, T time, K slots, M tokens per frame, D model width, H heads, P head width,
E expanded SSM channels, N SSM state size. B* is any number of leading axes (e.g. B, or B, T), flattened inside.

Both decoders treat the slots as a set: permuting the slots permutes the per-slot outputs and leaves the image
unchanged.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange, repeat
from torch import Tensor, nn

from ..layers import TransformerLayer
from ..params import no_decay
from .encoders import SoftPositionEmbedding, sincos_2d

__all__ = ["TransformerDecoder", "SpatialBroadcastDecoder", "check_hard_pixels", "reconstruction_loss"]


def _check_slots(slots: Tensor, d_slot: int) -> tuple[Tensor, tuple[int, ...]]:
    if slots.dim() < 3 or slots.shape[-1] != d_slot:
        raise ValueError(f"slots: expected shape (B*, K, {d_slot}), got {tuple(slots.shape)}")
    return slots.reshape(-1, *slots.shape[-2:]), tuple(slots.shape[:-2])  # (B', K, Ds), B*


def check_hard_pixels(hard_pixels: float) -> None:
    """Raise ValueError unless `hard_pixels` (reconstruction_loss; the tasks' data.hard_pixels) is in [0, 1)."""
    if not 0.0 <= hard_pixels < 1.0:
        raise ValueError(f"hard_pixels: expected a fraction of the pixels in [0, 1), got {hard_pixels}")


def reconstruction_loss(recon: Tensor, target: Tensor, *, hard_pixels: float = 0.0,
                        weight: Tensor | None = None) -> Tensor:
    """Pixel MSE of frames (B*, C, H, W), plus, when `hard_pixels` = q > 0, the mean squared error of each frame's
    q * H * W worst pixels (at least one; a pixel's error is its mean over channels).

    A plain MSE lets an object of a few pixels go undrawn: it is under 1 % of the loss (the snitch of
    snitch_localization, 1.7 of 1024 pixels, is drawn worse than painting it over with its neighbours). The added
    term counts a frame's worst pixels as much as the rest of the frame together, knowing nothing of what is in it
    (online hard pixel mining). Measured (docs/results/README.md): the snitch stays undrawn (its pixels are among
    the worst 2 % half the time), the whole reconstruction gets worse, and the slots become image regions instead
    of objects. `weight` (B*, 1, H, W), when given, weights the plain term per pixel, normalised by its sum; the
    hard term is unweighted.
    """
    if recon.shape != target.shape or recon.dim() < 3:
        raise ValueError(f"recon, target: expected equal shapes (B*, C, H, W), got {tuple(recon.shape)} and "
                         f"{tuple(target.shape)}")
    check_hard_pixels(hard_pixels)
    err = (recon - target) ** 2  # (B*, C, H, W)
    if weight is None:
        loss = err.mean()
    else:
        weight = weight.expand_as(err)
        loss = (weight * err).sum() / weight.sum()
    if hard_pixels > 0.0:
        per_pixel = err.mean(-3).flatten(-2)  # (B*, H*W)
        k = max(1, round(hard_pixels * per_pixel.shape[-1]))
        loss = loss + per_pixel.topk(k, dim=-1).values.mean()
    return loss


class TransformerDecoder(nn.Module):
    """Patch decoder of the paper (eqs. 35-37): one learned query per output patch cross-attends the slots.

    Each of `num_layers` pre-norm layers does self-attention among the patch queries, cross-attention to the
    slots and an MLP; a LayerNorm and a linear head map each query to its patch's pixels.

    Args:
        num_patches: M, output patches per image.  patch_dim_out: values per patch (e.g. ph * pw * C).
        d_model: D of the queries.  num_heads: H.  num_layers: decoder layers.
        d_slot: width of the slots (default D).  mlp_ratio: MLP hidden width / D.
        grid: (h, w) of the patches (row-major); when given the queries start as `sincos_2d(h, w, D)`.

    forward(slots (B*, K, Ds), *, return_attention=True) -> (patches (B*, M, patch_dim_out),
    slot_attention (B*, M, K) | None): the last cross-attention's weights averaged over heads; its argmax over K
    gives the slot that explains each patch (paper App. D.1).
    """

    def __init__(self, num_patches: int, patch_dim_out: int, d_model: int, num_heads: int, num_layers: int = 3, *,
                 d_slot: int | None = None, mlp_ratio: float = 4.0, grid: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.num_patches, self.d_slot = num_patches, d_model if d_slot is None else d_slot
        if grid is not None and grid[0] * grid[1] != num_patches:
            raise ValueError(f"grid: expected h * w == num_patches={num_patches}, got {tuple(grid)}")
        start = sincos_2d(*grid, d_model) if grid is not None else torch.randn(num_patches, d_model) * 0.02
        self.queries = no_decay(nn.Parameter(start))  # (M, D)
        self.layers = nn.ModuleList(
            TransformerLayer(d_model, num_heads, cross=True, d_context=self.d_slot, mlp_ratio=mlp_ratio)
            for _ in range(num_layers)
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, patch_dim_out)

    def forward(self, slots: Tensor, *, return_attention: bool = True) -> tuple[Tensor, Tensor | None]:
        s, lead = _check_slots(slots, self.d_slot)  # (B', K, Ds)
        x = repeat(self.queries, "m d -> b m d", b=s.shape[0])  # (B', M, D)
        maps = None
        for i, layer in enumerate(self.layers):
            last = i == len(self.layers) - 1
            x, maps = layer(x, s, return_attention=return_attention and last)
        patches = self.head(self.norm(x)).reshape(*lead, self.num_patches, -1)  # (B*, M, patch_dim_out)
        if maps is None:
            return patches, None
        attn = maps["cross"].mean(dim=1)  # (B', M, K): average over heads
        return patches, attn.reshape(*lead, *attn.shape[-2:])


class SpatialBroadcastDecoder(nn.Module):
    """Spatial broadcast decoder (SAVi / paper Table 4): per-slot RGB and alpha, alpha soft-maxed over slots.

    Each slot is layer-normalised (Table 4's slot normalisation), broadcast to an `initial_size` grid, gets a soft position embedding, and goes through
    ConvTranspose2d(5x5, stride 2) + ReLU layers up to `resolution`, a Conv2d(5x5) + ReLU and a Conv2d(3x3) to
    `out_channels` + 1 (the alpha logit); with `out_stride=2` the output layer is a ConvTranspose2d(5x5, stride 2)
    instead, so the outputs are at 2 x `resolution`. Outputs smaller than `image_size` are bilinearly upsampled,
    which keeps the decoder cheap on a CPU.

    Args:
        d_slot: width of the slots.  image_size: side of the square output image.
        out_channels: C.  hidden: conv width.
        initial_size: side of the broadcast grid.  resolution: side of the decoded maps (default image_size);
            resolution / initial_size must be a power of 2.
        out_stride: 1 or 2. 2 merges the last of the paper's stride-2 up-samplings into the output layer: per-pixel
            masks at twice the hidden maps' side for the cost of one small layer. On the object-centric `small`
            preset (32x32 frames, objects ~20 pixels) ground-truth masks through 16x16 maps score FG-ARI 0.68 at
            best, yet OC-SlotSSM's FG-ARI did not move with it (0.478 against 0.483, seed 0, 7000 steps).
        group_norm: a GroupNorm(1, hidden) after every hidden conv, as the official SlotSSMs decoder.
        even_masks: the alpha channel of the last conv starts at zero, so every slot starts with an equal share
            (1 / K) of every pixel; with distinct (std-1) slots a random start gives one slot the largest alpha
            almost everywhere, and it keeps the whole frame.

    forward(slots (B*, K, Ds)) -> (image (B*, C, S, S), masks (B*, K, 1, S, S), rgb (B*, K, C, S, S)) with
    S = image_size; masks sum to 1 over K.
    """

    def __init__(self, d_slot: int, image_size: int, out_channels: int = 3, hidden: int = 64, *,
                 initial_size: int = 8, resolution: int | None = None, out_stride: int = 1,
                 group_norm: bool = False, even_masks: bool = False) -> None:
        super().__init__()
        resolution = image_size if resolution is None else resolution
        if out_stride not in (1, 2):
            raise ValueError(f"out_stride: expected 1 or 2, got {out_stride}")
        ups = math.log2(resolution / initial_size) if resolution >= initial_size else -1.0
        if ups < 0 or ups != int(ups):
            raise ValueError(f"resolution: expected initial_size={initial_size} times a power of 2, got {resolution}")
        if resolution * out_stride > image_size:
            raise ValueError(f"resolution: expected at most image_size / out_stride = {image_size // out_stride}, "
                             f"got {resolution}")
        self.d_slot, self.image_size, self.out_channels = d_slot, image_size, out_channels
        self.initial_size, self.resolution, self.out_size = initial_size, resolution, resolution * out_stride
        self.norm = nn.LayerNorm(d_slot)  # paper Table 4 "Slot Normalization"
        self.pos = SoftPositionEmbedding(d_slot)
        norm = (lambda: [nn.GroupNorm(1, hidden)]) if group_norm else (lambda: [])  # noqa: E731
        layers: list[nn.Module] = []
        c_in = d_slot
        for _ in range(int(ups)):
            layers += [nn.ConvTranspose2d(c_in, hidden, 5, stride=2, padding=2, output_padding=1), *norm(), nn.ReLU()]
            c_in = hidden
        layers += [nn.Conv2d(c_in, hidden, 5, padding=2), *norm(), nn.ReLU()]
        if out_stride == 1:
            layers.append(nn.Conv2d(hidden, out_channels + 1, 3, padding=1))
        else:
            layers.append(nn.ConvTranspose2d(hidden, out_channels + 1, 5, stride=2, padding=2, output_padding=1))
        self.net = nn.Sequential(*layers)
        if even_masks:
            with torch.no_grad():  # the alpha channel: Conv2d weights are (out, in, ..), ConvTranspose2d (in, out, ..)
                (layers[-1].weight[-1] if out_stride == 1 else layers[-1].weight[:, -1]).zero_()
                layers[-1].bias[-1].zero_()

    def forward(self, slots: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        s, lead = _check_slots(slots, self.d_slot)  # (B', K, Ds)
        K, g = s.shape[1], self.initial_size
        x = self.pos(repeat(self.norm(s), "b k d -> (b k) h w d", h=g, w=g))  # (B'*K, g, g, Ds)
        out = self.net(rearrange(x, "n h w d -> n d h w"))  # (B'*K, C+1, r * out_stride, ..)
        if self.out_size != self.image_size:
            out = F.interpolate(out, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        out = rearrange(out, "(b k) c h w -> b k c h w", k=K)  # (B', K, C+1, S, S)
        rgb, masks = out[:, :, :-1], out[:, :, -1:].softmax(dim=1)  # alpha: softmax over slots
        image = (rgb * masks).sum(dim=1)  # (B', C, S, S)
        return (image.reshape(*lead, *image.shape[1:]), masks.reshape(*lead, *masks.shape[1:]),
                rgb.reshape(*lead, *rgb.shape[1:]))
