"""The SequenceModel interface: tokens (B, T, M, D_in) -> slots (B, T, K, D), in parallel or step by step.

Legend: B batch, T time, K slots, M tokens per frame, D model width, D_in token width, H heads.

Every model implements
    forward(tokens, *, state=None, return_attention=False) -> SequenceOutput    # the whole sequence (training)
    init_state(batch_size, device=None, dtype=None) -> state                    # before the first frame
    step(tokens_t, state) -> (slots_t, state)                                   # one frame (inference)
and `step` run T times equals `forward` to float tolerance (tested for every registered model). `forward` also
takes a state and returns the state after its last frame, so a long video can be processed in chunks.

Three skeletons own `forward`/`step` once each; a model subclasses one and writes only what is its own:
    LayerStackModel   input projection -> layers, each with its own recurrent state -> LayerNorm
                      (SlotSSM, OC-SlotSSM, the single-state SSMs)
    CachedModel       forward and step are one `_run` over new frames that appends to a KV cache
                      (the transformers, PSB)
    RecurrentModel    read every frame at once (the state-free part), then loop a frame update over time
                      (SlotRNN, RIM, SAVi)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from slotssm.arrays import check_float


@dataclass
class SequenceOutput:
    """slots (B, T, K, D); attention: named maps (e.g. "encoder" (B, T, K, M)) when asked; state after the last frame."""

    slots: Tensor
    attention: dict[str, Tensor] | None = None
    state: Any = None


class SequenceModel(nn.Module):
    """Base class: the input checks shared by every sequence model. Subclasses set `input_dim`, `d_model`, `num_slots`.

    Every public entry point starts with them: `check_tokens` (forward), `check_step_tokens` (step),
    `check_batch_size` (init_state) and `check_state` for a given state; `state=None` means a fresh state
    (`init_state`) in `forward` and `step` of every model. Tokens must be in the parameters' dtype (under autocast,
    also in autocast's dtype) and on their device, with batch size B >= 1. NaN in the tokens is not checked: it
    propagates as in any torch module.
    """

    input_dim: int
    d_model: int
    num_slots: int  # slots of the output (K of the last layer)

    def check_tokens(self, tokens: Tensor, name: str = "tokens") -> None:
        """tokens must be float (B, T, M, D_in) with B, T, M >= 1, D_in == input_dim, in the parameters' dtype."""
        self._check_token_shape(tokens, name, "B, T, M")

    def check_step_tokens(self, tokens_t: Tensor, name: str = "tokens_t") -> None:
        """tokens_t must be float (B, M, D_in) with B, M >= 1, D_in == input_dim, in the parameters' dtype."""
        self._check_token_shape(tokens_t, name, "B, M")

    def check_batch_size(self, batch_size, name: str = "batch_size") -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {batch_size!r}")

    def check_state(self, state: Any, batch_size: int) -> None:
        """`state` must have the structure and shapes of `init_state(batch_size)`; the message names the part.

        Models whose state grows with time (KV caches) check their own.
        """
        want = self.init_state(batch_size, device="meta")
        _check_like(state, want, "state", batch_size, self._allowed_dtypes(None))

    def begin_step(self, tokens_t: Tensor, state: Any) -> Any:
        """Checks at the start of `step`; returns the state to use (a fresh one for None)."""
        self.check_step_tokens(tokens_t)
        if state is None:
            return self.init_state(tokens_t.shape[0], tokens_t.device, tokens_t.dtype)
        self.check_state(state, tokens_t.shape[0])
        return state

    def begin_forward(self, tokens: Tensor, state: Any) -> None:
        """Checks at the start of `forward`: the tokens, and the state when one is given."""
        self.check_tokens(tokens)
        if state is not None:
            self.check_state(state, tokens.shape[0])

    def forward(self, tokens: Tensor, *, state: Any = None, return_attention: bool = False) -> SequenceOutput:
        raise NotImplementedError

    def init_state(self, batch_size: int, device=None, dtype=None) -> Any:
        raise NotImplementedError

    def step(self, tokens_t: Tensor, state: Any) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def _param_like(self, device=None, dtype=None) -> dict:
        p = next(self.parameters())
        return dict(device=device or p.device, dtype=dtype or p.dtype)

    def _allowed_dtypes(self, device: torch.device | None) -> set:
        p = next(self.parameters())
        device_type = (device or p.device).type
        allowed = {p.dtype}
        if device_type in ("cpu", "cuda") and torch.is_autocast_enabled(device_type):
            allowed.add(torch.get_autocast_dtype(device_type))
        return allowed

    def _check_token_shape(self, x, name: str, axes: str) -> None:
        """x (axes..., D_in): every axis named in `axes` ("B, T, M" or "B, M") >= 1, D_in == input_dim."""
        legend = f"({axes}, D_in)"
        self._check_tensor(x, name, legend)
        if x.dim() != len(axes.split(", ")) + 1 or x.shape[-1] != self.input_dim or 0 in x.shape[:-1]:
            raise ValueError(
                f"{name}: expected shape {legend} with {axes} >= 1 and D_in={self.input_dim}, got {tuple(x.shape)}"
            )

    def _check_tensor(self, x, name: str, legend: str) -> None:
        check_float(name, x, legend)
        p = next(self.parameters())
        if x.device != p.device:
            raise ValueError(f"{name}: on device {x.device}, but the model's parameters are on {p.device}")
        if x.dtype not in self._allowed_dtypes(x.device):
            raise ValueError(
                f"{name}: dtype {x.dtype} does not match the model's parameters ({p.dtype}); "
                f"cast the input with .to({p.dtype}) or the model with .to({x.dtype})"
            )


