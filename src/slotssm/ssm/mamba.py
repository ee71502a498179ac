"""Mamba (selective SSM, Mamba1) and Mamba2 (SSD) blocks: projections, causal depthwise conv, scan, gate.

Legend: B' batch (batch x slots for SlotSSM), T time, D d_model, E d_inner = expand * D, N d_state,
H heads, P head width (Mamba2: E = H * P), G groups of B/C, W conv width (d_conv).

Parameter names and initialisation follow mamba_ssm's `Mamba` / `Mamba2` modules, so state dicts move between them.
Each block has `forward(x, state=None) -> (y, state)` on (B', T, D), `init_state(batch_size)` and
`step(x_t, state) -> (y_t, state)` on (B', D); running `step` T times equals `forward` (tested), and
`forward(x[:, t:], state_after_x[:, :t])` continues `forward(x[:, :t])` exactly.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor, nn

from slotssm.arrays import check_float
from slotssm.params import no_decay
from slotssm.ssm.scan import selective_scan
from slotssm.ssm.ssd import ssd_scan


class SSMState(NamedTuple):
    """Recurrent state of a block: the last W-1 conv inputs (B', C_conv, W-1) and the SSM state."""

    conv: Tensor
    ssm: Tensor  # Mamba: (B', E, N); Mamba2: (B', H, P, N)


def _dt_bias_init(size: int, dt_min: float, dt_max: float, floor: float) -> Tensor:
    """Inverse softplus of dt ~ log-uniform[dt_min, dt_max] (mamba_ssm's dt init): softplus(bias) = dt."""
    dt = torch.exp(torch.rand(size) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=floor)
    return dt + torch.log(-torch.expm1(-dt))


def _check_input(name: str, x: Tensor, rank: int, d_model: int, legend: str) -> None:
    check_float(name, x, legend)
    if x.dim() != rank or x.shape[-1] != d_model or (rank == 3 and x.shape[1] == 0):
        raise ValueError(f"{name}: expected shape {legend} with D={d_model} and T >= 1, got {tuple(x.shape)}")


class _CausalConvMixin:
    """Depthwise causal conv over time with a carried state of the last W-1 inputs."""

    conv1d: nn.Conv1d

    def _conv(self, xc: Tensor, conv_state: Tensor | None) -> tuple[Tensor, Tensor]:
        w = self.conv1d.kernel_size[0]
        xp = F.pad(xc, (w - 1, 0)) if conv_state is None else torch.cat([conv_state, xc], dim=-1)  # (B', C, W-1+T)
        out = F.conv1d(xp, self.conv1d.weight, self.conv1d.bias, groups=self.conv1d.groups)  # (B', C, T)
        return out, xp[..., xp.shape[-1] - (w - 1) :]

    def _conv_step(self, x_t: Tensor, conv_state: Tensor) -> tuple[Tensor, Tensor]:
        window = torch.cat([conv_state, x_t[..., None]], dim=-1)  # (B', C, W)
        out = (window * self.conv1d.weight[:, 0]).sum(-1) + self.conv1d.bias  # (B', C)
        return out, window[..., 1:]


class Mamba(nn.Module, _CausalConvMixin):
    """Mamba1 block (selective scan, diagonal A per channel)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: float = 2.0,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        impl: str = "auto",
    ):
        super().__init__()
        self.d_model, self.d_state, self.impl = d_model, d_state, impl
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        e = self.d_inner
        self.in_proj = nn.Linear(d_model, 2 * e, bias=False)
        self.conv1d = nn.Conv1d(e, e, d_conv, groups=e, padding=d_conv - 1, bias=True)
        self.x_proj = nn.Linear(e, self.dt_rank + 2 * d_state, bias=False)
        self.dt_proj = nn.Linear(self.dt_rank, e, bias=True)
        nn.init.uniform_(self.dt_proj.weight, -self.dt_rank**-0.5, self.dt_rank**-0.5)
        with torch.no_grad():
            self.dt_proj.bias.copy_(_dt_bias_init(e, dt_min, dt_max, dt_init_floor))
        A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(e, 1)  # S4D-real init  (E, N)
        self.A_log = nn.Parameter(torch.log(A))
        self.D = nn.Parameter(torch.ones(e))
        no_decay(self.A_log, self.D)  # the dynamics: decay would pull A towards -1 and D to 0 (as in mamba_ssm)
        self.out_proj = nn.Linear(e, d_model, bias=False)

    def init_state(self, batch_size: int, device=None, dtype=None) -> SSMState:
        w = self.conv1d.kernel_size[0]
        p = self.A_log
        kw = dict(device=device or p.device, dtype=dtype or p.dtype)
        return SSMState(torch.zeros(batch_size, self.d_inner, w - 1, **kw), torch.zeros(batch_size, self.d_inner, self.d_state, **kw))

    def forward(self, x: Tensor, state: SSMState | None = None) -> tuple[Tensor, SSMState]:
        """x (B', T, D) -> y (B', T, D), state after the last step."""
        _check_input("x", x, 3, self.d_model, "(B', T, D)")
        xz = rearrange(self.in_proj(x), "b t e -> b e t")  # (B', 2E, T)
        xi, z = xz.chunk(2, dim=1)
        xi, conv_state = self._conv(xi, None if state is None else state.conv)
        xi = F.silu(xi)  # (B', E, T)
        dt, B, C = torch.split(self.x_proj(rearrange(xi, "b e t -> b t e")), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = rearrange(dt @ self.dt_proj.weight.t(), "b t e -> b e t")  # (B', E, T); bias added in the scan
        y, ssm_state = selective_scan(
            xi, dt, -torch.exp(self.A_log.float()).to(x.dtype), rearrange(B, "b t n -> b n t"), rearrange(C, "b t n -> b n t"),
            self.D, z, delta_bias=self.dt_proj.bias, delta_softplus=True,
            initial_state=None if state is None else state.ssm, return_last_state=True, impl=self.impl,
        )
        return self.out_proj(rearrange(y, "b e t -> b t e")), SSMState(conv_state, ssm_state)

    def step(self, x_t: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        """One frame: x_t (B', D) -> y_t (B', D)."""
        _check_input("x_t", x_t, 2, self.d_model, "(B', D)")
        xi, z = self.in_proj(x_t).chunk(2, dim=-1)  # (B', E) each
        xi, conv_state = self._conv_step(xi, state.conv)
        xi = F.silu(xi)
        dt, B, C = torch.split(self.x_proj(xi), [self.dt_rank, self.d_state, self.d_state], dim=-1)
        dt = F.softplus(self.dt_proj(dt))  # (B', E)
        A = -torch.exp(self.A_log.float()).to(x_t.dtype)
        h = torch.exp(dt[..., None] * A) * state.ssm + (dt * xi)[..., None] * B[:, None, :]  # (B', E, N)
        y = (h * C[:, None, :]).sum(-1) + self.D * xi
        return self.out_proj(y * F.silu(z)), SSMState(conv_state, h)


class RMSNormGated(nn.Module):
    """mamba_ssm's gated RMSNorm with norm_before_gate=False: rmsnorm(y * silu(z)) per group, times weight."""

    def __init__(self, d: int, group_size: int, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))
        self.group_size, self.eps = group_size, eps

    def forward(self, y: Tensor, z: Tensor) -> Tensor:
        y = y * F.silu(z)
        yg = rearrange(y, "... (g s) -> ... g s", s=self.group_size)
        yg = yg * torch.rsqrt(yg.pow(2).mean(-1, keepdim=True) + self.eps)
        return rearrange(yg, "... g s -> ... (g s)") * self.weight


