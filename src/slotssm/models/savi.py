"""SAVi (Kipf et al., ICLR 2022, "Conditional Object-Centric Learning from Video"): predict, then correct, per frame.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, H heads, C conditioning width.

One step on the frame's tokens x (B, M, D_in) and the predicted slots s^ (B, K, D) (the state):
    u = MLP(LN x)                                         token encoder (SAVi's post-CNN MLP), (B, M, D)
    repeat num_iterations times, from s = s^:             corrector = slot attention
        a = softmax_K(q(LN s) . k(LN u))                  inverted attention: slots compete for each token,
        s = GRU(renormalise_M(a) @ v(LN u), s)            then a weighted mean over tokens, GRU update
        s = s + MLP(LN s)
    output s;  next state s^ = Predictor(s)               transformer layers across the slots
The first frame's prior is learned (K, D), or conditional: `init_state(..., conditioning=(B, K, C))` maps, e.g.,
first-frame boxes or positions through an MLP to the initial slots. `forward` computes what `step` computes frame
by frame, with the state-free token MLP run on all frames at once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from slotssm.layers import MLP, InvertedAttention, TransformerLayer
from slotssm.models.base import RecurrentModel, check_heads, check_positive
from slotssm.models.presets import scaled
from slotssm.models.registry import register_model
from slotssm.params import slot_table


@dataclass(frozen=True)
class SAViConfig:
    """Hyper-parameters of SAVi."""

    input_dim: int = 64  # width of the incoming tokens
    d_model: int = 64  # slot width
    num_slots: int = 6  # K
    num_iterations: int = 2  # slot-attention iterations of the corrector per frame
    num_heads: int = 4  # predictor heads
    predictor_layers: int = 1  # transformer layers of the predictor
    mlp_ratio: float = 4.0  # hidden / D of the token, corrector, predictor and conditioning MLPs
    conditioning_dim: int = 0  # C; > 0 adds the conditioning MLP used by init_state(conditioning=...)

    def __post_init__(self):
        check_positive(self, "input_dim", "d_model", "num_slots", "num_iterations", "num_heads", "predictor_layers")
        check_heads(self, "num_heads")
        if self.mlp_ratio <= 0 or self.conditioning_dim < 0:
            raise ValueError(f"mlp_ratio > 0 and conditioning_dim >= 0 expected, got {self.mlp_ratio}, "
                             f"{self.conditioning_dim}")


class Corrector(nn.Module):
    """Slot attention from given slots: slots (B, K, D), tokens u (B, M, D) -> slots (B, K, D), attn (B, K, M)."""

    def __init__(self, d_model: int, num_iterations: int, mlp_ratio: float):
        super().__init__()
        self.num_iterations = num_iterations
        self.norm_slots = nn.LayerNorm(d_model)
        self.norm_tokens = nn.LayerNorm(d_model)
        self.attn = InvertedAttention(d_model, 1)  # one head: softmax over the K slots, renormalised over tokens
        self.gru = nn.GRUCell(d_model, d_model)
        self.norm_mlp = nn.LayerNorm(d_model)
        self.mlp = MLP(d_model, mlp_ratio)

    def forward(self, s: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        bsz, k, d = s.shape
        u = self.norm_tokens(u)  # (B, M, D)
        attn = None
        for _ in range(self.num_iterations):
            upd, attn = self.attn(self.norm_slots(s), u, return_attention=True)  # (B, K, D), (B, 1, K, M)
            s = self.gru(upd.reshape(bsz * k, d), s.reshape(bsz * k, d)).view(bsz, k, d)  # (B, K, D)
            s = s + self.mlp(self.norm_mlp(s))
        return s, attn.squeeze(1)  # attention of the last iteration (B, K, M)


TINY = dict(input_dim=12, d_model=16, num_slots=3, num_heads=2, predictor_layers=2)


# Presets keep SlotSSM's slot width and count at each scale; the predictor depth is what matches SlotSSM's parameter
# count (SAVi's corrector and a one-layer predictor hold about 45% of it).
@register_model("savi", SAViConfig, presets=scaled(TINY, lambda s: s.slots(predictor_layers=5)))
class SAVi(RecurrentModel):
    """SAVi: tokens (B, T, M, D_in) -> corrected slots (B, T, K, D), frame by frame.

    State: the predicted slots for the next frame (B, K, D). Attention maps (return_attention=True): "corrector"
    (B, T, K, M), the last iteration's attention, normalised over slots (sums to 1 over K for every token; also
    under "encoder", the name every model uses for token attention); "predictor" (B, T, H, K, K), the last
    predictor layer's self-attention.
    """

    def __init__(self, cfg: SAViConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim, self.d_model, self.num_slots = cfg.input_dim, cfg.d_model, cfg.num_slots
        d = cfg.d_model
        self.slots_init = slot_table(cfg.num_slots, d)  # (K, D) learned first prior, std 1 (STEVE samples N(mu, sigma))
        self.conditioning = None
        if cfg.conditioning_dim:
            hidden = round(cfg.mlp_ratio * d)
            self.conditioning = nn.Sequential(nn.Linear(cfg.conditioning_dim, hidden), nn.GELU(), nn.Linear(hidden, d))
        self.token_norm = nn.LayerNorm(cfg.input_dim)
        self.token_mlp = MLP(cfg.input_dim, cfg.mlp_ratio * d / cfg.input_dim, d_out=d)  # hidden = mlp_ratio * D
        self.corrector = Corrector(d, cfg.num_iterations, cfg.mlp_ratio)
        self.predictor = nn.ModuleList(
            TransformerLayer(d, cfg.num_heads, mlp_ratio=cfg.mlp_ratio) for _ in range(cfg.predictor_layers)
        )
        self.predictor_norm = nn.LayerNorm(d)  # STEVE's predictor ends in a LayerNorm: the prior keeps its scale

    def init_state(self, batch_size, device=None, dtype=None, conditioning: Tensor | None = None) -> Tensor:
        """The first frame's prior slots (B, K, D): learned, or MLP(conditioning (B, K, C)) when it is given.

        conditioning needs a model built with conditioning_dim = C > 0 (e.g. C = 4 for first-frame boxes, 2 for
        positions); without it a conditional model falls back to the learned slots.
        """
        self.check_batch_size(batch_size)
        if conditioning is None:
            return self.slots_init.to(**self._param_like(device, dtype)).expand(batch_size, -1, -1)
        if self.conditioning is None:
            raise ValueError("conditioning: this model has conditioning_dim=0; build it with conditioning_dim=C > 0")
        want = (batch_size, self.num_slots, self.cfg.conditioning_dim)
        if not isinstance(conditioning, Tensor) or tuple(conditioning.shape) != want:
            got = tuple(conditioning.shape) if isinstance(conditioning, Tensor) else type(conditioning).__name__
            raise ValueError(f"conditioning: expected shape (B, K, C) = {want}, got {got}")
        return self.conditioning(conditioning.to(**self._param_like(device, dtype)))  # (B, K, D)

    encoder_map = "corrector"

    def read(self, tokens: Tensor, return_attention: bool) -> tuple[Tensor, None]:
        """Frames (..., M, D_in) -> token features u (..., M, D), None. Independent of the state."""
        return self.token_mlp(self.token_norm(tokens)), None

    def check_state(self, state, batch_size: int) -> None:
        want = (batch_size, self.num_slots, self.d_model)
        if not isinstance(state, Tensor) or tuple(state.shape) != want:
            raise ValueError(f"state: expected prior slots of shape {want}, got {tuple(getattr(state, 'shape', ()))}")

    def frame(self, u: Tensor, state: Tensor, return_attention: bool):
        """u (B, M, D), prior (B, K, D) -> slots (B, K, D), next prior (B, K, D), maps | None."""
        self.check_state(state, u.shape[0])
        s, attn = self.corrector(state, u)  # (B, K, D), (B, K, M)
        prior, maps = s, None
        for layer in self.predictor:
            prior, maps = layer(prior, return_attention=return_attention)  # (B, K, D)
        prior = self.predictor_norm(prior)
        if return_attention:
            maps = {"corrector": attn, "predictor": maps["self"]}
        return s, prior, maps