def check_positive(config: Any, *names: str) -> None:
    """Config check most models share: each named field of `config` is >= 1 (the error names the first that is not)."""
    for name in names:
        if getattr(config, name) < 1:
            raise ValueError(f"{name}: expected >= 1, got {getattr(config, name)}")


def check_heads(config: Any, *names: str) -> None:
    """Config check most models share: each named head count divides `config.d_model`."""
    for name in names:
        if config.d_model % getattr(config, name):
            raise ValueError(f"{name}: must divide d_model={config.d_model}, got {getattr(config, name)}")


def _check_like(got: Any, want: Any, path: str, batch_size: int, dtypes: set) -> None:
    """Compare a state with a template of the same structure: tuples/lists by type and length, tensors by shape."""
    if isinstance(want, Tensor):
        if not isinstance(got, Tensor):
            raise ValueError(f"{path}: expected a tensor of shape {tuple(want.shape)}, got {type(got).__name__}")
        if got.shape != want.shape:
            raise ValueError(
                f"{path}: expected shape {tuple(want.shape)} (batch size {batch_size}, as the tokens), "
                f"got {tuple(got.shape)}"
            )
        if got.is_floating_point() and got.dtype not in dtypes:
            raise ValueError(f"{path}: dtype {got.dtype} does not match the model's parameters ({sorted(map(str, dtypes))})")
    elif isinstance(want, (tuple, list)):
        named = hasattr(want, "_fields")  # a NamedTuple state (SSMState, RIMState, ...): its own type
        same_kind = isinstance(got, type(want)) if named else isinstance(got, (tuple, list))
        if not same_kind or len(got) != len(want):
            if named:
                what = f"a {type(want).__name__} ({', '.join(want._fields)})"
            else:
                items = {"Tensor" if isinstance(w, Tensor) else type(w).__name__ for w in want}
                what = f"a list of {len(want)} {'tensors' if items == {'Tensor'} else '/'.join(sorted(items)) + 's'}"
            got_len = f" of length {len(got)}" if isinstance(got, (tuple, list)) else ""
            raise ValueError(f"{path}: expected {what} (from init_state), got {type(got).__name__}{got_len}")
        names = getattr(want, "_fields", None)
        for i, (g, w) in enumerate(zip(got, want)):
            _check_like(g, w, f"{path}.{names[i]}" if names else f"{path}[{i}]", batch_size, dtypes)
    elif want is None and got is not None:
        raise ValueError(f"{path}: expected None (from init_state), got {type(got).__name__}")


def run_steps(model: SequenceModel, tokens: Tensor, state: Any = None) -> tuple[Tensor, Any]:
    """Apply `model.step` frame by frame: tokens (B, T, M, D_in) -> slots (B, T, K, D), final state."""
    slots = []
    for tokens_t in tokens.unbind(1):
        s, state = model.step(tokens_t, state)
        slots.append(s)
    return torch.stack(slots, dim=1), state


