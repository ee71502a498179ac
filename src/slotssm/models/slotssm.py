"""SlotSSM and OC-SlotSSM (paper §4-§5): K slot states, each with its own (weight-shared) SSM, mixed by attention.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, H heads.

One layer on slots s (B, T, K, D) (paper eqs. 11-13):
    s = SlotEncoder(CLS, tokens | previous slots)   where the layer has one (first layer, or where K changes)
    s = s + InvertedAttn(LN s, LN tokens)           OC-SlotSSM (eqs. 14-16): every layer; first layer's s = CLS
    s = s + SSM(LN s  as (B*K, T, D))               time: each slot alone, weights shared by all slots
    s = s + SelfAttn(LN s  as (B*T, K, D))          space: the slot mixer, slots meet once per step (eq. 9)
    s = s + MLP(LN s)                               (eq. 10)
"""

from __future__ import annotations

from dataclasses import dataclass

from einops import rearrange
from torch import Tensor, nn

from slotssm.layers import CrossAttentionBlock
from slotssm.models.base import LayerStackModel
from slotssm.models.components import SlotEncoder, SlotMixer, frame_maps
from slotssm.models.presets import Scale, scaled
from slotssm.models.registry import register_model
from slotssm.params import slot_table
from slotssm.ssm import build_ssm


@dataclass(frozen=True)
class SlotSSMConfig:
    """Hyper-parameters of SlotSSM / OC-SlotSSM (paper Table 2 names in comments)."""

    input_dim: int = 64  # width of the incoming tokens
    d_model: int = 64  # slot width
    num_slots: int = 6  # K (of every layer unless layer_slots is given)
    num_layers: int = 2
    layer_slots: tuple[int, ...] = ()  # per-layer K, e.g. (6, 6, 4); empty = num_slots everywhere
    num_heads: int = 4
    # OC-SlotSSM's inverted attention: the softmax runs jointly over heads x slots, so H heads split each token's
    # weight H ways and weaken the slots' competition; the official SlotSSMs / PSB / SAVi code uses one head.
    inverted_heads: int = 1
    encoder: str = "self_cross"  # "self_cross" (SlotSSM) | "inverted" (OC-SlotSSM)
    encoder_layers: int = 3  # depth of the self+cross slot encoder
    ssm: str = "mamba"  # "mamba" (Mamba1) | "mamba2"
    d_state: int = 16
    d_conv: int = 4
    expand: float = 2.0
    headdim: int = 16  # Mamba2 head width
    # The SSM's starting step sizes, log-uniform in this range: mamba_ssm's (0.001, 0.1). A smaller range starts
    # with slower decay (longer memory), for contexts longer than the default's ~1 / (dt * A) steps.
    dt_range: tuple[float, float] = (0.001, 0.1)
    mlp_ratio: float = 4.0
    dropout: float = 0.0
    impl: str = "auto"  # scan implementation (slotssm.ssm.kernels)

    def __post_init__(self):
        if self.encoder not in ("self_cross", "inverted"):
            raise ValueError(f"encoder: expected 'self_cross' or 'inverted', got {self.encoder!r}")
        if self.ssm not in ("mamba", "mamba2"):
            raise ValueError(f"ssm: expected 'mamba' or 'mamba2', got {self.ssm!r}")
        if self.layer_slots and len(self.layer_slots) != self.num_layers:
            raise ValueError(f"layer_slots: expected {self.num_layers} entries (num_layers), got {self.layer_slots}")
        if self.inverted_heads < 1 or self.d_model % self.inverted_heads:
            raise ValueError(f"inverted_heads: expected a divisor of d_model={self.d_model}, got {self.inverted_heads}")
        if min(self.slots_per_layer) < 1 or self.num_layers < 1:
            raise ValueError(f"num_slots / num_layers must be >= 1, got {self.slots_per_layer}")
        if self.encoder == "inverted" and len(set(self.slots_per_layer)) > 1:
            raise ValueError(f"layer_slots: OC-SlotSSM keeps one slot count through its layers, got {self.layer_slots}")

    @property
    def slots_per_layer(self) -> tuple[int, ...]:
        return tuple(self.layer_slots) or (self.num_slots,) * self.num_layers


