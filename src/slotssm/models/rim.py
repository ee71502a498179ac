"""Recurrent Independent Mechanisms (RIM, Goyal et al., ICLR 2021): K recurrent modules, top-k active per step.

Legend: B batch, T time, K modules (= slots), M tokens per frame, D module width, D_in token width, H heads,
P head width (D / H), A input-attention key width.

One step on the frame's tokens x (B, M, D_in) and module states h (B, K, D):
    x' = [LN x; 0]                                   a null token is appended (B, M+1, D_in)
    a = softmax_{M+1}(q_k(h) . key(x') / sqrt A)     input attention, each module its own query weights
    active = the top_k modules that attend least to the null token      (B, K) bool, exactly top_k per sample
    h~ = Cell_k(a @ value(x'), h)                    a GRU or LSTM cell per module (separate weights)
    h~ = h~ + CommAttn_k(h~ over all modules)        communication, residual; keys and values from every module
                                                     (active: h~, inactive: their old h)
    h = where(active, h~, h)                         inactive modules keep their state exactly
The top-k choice is not differentiable; gradients reach the input attention through the values it weighs.
Per-module weights are stacked (K, in, out) and applied with one einsum, never a loop over modules. `forward`
computes what `step` computes frame by frame (the recurrence is not parallel in time), with the state-free token
keys and values of all frames computed at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor, nn

from slotssm.models.base import RecurrentModel, check_heads, check_positive
from slotssm.models.presets import scaled
from slotssm.models.registry import register_model
from slotssm.params import no_decay, slot_table


@dataclass(frozen=True)
class RIMConfig:
    """Hyper-parameters of RIM (defaults: the paper's 6 modules with 4 active)."""

    input_dim: int = 64  # width of the incoming tokens
    d_model: int = 64  # width of each module's hidden state (the slot width)
    num_slots: int = 6  # K, number of modules
    top_k: int = 4  # modules updated per step
    cell: str = "gru"  # "gru" | "lstm"
    input_key_dim: int = 64  # A, single-head input attention
    num_heads: int = 4  # communication attention heads

    def __post_init__(self):
        check_positive(self, "input_dim", "d_model", "num_slots", "input_key_dim", "num_heads")
        if not 1 <= self.top_k <= self.num_slots:
            raise ValueError(f"top_k: expected 1 <= top_k <= num_slots={self.num_slots}, got {self.top_k}")
        if self.cell not in ("gru", "lstm"):
            raise ValueError(f"cell: expected 'gru' or 'lstm', got {self.cell!r}")
        check_heads(self, "num_heads")


class RIMState(NamedTuple):
    """h (B, K, D) module hidden states; c (B, K, D) LSTM cells, or None for GRU modules."""

    h: Tensor
    c: Tensor | None


class GroupLinear(nn.Module):
    """A separate linear map per module, batched: (B, K, d_in) -> (B, K, d_out) with weights (K, d_in, d_out)."""

    def __init__(self, num_groups: int, d_in: int, d_out: int, bias: bool = True):
        super().__init__()
        bound = 1.0 / math.sqrt(d_in)  # nn.Linear's default initialisation, per module
        self.weight = nn.Parameter(torch.empty(num_groups, d_in, d_out).uniform_(-bound, bound))
        self.bias = no_decay(nn.Parameter(torch.empty(num_groups, d_out).uniform_(-bound, bound))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        y = torch.einsum("bki,kio->bko", x, self.weight)  # (B, K, d_out)
        return y if self.bias is None else y + self.bias


class ModuleCells(nn.Module):
    """K GRU or LSTM cells with separate weights: input (B, K, D), state -> candidate state (h~, c~)."""

    def __init__(self, num_modules: int, d_model: int, cell: str):
        super().__init__()
        gates = 3 if cell == "gru" else 4
        self.cell = cell
        self.ih = GroupLinear(num_modules, d_model, gates * d_model)
        self.hh = GroupLinear(num_modules, d_model, gates * d_model)

    def forward(self, u: Tensor, h: Tensor, c: Tensor | None) -> tuple[Tensor, Tensor | None]:
        gi, gh = self.ih(u), self.hh(h)  # (B, K, G*D) each
        if self.cell == "gru":
            ir, iz, i_n = gi.chunk(3, -1)
            hr, hz, h_n = gh.chunk(3, -1)
            r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
            n = torch.tanh(i_n + r * h_n)
            return (1 - z) * n + z * h, None  # (B, K, D)
        i, f, g, o = (gi + gh).chunk(4, -1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)  # (B, K, D)
        return torch.sigmoid(o) * torch.tanh(c), c


class Communication(nn.Module):
    """Multi-head attention among modules, per-module q/k/v/out/gate weights: h (B, K, D) -> update (B, K, D).

    As in the official RIMs code the update is gated: sigmoid(gate(h)) * tanh(out(attended)), so a module can
    ignore the others and the update stays bounded.
    """

    def __init__(self, num_modules: int, d_model: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = GroupLinear(num_modules, d_model, 3 * d_model)
        self.out = GroupLinear(num_modules, d_model, d_model)
        self.gate = GroupLinear(num_modules, d_model, d_model)

    def forward(self, h: Tensor) -> tuple[Tensor, Tensor]:
        bsz, k, d = h.shape
        q, key, v = self.qkv(h).view(bsz, k, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)  # (B, H, K, P) each
        attn = (q @ key.transpose(-1, -2) / math.sqrt(q.shape[-1])).softmax(-1)  # (B, H, K, K)
        o = (attn @ v).transpose(1, 2).reshape(bsz, k, d)  # (B, K, D)
        return torch.sigmoid(self.gate(h)) * torch.tanh(self.out(o)), attn


TINY = dict(input_dim=12, d_model=16, num_slots=4, top_k=2, input_key_dim=8, num_heads=2)


# Presets keep SlotSSM's slot width and count at each scale; about two thirds of the modules are active per step.
@register_model("rim", RIMConfig, presets=scaled(TINY, lambda s: s.slots(top_k=round(2 * s.num_slots / 3))))
class RIM(RecurrentModel):
    """RIM: tokens (B, T, M, D_in) -> module states (B, T, K, D), frame by frame.

    State: RIMState(h (B, K, D), c (B, K, D) | None); before the first frame h is a learned (K, D), c zeros.
    Attention maps (return_attention=True): "input" (B, T, K, M) input attention on the tokens (a module's row sums
    to 1 minus its "null" weight), "null" (B, T, K), "active" (B, T, K) bool (exactly top_k True per (b, t)),
    "communication" (B, T, H, K, K); "encoder" is "input" under the name every model uses for token attention.
    """

    def __init__(self, cfg: RIMConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim, self.d_model, self.num_slots = cfg.input_dim, cfg.d_model, cfg.num_slots
        k, d = cfg.num_slots, cfg.d_model
        self.h0 = slot_table(k, d, std=0.1)  # (K, D) distinct starts; the per-module weights already break symmetry
        self.norm_input = nn.LayerNorm(cfg.input_dim)
        self.key = nn.Linear(cfg.input_dim, cfg.input_key_dim)  # the null token's key is this bias
        self.value = nn.Linear(cfg.input_dim, d)
        self.query = GroupLinear(k, d, cfg.input_key_dim)
        self.cells = ModuleCells(k, d, cfg.cell)
        self.communication = Communication(k, d, cfg.num_heads)

    def init_state(self, batch_size, device=None, dtype=None) -> RIMState:
        self.check_batch_size(batch_size)
        like = self._param_like(device, dtype)
        h = self.h0.to(**like).expand(batch_size, -1, -1)  # (B, K, D)
        return RIMState(h, torch.zeros_like(h) if self.cfg.cell == "lstm" else None)

    def check_state(self, state, batch_size: int) -> None:
        self._check_state(state, batch_size)

    def _check_state(self, state, batch_size: int) -> None:
        want = (batch_size, self.num_slots, self.d_model)
        if not isinstance(state, RIMState) or tuple(state.h.shape) != want:
            got = tuple(state.h.shape) if isinstance(state, RIMState) else type(state).__name__
            raise ValueError(f"state: expected RIMState with h of shape {want}, got {got}")
        if (state.c is None) != (self.cfg.cell == "gru") or (state.c is not None and tuple(state.c.shape) != want):
            want_c = "None" if self.cfg.cell == "gru" else want
            raise ValueError(f"state: expected c {want_c} for a {self.cfg.cell} cell")

    encoder_map = "input"

    def read(self, tokens: Tensor, return_attention: bool):
        """Frames (..., M, D_in) -> (keys (..., M+1, A), values (..., M+1, D)), the null token last; None. No state."""
        x = self.norm_input(tokens)
        x = torch.cat([x, x.new_zeros(*x.shape[:-2], 1, x.shape[-1])], -2)  # (..., M+1, D_in)
        return (self.key(x), self.value(x)), None

    def frame(self, kv: tuple[Tensor, Tensor], state: RIMState, return_attention: bool):
        """(keys (B, M+1, A), values (B, M+1, D)), state -> slots (B, K, D), new state, maps of this frame | None."""
        keys, values = kv
        self._check_state(state, keys.shape[0])
        h, c = state
        logits = self.query(h) @ keys.transpose(1, 2) / math.sqrt(self.cfg.input_key_dim)  # (B, K, M+1)
        attn = logits.softmax(-1)  # (B, K, M+1)
        null = attn[..., -1]  # (B, K)
        chosen = null.topk(self.cfg.top_k, dim=1, largest=False).indices  # (B, top_k)
        active = torch.zeros_like(null, dtype=torch.bool).scatter_(1, chosen, True)  # (B, K)
        h_new, c_new = self.cells(attn @ values, h, c)  # (B, K, D)
        keep = active.unsqueeze(-1)  # (B, K, 1)
        h_new = torch.where(keep, h_new, h)  # communication reads active modules' new, inactive' old states
        update, comm = self.communication(h_new)  # (B, K, D), (B, H, K, K)
        h = torch.where(keep, h_new + update, h)  # inactive modules: exactly the old state
        c = None if c is None else torch.where(keep, c_new, c)
        maps = None
        if return_attention:
            maps = {"input": attn[..., :-1], "null": null, "active": active, "communication": comm}
        return h, RIMState(h, c), maps
