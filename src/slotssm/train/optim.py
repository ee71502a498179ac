"""AdamW with parameter groups: weight decay on weight matrices only.

No decay on 1-D parameters (biases, norm gains), on the parameters of normalisation and embedding layers, and on
every parameter tagged with `slotssm.params.no_decay` where it is created: the SSM dynamics (A_log, D, dt_bias),
slot/CLS starts, decoder queries, position tables and attention biases. Tags, not name fragments: a name filter
missed A_log, D, the slot starts, the decoder queries, the position tables and PSB's rel_bias, and decayed them all.
A model may also list parameter names in `no_weight_decay()` (the timm convention).
"""

from __future__ import annotations

import torch
from torch import nn

from slotssm.params import is_no_decay
from slotssm.config import OptimConfig

_NO_DECAY_MODULES = tuple(
    m
    for m in (nn.Embedding, nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase, getattr(nn, "RMSNorm", None))
    if m is not None  # nn.RMSNorm appeared in torch 2.4
)


def split_decay_params(model: nn.Module) -> tuple[list[str], list[str]]:
    """(names with weight decay, names without) over the trainable parameters of `model`."""
    explicit = set(model.no_weight_decay()) if hasattr(model, "no_weight_decay") else set()
    no_decay_ids = set()
    for module in model.modules():
        if isinstance(module, _NO_DECAY_MODULES):
            no_decay_ids.update(id(p) for p in module.parameters(recurse=False))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        skip = p.ndim < 2 or id(p) in no_decay_ids or name in explicit or is_no_decay(p)
        (no_decay if skip else decay).append(name)
    return decay, no_decay


def build_optimizer(model: nn.Module, optim: OptimConfig) -> torch.optim.AdamW:
    """AdamW over `model`'s trainable parameters, two groups: decayed weights and the rest."""
    decay, no_decay = split_decay_params(model)
    params = dict(model.named_parameters())
    groups = [
        {"params": [params[n] for n in decay], "weight_decay": optim.weight_decay},
        {"params": [params[n] for n in no_decay], "weight_decay": 0.0},
    ]
    on_cuda = any(p.is_cuda for p in params.values())
    return torch.optim.AdamW(groups, lr=optim.lr, betas=optim.betas, fused=True if on_cuda else None)
