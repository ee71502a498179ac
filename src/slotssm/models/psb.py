"""Parallelized Spatiotemporal Binding (PSB, Singh et al., ICML 2024): slots for all steps in parallel, causal in time.

Legend: B batch, T time (new frames), K slots, M tokens per frame, D model width, D_in token width, H heads,
P head width, C frames already cached, S keys = (C + T) * M.

Learned initial slots (K, D) are broadcast over time and refined by `num_layers` blocks; one block on s (B, T, K, D):
    s = s + InvCrossAttn(LN s_t, LN tokens of frames t' <= t)    (1) binding: per step, the K slots compete for
                                                                      every token (softmax over slots x heads), then
                                                                      each slot's weights, times exp(learned bias of
                                                                      t - t'), are renormalised over the tokens;
                                                                      `cross_window` = n > 0 restricts the frames to
                                                                      t-n+1..t (0: every frame <= t)
    s = s + TimeAttn(LN s over t' <= t, same slot index)          (2) causal, with a learned per-head bias indexed by
                                                                      t - t' (clipped at max_distance)
    s = s + SlotAttn(LN s over the K slots of step t)             (3) objects meet within a step
    s = s + MLP(LN s)                                             (4)

The inverted softmax runs over the slots *of one step*: slots of later steps never compete for a token, so step t's
slots depend only on frames <= t, and `step` (one frame, with a KV cache) equals the parallel `forward`.
Without a window, (1) costs T * K * S (every frame <= t is a key of step t); the parallel pass goes in chunks of
`cross_chunk` steps, each scoring only the frames its steps may read. With a window of n frames it costs about
T * K * (n + cross_chunk) * M and the cache holds n - 1 frames. (One softmax over the slots of all steps would let
later steps' slots compete for a token and so leak the future into the past; here each step's slots compete alone.)

State: per layer the keys/values of the tokens of the cached frames (B, H, C*M, P) for (1), and the time-attention
inputs of every past step (B*K, offset, D) for (2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from einops import rearrange
from torch import Tensor, nn

from slotssm.layers import InvertedAttention, SelfAttentionBlock
from slotssm.models.base import CachedModel, SequenceOutput, check_heads, check_positive
from slotssm.models.presets import scaled
from slotssm.models.registry import register_model
from slotssm.params import no_decay, slot_table


def stepwise_inverted_attention(attn: InvertedAttention, x: Tensor, k: Tensor, v: Tensor,
                                allowed: Tensor, key_weight: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """InvertedAttention with one query group per step: the softmax over queries runs over the K slots of each step.

    Args:
        attn: supplies the projections (q_proj, out_proj), heads and eps; k and v are already projected.
        x: queries (B, T, K, D) (already normalised).
        k, v: keys and values (B, H, S, P).
        allowed: bool (T, S), True where step t may read key s.
        key_weight: positive (H, T, S) | None, multiplies the weights after the softmax over slots and before the
            renormalisation over keys (the relative-time bias; a bias on the logits would cancel in that softmax,
            which runs over slots that all share it).
    Returns:
        out (B, T, K, D); attn (B, H, T, K, S): weights after the softmax over (H, K), before renormalising over keys.
    Equals `attn` applied step by step to (x[:, t], the allowed keys) (tested).
    """
    h = attn.num_heads
    q = rearrange(attn.q_proj(x), "b t k (h p) -> b h t k p", h=h) / math.sqrt(attn.head_dim)  # (B, H, T, K, P)
    logits = torch.einsum("bhtkp,bhsp->bhtks", q, k)  # (B, H, T, K, S)
    # Softmax over this step's slots x heads. A mask entry depends on (t, s) only, so every softmax group is either
    # wholly allowed or wholly masked: normalise without the mask, then zero the masked groups (one factor for both).
    w = (logits - logits.amax(dim=(1, 3), keepdim=True)).exp_()  # (B, H, T, K, S)
    w = w * (allowed[:, None, :].to(w.dtype) / w.sum(dim=(1, 3), keepdim=True))  # (B, 1, T, 1, S) factor
    wk = w if key_weight is None else w * key_weight[None, :, :, None, :]  # (B, H, T, K, S)
    o = torch.einsum("bhtks,bhsp->bhtkp", wk, v)  # (B, H, T, K, P)
    o = o / (wk.sum(dim=-1, keepdim=True) + attn.eps)  # renormalise over the keys (after the product: cheaper)
    return attn.out_proj(rearrange(o, "b h t k p -> b t k (h p)")), w


def cross_mask(num_new: int, num_cached: int, m: int, window: int, device=None) -> Tensor:
    """Allowed (T, (C+T)*M): new step i (absolute C+i) reads frame f iff f <= C+i and (window == 0 or f > C+i-window).
    """
    frame = torch.arange((num_cached + num_new) * m, device=device) // m  # ((C+T)*M,)
    query = num_cached + torch.arange(num_new, device=device)[:, None]  # (T, 1)
    allowed = frame[None, :] <= query
    if window > 0:
        allowed &= frame[None, :] > query - window
    return allowed


class PSBState(NamedTuple):
    """`offset` frames seen; `cached_frames` of them have token keys/values in `kv` (all, or the window's last n-1)."""

    offset: int
    cached_frames: int
    kv: list[tuple[Tensor, Tensor]]  # per layer: (B, H, C*M, P) x2
    time: list[Tensor]  # per layer: (B*K, offset, D)


@dataclass(frozen=True)
class PSBConfig:
    """Hyper-parameters of PSB."""

    input_dim: int = 64
    d_model: int = 64
    num_slots: int = 6
    num_layers: int = 4
    num_heads: int = 4  # time and slot attention
    cross_heads: int = 1  # bottom-up inverted cross-attention: one head, as the official PSB (softmax over H x K)
    mlp_ratio: float = 4.0
    cross_window: int = 0  # frames each step's slots read in (1): 0 = all frames <= t, n = the last n
    max_distance: int = 32  # relative time bias: distances >= this share one value
    cross_chunk: int = 16  # steps per chunk of (1) in a parallel pass: memory/speed only, same values
    dropout: float = 0.0

    def __post_init__(self):
        check_positive(self, "input_dim", "d_model", "num_slots", "num_layers", "num_heads", "cross_heads",
                       "max_distance", "cross_chunk")
        check_heads(self, "num_heads", "cross_heads")
        if self.cross_window < 0:
            raise ValueError(f"cross_window: expected 0 (every past frame) or a window >= 1, got {self.cross_window}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout: expected a value in [0, 1), got {self.dropout}")


class PSBBlock(nn.Module):
    """One PSB block: (1) causal inverted cross-attention, (2) time attention, (3) slot attention, (4) MLP."""

    def __init__(self, cfg: PSBConfig):
        super().__init__()
        d, h = cfg.d_model, cfg.num_heads
        self.norm_slots, self.norm_tokens = nn.LayerNorm(d), nn.LayerNorm(d)
        self.cross = InvertedAttention(d, cfg.cross_heads)
        self.time = SelfAttentionBlock(d, h, mlp=False, causal=True, dropout=cfg.dropout)
        self.rel_bias = no_decay(nn.Parameter(torch.zeros(h, cfg.max_distance + 1)))  # (H, max_distance + 1)
        # (1)'s relative-time bias (official PSB): log-weight of a frame t - t' steps back in the renormalisation
        # over tokens, so a step can tell its own frame's tokens from older ones. Zero at the start (all frames alike).
        self.cross_bias = no_decay(nn.Parameter(torch.zeros(cfg.cross_heads, cfg.max_distance + 1)))
        self.space = SelfAttentionBlock(d, h, mlp=True, mlp_ratio=cfg.mlp_ratio, dropout=cfg.dropout)
        self.window, self.chunk = cfg.cross_window, cfg.cross_chunk

    def token_kv(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Projected tokens x (B, T, M, D) -> keys, values (B, H, T*M, P)."""
        c = rearrange(self.norm_tokens(x), "b t m d -> b (t m) d")
        split = lambda y: rearrange(y, "b s (h p) -> b h s p", h=self.cross.num_heads)  # noqa: E731
        return split(self.cross.k_proj(c)), split(self.cross.v_proj(c))

    def time_bias(self, num_new: int, num_past: int, device=None) -> Tensor:
        """(1, H, T, past+T) additive bias of query step past+i on key step j: rel_bias[:, clip(past+i-j)]."""
        query = num_past + torch.arange(num_new, device=device)[:, None]  # (T, 1)
        dist = query - torch.arange(num_past + num_new, device=device)  # (T, past+T)
        return self.rel_bias[:, dist.clamp(0, self.rel_bias.shape[1] - 1)][None]  # future pairs are masked anyway

    def bind(self, s: Tensor, k: Tensor, v: Tensor, num_cached: int, m: int, return_attention: bool):
        """(1) on s (B, T, K, D) with keys/values k, v (B, H, (C+T)*M, P) of frames 0..C+T-1 -> update (B, T, K, D),
        own-frame weights (B, T, K, M) | None. Steps go in chunks of `chunk`, each scoring only the frames it may
        read (about half the work of scoring every frame for every step; far less with a window)."""
        q = self.norm_slots(s)
        outs, maps = [], []
        for t0 in range(0, s.shape[1], self.chunk):
            t1 = min(s.shape[1], t0 + self.chunk)
            lo = 0 if self.window == 0 else max(0, num_cached + t0 - self.window + 1)  # first frame read
            hi = num_cached + t1  # frames read: lo .. hi-1
            allowed = cross_mask(t1 - t0, num_cached + t0 - lo, m, self.window, s.device)  # (T', (hi-lo)*M)
            keys, values = k[:, :, lo * m:hi * m], v[:, :, lo * m:hi * m]  # (B, H, (hi-lo)*M, P)
            query = num_cached + t0 + torch.arange(t1 - t0, device=s.device)[:, None]  # (T', 1) absolute steps
            frame = lo + torch.arange((hi - lo) * m, device=s.device) // m  # ((hi-lo)*M,) absolute frames
            dist = (query - frame).clamp(0, self.cross_bias.shape[1] - 1)  # future pairs are masked anyway
            weight = self.cross_bias.exp()[:, dist]  # (H, T', (hi-lo)*M)
            o, w = stepwise_inverted_attention(self.cross, q[:, t0:t1], keys, values, allowed, weight)
            outs.append(o)
            if return_attention:  # each step's weights on its own frame (relative index num_cached + t - lo)
                steps = torch.arange(t1 - t0, device=s.device)
                own = rearrange(w, "b h t k (f m) -> b h t k f m", m=m)[:, :, steps, :, num_cached + t0 - lo + steps]
                maps.append(rearrange(own.sum(2), "t b k m -> b t k m"))  # (B, T', K, M)
        return torch.cat(outs, 1), (torch.cat(maps, 1) if return_attention else None)

    def forward(self, s, k, v, num_cached, time_past, return_attention=False):
        """s (B, T, K, D); k, v (B, H, (C+T)*M, P); time_past (B*K, C', D)
        -> s (B, T, K, D), time memory (B*K, C'+T, D), own-frame cross weights (B, T, K, M) | None."""
        bsz, t = s.shape[:2]
        a, w = self.bind(s, k, v, num_cached, k.shape[2] // (num_cached + t), return_attention)
        s = s + a  # (1)
        h = rearrange(s, "b t k d -> (b k) t d")  # each slot index alone in time
        memory = torch.cat([time_past, h], dim=1)  # (B*K, C'+T, D)
        h, _ = self.time(h, memory=memory, attn_bias=self.time_bias(t, time_past.shape[1], s.device))  # (2)
        s = rearrange(h, "(b k) t d -> (b t) k d", b=bsz)  # the slots of one step together
        s, _ = self.space(s)  # (3) + (4)
        return rearrange(s, "(b t) k d -> b t k d", b=bsz), memory, w


TINY = dict(input_dim=12, d_model=16, num_slots=3, num_layers=2, num_heads=2, max_distance=4)


# Presets: SlotSSM's width, heads and slot count at each scale; the depth is chosen so that the parameter count is
# within 15% of SlotSSM's (tests/models/test_parallel_baselines.py; compared at input_dim=64).
@register_model("psb", PSBConfig, presets=scaled(TINY, lambda s: s.slots(num_layers=4)))
class PSB(CachedModel):
    """PSB encoder. tokens (B, T, M, D_in) -> slots (B, T, K, D); parallel over time, KV-cache `step`.

    Attention maps: "encoder" (B, T, K, M): the last block's inverted-attention weights (softmax over slots,
    summed over heads) on the tokens of each step's own frame.
    """

    def __init__(self, cfg: PSBConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim, self.d_model, self.num_slots = cfg.input_dim, cfg.d_model, cfg.num_slots
        self.input_proj = nn.Linear(cfg.input_dim, cfg.d_model)
        self.init_slots = slot_table(cfg.num_slots, cfg.d_model)  # (K, D), std 1 (official PSB: truncated normal)
        self.layers = nn.ModuleList(PSBBlock(cfg) for _ in range(cfg.num_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def init_state(self, batch_size, device=None, dtype=None) -> PSBState:
        self.check_batch_size(batch_size)
        like = self._param_like(device, dtype)
        h = self.cfg.cross_heads  # the cache holds the cross-attention's keys and values
        p = self.d_model // h
        empty = lambda: torch.zeros(batch_size, h, 0, p, **like)  # noqa: E731
        time = [torch.zeros(batch_size * self.num_slots, 0, self.d_model, **like) for _ in self.layers]
        return PSBState(0, 0, [(empty(), empty()) for _ in self.layers], time)

    def check_state(self, state, batch_size: int, m: int | None = None) -> None:  # the cache grows: its own check
        self._check_state(state, batch_size, m)

    def _check_state(self, state, bsz: int, m: int | None) -> None:
        if not isinstance(state, PSBState) or len(state.kv) != len(self.layers):
            raise ValueError(f"state: expected a PSBState with {len(self.layers)} layers, got {type(state).__name__}")
        k = state.kv[0][0]
        if k.shape[0] != bsz or state.time[0].shape[0] != bsz * self.num_slots:
            raise ValueError(
                f"state: expected batch size {bsz}, got caches {tuple(k.shape)}, {tuple(state.time[0].shape)}"
            )
        if m is not None and k.shape[2] != state.cached_frames * m:
            raise ValueError(f"tokens: expected M={k.shape[2] // max(state.cached_frames, 1)} tokens per frame as in "
                             f"the state's cache, got M={m}")

    def _run(self, tokens: Tensor, state, return_attention: bool) -> SequenceOutput:
        bsz, t, m = tokens.shape[:3]
        state = self.init_state(bsz, tokens.device, tokens.dtype) if state is None else state
        self._check_state(state, bsz, m)
        x = self.input_proj(tokens)  # (B, T, M, D)
        c, window = state.cached_frames, self.cfg.cross_window
        keep = c + t if window == 0 else min(c + t, window - 1)  # frames whose keys/values the next chunk needs
        s = self.init_slots.expand(bsz, t, -1, -1)  # (B, T, K, D): the same initial slots at every step
        kv, time, w = [], [], None
        for layer, (k_past, v_past), time_past in zip(self.layers, state.kv, state.time):
            k_new, v_new = layer.token_kv(x)  # (B, H, T*M, P)
            k, v = torch.cat([k_past, k_new], 2), torch.cat([v_past, v_new], 2)  # (B, H, (C+T)*M, P)
            s, memory, w = layer(s, k, v, c, time_past, return_attention)
            kv.append((k[:, :, (c + t - keep) * m:], v[:, :, (c + t - keep) * m:]))
            time.append(memory)
        maps = {"encoder": w} if return_attention else None  # last block; sums to 1 over slots per token
        return SequenceOutput(self.norm(s), maps, PSBState(state.offset + t, keep, kv, time))