class LayerStackModel(SequenceModel):
    """tokens -> `input_proj` -> `layers` -> `norm`; the state is a list with one entry per layer.

    A subclass builds `input_proj` (D_in -> D), `layers` and `norm`. Every layer has
    `forward(s, x, state, return_attention) -> (s, state, maps | None)` on s (B, T, K_in, D) | None (first layer)
    and x (B, T, M, D); `step(s_t, x_t, state) -> (s_t, state)`; `init_state(batch_size, device, dtype)`; and
    `reads_tokens` (its "encoder" map is over the frame's tokens). Attention maps: each layer's under "<name><i>",
    "encoder" of the last layer that reads tokens and "mixer" of the last layer (where it has one).
    """

    def init_state(self, batch_size, device=None, dtype=None) -> list:
        self.check_batch_size(batch_size)
        return [layer.init_state(batch_size, device, dtype) for layer in self.layers]

    def forward(self, tokens, *, state=None, return_attention=False) -> SequenceOutput:
        self.begin_forward(tokens, state)
        x = self.input_proj(tokens)  # (B, T, M, D)
        s, states, maps = None, [], {}
        for i, layer in enumerate(self.layers):
            s, st, m = layer(s, x, None if state is None else state[i], return_attention)  # (B, T, K, D)
            states.append(st)
            if m is not None:
                maps.update({f"{k}{i}": v for k, v in m.items() if v is not None})
        if return_attention:
            last = len(self.layers) - 1
            maps["encoder"] = next(maps[f"encoder{i}"] for i in reversed(range(last + 1)) if self.layers[i].reads_tokens)
            if f"mixer{last}" in maps:
                maps["mixer"] = maps[f"mixer{last}"]
        return SequenceOutput(self.norm(s), maps if return_attention else None, states)

    def step(self, tokens_t, state):
        state = self.begin_step(tokens_t, state)
        x = self.input_proj(tokens_t)  # (B, M, D)
        s, new = None, []
        for layer, st in zip(self.layers, state):
            s, st = layer.step(s, x, st)  # (B, K, D)
            new.append(st)
        return self.norm(s), new


class CachedModel(SequenceModel):
    """`forward` and `step` over one `_run(tokens (B, T, M, D_in), state | None, return_attention) -> SequenceOutput`
    that reads and extends a KV cache, so `step` is `_run` on one frame and chunked == whole."""

    def _run(self, tokens: Tensor, state: Any, return_attention: bool) -> SequenceOutput:
        raise NotImplementedError

    def forward(self, tokens, *, state=None, return_attention=False) -> SequenceOutput:
        self.check_tokens(tokens)
        return self._run(tokens, state, return_attention)

    def step(self, tokens_t, state):
        self.check_step_tokens(tokens_t)
        out = self._run(tokens_t[:, None], state, False)  # one frame: (B, 1, M, D_in)
        return out.slots[:, 0], out.state


class RecurrentModel(SequenceModel):
    """Inherently sequential: `read` every frame at once (what does not depend on the state), then `frame` in a loop.

    A subclass writes `read(tokens (..., M, D_in), return_attention) -> (features, maps | None)`, the features a
    tensor or a tuple of tensors with the tokens' leading axes (time on axis 1 in `forward`), and
    `frame(features_t, state, return_attention) -> (slots_t (B, K, D), state, maps | None)`. Per-frame maps are
    stacked on axis 1; `encoder_map` names the one that is also returned as "encoder".
    """

    encoder_map: ClassVar[str] = "encoder"

    def read(self, tokens: Tensor, return_attention: bool) -> tuple[Any, dict | None]:
        raise NotImplementedError

    def frame(self, features_t: Any, state: Any, return_attention: bool) -> tuple[Tensor, Any, dict | None]:
        raise NotImplementedError

    def step(self, tokens_t, state):
        state = self.begin_step(tokens_t, state)
        features, _ = self.read(tokens_t, False)
        slots, state, _ = self.frame(features, state, False)
        return slots, state

    def forward(self, tokens, *, state=None, return_attention=False) -> SequenceOutput:
        """Same as `step` frame by frame; `read` runs on all frames in one batch."""
        self.begin_forward(tokens, state)
        features, read_maps = self.read(tokens, return_attention)
        if state is None:
            state = self.init_state(tokens.shape[0], tokens.device, tokens.dtype)
        per_frame = features.unbind(1) if isinstance(features, Tensor) else zip(*(f.unbind(1) for f in features))
        slots, maps = [], []
        for f in per_frame:
            s, state, m = self.frame(f, state, return_attention)  # (B, K, D)
            slots.append(s)
            maps.append(m)
        stacked = None
        if return_attention:
            stacked = {**(read_maps or {}), **{k: torch.stack([m[k] for m in maps], 1) for k in maps[0]}}  # (B, T, ...)
            stacked["encoder"] = stacked[self.encoder_map]
        return SequenceOutput(torch.stack(slots, 1), stacked, state)