class SlotSSMLayer(nn.Module):
    """One SlotSSM layer. Slots (B, T, K_in, D) [+ tokens (B, T, M, D)] -> slots (B, T, K, D)."""

    def __init__(self, cfg: SlotSSMConfig, num_slots: int, first: bool, changes_count: bool):
        super().__init__()
        d, h = cfg.d_model, cfg.num_heads
        self.inverted = cfg.encoder == "inverted"
        self.encoder = None
        self.cls = None
        if self.inverted:
            self.encoder = CrossAttentionBlock(d, cfg.inverted_heads, inverted=True)
            if first:
                self.cls = slot_table(num_slots, d)  # (K, D) first layer's queries, std 1
        elif first or changes_count:
            self.encoder = SlotEncoder(d, num_slots, h, cfg.encoder_layers if first else 1, cfg.mlp_ratio)
        self.reads_tokens = self.inverted or first
        self.norm_ssm = nn.LayerNorm(d)
        self.ssm = build_ssm(cfg.ssm, d, d_state=cfg.d_state, d_conv=cfg.d_conv, expand=cfg.expand,
                             headdim=cfg.headdim, dt_range=tuple(cfg.dt_range), impl=cfg.impl)
        self.mixer = SlotMixer(d, h, cfg.mlp_ratio, cfg.dropout)
        self.num_slots = num_slots

    def init_state(self, batch_size, device=None, dtype=None):
        return self.ssm.init_state(batch_size * self.num_slots, device, dtype)  # one state per slot: batch B*K

    def encode(self, s: Tensor | None, tokens: Tensor | None, return_attention: bool):
        """Per frame: s (B', K_in, D) | None, tokens (B', M, D) -> s (B', K, D), attention (B', K, M | K_in)."""
        if self.encoder is None:
            return s, None
        if self.inverted:
            q = self.cls.expand(tokens.shape[0], -1, -1) if self.cls is not None else s
            out, maps = self.encoder(q, tokens, return_attention=return_attention)
            # The softmax runs jointly over heads x slots: summed over heads, each token's weights sum to 1 over slots.
            return out, (maps["cross"].sum(1) if return_attention else None)
        return self.encoder(tokens if self.reads_tokens else s, return_attention)

    def forward(self, s, tokens, state=None, return_attention=False):
        """s (B, T, K_in, D) | None, tokens (B, T, M, D) -> s (B, T, K, D), state, maps."""
        bsz, t = tokens.shape[:2]
        flat = lambda x: None if x is None else rearrange(x, "b t k d -> (b t) k d")  # noqa: E731
        s, enc_attn = self.encode(flat(s), flat(tokens), return_attention)  # (B*T, K, D)
        s = rearrange(s, "(b t) k d -> (b k) t d", b=bsz)  # each slot alone in time
        y, state = self.ssm(self.norm_ssm(s), state)
        s = rearrange(s + y, "(b k) t d -> (b t) k d", b=bsz)  # slots of one frame together
        s, mix_attn = self.mixer(s, return_attention)
        maps = frame_maps(bsz, encoder=enc_attn, mixer=mix_attn) if return_attention else None
        return rearrange(s, "(b t) k d -> b t k d", b=bsz), state, maps

    def step(self, s, tokens_t, state):
        """s (B, K_in, D) | None, tokens_t (B, M, D) -> s (B, K, D), state."""
        bsz = tokens_t.shape[0]
        s, _ = self.encode(s, tokens_t, False)  # (B, K, D)
        y, state = self.ssm.step(self.norm_ssm(s).reshape(bsz * self.num_slots, -1), state)  # (B*K, D)
        s, _ = self.mixer(s + y.view_as(s))
        return s, state


TINY = dict(input_dim=12, d_model=16, num_slots=3, num_layers=2, num_heads=2, d_state=4, expand=1.5, encoder_layers=1)


def own_size(s: Scale) -> dict:
    """A scale (models/presets.py) is SlotSSM's own size: its D, K and expand. The rest is the config's defaults,
    which are Table 2's (state size 16, 4 heads, a 3-layer slot encoder)."""
    return s.slots(expand=s.expand)


@register_model("slotssm", SlotSSMConfig, presets=scaled(TINY, own_size))
# OC-SlotSSM (Table 2, MOVi column): inverted attention at every layer.
@register_model("oc_slotssm", SlotSSMConfig, presets=scaled({**TINY, "encoder": "inverted"}, own_size),
                defaults=dict(encoder="inverted"))
class SlotSSM(LayerStackModel):
    """SlotSSM (encoder="self_cross") or OC-SlotSSM (encoder="inverted"). tokens (B, T, M, D_in) -> (B, T, K, D)."""

    def __init__(self, cfg: SlotSSMConfig):
        super().__init__()
        self.cfg = cfg
        self.input_dim, self.d_model = cfg.input_dim, cfg.d_model
        ks = cfg.slots_per_layer
        self.num_slots = ks[-1]
        self.input_proj = nn.Linear(cfg.input_dim, cfg.d_model)
        self.layers = nn.ModuleList(
            SlotSSMLayer(cfg, k, first=i == 0, changes_count=i > 0 and k != ks[i - 1]) for i, k in enumerate(ks)
        )
        self.norm = nn.LayerNorm(cfg.d_model)