class Mamba2(nn.Module, _CausalConvMixin):
    """Mamba2 block (SSD, one scalar decay per head)."""

    def __init__(
        self,
        d_model: int,
        d_state: int = 64,
        d_conv: int = 4,
        expand: float = 2.0,
        headdim: int = 64,
        ngroups: int = 1,
        A_init_range: tuple[float, float] = (1.0, 16.0),
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init_floor: float = 1e-4,
        chunk_size: int = 64,
        impl: str = "auto",
    ):
        super().__init__()
        self.d_model, self.d_state, self.ngroups, self.headdim = d_model, d_state, ngroups, headdim
        self.d_inner = int(expand * d_model)
        if self.d_inner % headdim:
            raise ValueError(f"headdim: d_inner={self.d_inner} must be divisible by headdim={headdim}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ValueError(f"ngroups: nheads={self.nheads} must be divisible by ngroups={ngroups}")
        self.chunk_size, self.impl = chunk_size, impl
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner + 2 * ngroups * d_state + self.nheads, bias=False)
        self.conv1d = nn.Conv1d(self.conv_dim, self.conv_dim, d_conv, groups=self.conv_dim, padding=d_conv - 1, bias=True)
        self.dt_bias = nn.Parameter(_dt_bias_init(self.nheads, dt_min, dt_max, dt_init_floor))
        self.A_log = nn.Parameter(torch.log(torch.empty(self.nheads).uniform_(*A_init_range)))
        self.D = nn.Parameter(torch.ones(self.nheads))
        no_decay(self.dt_bias, self.A_log, self.D)  # the dynamics (as in mamba_ssm)
        self.norm = RMSNormGated(self.d_inner, group_size=self.d_inner // ngroups)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def init_state(self, batch_size: int, device=None, dtype=None) -> SSMState:
        w = self.conv1d.kernel_size[0]
        p = self.A_log
        kw = dict(device=device or p.device, dtype=dtype or p.dtype)
        return SSMState(
            torch.zeros(batch_size, self.conv_dim, w - 1, **kw),
            torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, **kw),
        )

    def _split_xbc(self, xbc: Tensor):
        gn = self.ngroups * self.d_state
        return torch.split(xbc, [self.d_inner, gn, gn], dim=-1)

    def forward(self, x: Tensor, state: SSMState | None = None) -> tuple[Tensor, SSMState]:
        """x (B', T, D) -> y (B', T, D), state after the last step."""
        _check_input("x", x, 3, self.d_model, "(B', T, D)")
        z, xbc, dt = torch.split(self.in_proj(x), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xbc, conv_state = self._conv(rearrange(xbc, "b t c -> b c t"), None if state is None else state.conv)
        xs, B, C = self._split_xbc(F.silu(rearrange(xbc, "b c t -> b t c")))
        y, ssm_state = ssd_scan(
            rearrange(xs, "b t (h p) -> b t h p", p=self.headdim), dt, -torch.exp(self.A_log.float()).to(x.dtype),
            rearrange(B, "b t (g n) -> b t g n", g=self.ngroups), rearrange(C, "b t (g n) -> b t g n", g=self.ngroups),
            D=self.D, dt_bias=self.dt_bias, dt_softplus=True, initial_state=None if state is None else state.ssm,
            return_final_state=True, chunk_size=self.chunk_size, impl=self.impl,
        )
        y = self.norm(rearrange(y, "b t h p -> b t (h p)"), z)
        return self.out_proj(y), SSMState(conv_state, ssm_state)

    def step(self, x_t: Tensor, state: SSMState) -> tuple[Tensor, SSMState]:
        """One frame: x_t (B', D) -> y_t (B', D)."""
        _check_input("x_t", x_t, 2, self.d_model, "(B', D)")
        z, xbc, dt = torch.split(self.in_proj(x_t), [self.d_inner, self.conv_dim, self.nheads], dim=-1)
        xbc, conv_state = self._conv_step(xbc, state.conv)
        xs, B, C = self._split_xbc(F.silu(xbc))
        xs = rearrange(xs, "b (h p) -> b h p", p=self.headdim)
        rep = self.nheads // self.ngroups
        B, C = (rearrange(v, "b (g n) -> b g n", g=self.ngroups).repeat_interleave(rep, dim=1) for v in (B, C))  # (B', H, N)
        dt = F.softplus(dt + self.dt_bias)  # (B', H)
        decay = torch.exp(dt * -torch.exp(self.A_log.float()).to(x_t.dtype))  # (B', H)
        h = decay[..., None, None] * state.ssm + (dt[..., None] * xs)[..., None] * B[:, :, None, :]  # (B', H, P, N)
        y = torch.einsum("bhpn,bhn->bhp", h, C) + self.D[:, None] * xs
        y = self.norm(rearrange(y, "b h p -> b (h p)"), z)
        return self.out_proj(y), SSMState(conv_state, h)


SSM_KINDS = ("mamba", "mamba2")


def build_ssm(kind: str, d_model: int, *, d_state: int = 16, d_conv: int = 4, expand: float = 2.0, headdim: int = 64,
              dt_range: tuple[float, float] = (0.001, 0.1), impl: str = "auto") -> Mamba | Mamba2:
    """A Mamba ("mamba", Mamba1) or Mamba2 ("mamba2") block on inputs of `d_model` channels (`headdim`: Mamba2 only).

    `dt_range`: the log-uniform range of the starting step sizes dt (mamba_ssm's dt_min, dt_max); a channel's state
    keeps exp(-dt * A) of itself per step, so a smaller range starts with a longer memory."""
    if len(dt_range) != 2 or not 0 < dt_range[0] <= dt_range[1]:
        raise ValueError(f"dt_range: expected (dt_min, dt_max) with 0 < dt_min <= dt_max, got {tuple(dt_range)}")
    dt_min, dt_max = dt_range
    if kind == "mamba":
        return Mamba(d_model, d_state=d_state, d_conv=d_conv, expand=expand, dt_min=dt_min, dt_max=dt_max, impl=impl)
    if kind == "mamba2":
        return Mamba2(d_model, d_state=d_state, d_conv=d_conv, expand=expand, headdim=headdim, dt_min=dt_min,
                      dt_max=dt_max, impl=impl)
    raise ValueError(f"kind: expected one of {SSM_KINDS}, got {kind!r}")
