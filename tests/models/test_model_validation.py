"""Every registered model x every bad input to forward / step / init_state: the error type, and a message naming the
argument. Also the defined answers: `state=None` is a fresh state in every model, float64 models take float64
tokens, autocast's dtype is accepted under autocast."""

import pytest
import torch

from slotssm.models import build_model, list_models

MODELS = list_models()
B, T, M = 2, 3, 4


def tiny(name):
    torch.manual_seed(0)
    return build_model(name, preset="tiny").eval()


def x(model, *shape, dtype=torch.float32):
    return torch.randn(*shape, model.input_dim, dtype=dtype)


def state_of(model, bsz):
    """A state after one frame for batch `bsz` (for models whose state grows, a non-empty one)."""
    with torch.no_grad():
        return model(x(model, bsz, 1, M)).state


# (id, call(model) -> anything, error type, words the message must contain)
CASES = [
    ("forward_tokens_not_tensor", lambda m: m([[1.0]]), TypeError, ["tokens", "torch.Tensor"]),
    ("forward_tokens_int", lambda m: m(torch.ones(B, T, M, m.input_dim, dtype=torch.long)), ValueError,
     ["tokens", "floating-point"]),
    ("forward_tokens_float64", lambda m: m(x(m, B, T, M, dtype=torch.float64)), ValueError,
     ["tokens", "float64", "float32"]),
    ("forward_tokens_rank3", lambda m: m(x(m, B, M)), ValueError, ["tokens", "(B, T, M, D_in)"]),
    ("forward_tokens_width", lambda m: m(torch.randn(B, T, M, m.input_dim + 1)), ValueError, ["tokens", "D_in="]),
    ("forward_batch0", lambda m: m(x(m, 0, T, M)), ValueError, ["tokens", "B, T, M >= 1"]),
    ("forward_time0", lambda m: m(x(m, B, 0, M)), ValueError, ["tokens", "B, T, M >= 1"]),
    ("forward_tokens0", lambda m: m(x(m, B, T, 0)), ValueError, ["tokens", "B, T, M >= 1"]),
    ("forward_state_batch", lambda m: m(x(m, B, T, M), state=state_of(m, B + 1)), ValueError, ["state"]),
    ("forward_state_type", lambda m: m(x(m, B, T, M), state="fresh"), ValueError, ["state"]),
    ("step_tokens_rank4", lambda m: m.step(x(m, B, T, M), None), ValueError, ["tokens_t", "(B, M, D_in)"]),
    ("step_tokens_float64", lambda m: m.step(x(m, B, M, dtype=torch.float64), None), ValueError,
     ["tokens_t", "float64"]),
    ("step_batch0", lambda m: m.step(x(m, 0, M), None), ValueError, ["tokens_t", "B, M >= 1"]),
    ("step_state_batch", lambda m: m.step(x(m, B, M), m.init_state(B + 1)), ValueError, ["state"]),
    ("step_state_grown_batch", lambda m: m.step(x(m, B, M), state_of(m, B + 1)), ValueError, ["state"]),
    ("step_state_type", lambda m: m.step(x(m, B, M), [torch.zeros(3)]), ValueError, ["state"]),
    ("init_state_zero", lambda m: m.init_state(0), ValueError, ["batch_size", ">= 1"]),
    ("init_state_negative", lambda m: m.init_state(-2), ValueError, ["batch_size", ">= 1"]),
    ("init_state_float", lambda m: m.init_state(2.5), ValueError, ["batch_size", "int"]),
]


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("case, call, kind, words", CASES, ids=[c[0] for c in CASES])
def test_bad_input_gets_a_clear_error(name, case, call, kind, words):
    model = tiny(name)
    with pytest.raises(kind) as info:
        with torch.no_grad():
            call(model)
    for word in words:
        assert word in str(info.value), f"{name}/{case}: {word!r} not in {str(info.value)!r}"


@pytest.mark.parametrize("name", MODELS)
def test_state_none_is_a_fresh_state_everywhere(name):
    model = tiny(name)
    frame = x(model, B, M)
    with torch.no_grad():
        a, _ = model.step(frame, None)
        b, _ = model.step(frame, model.init_state(B))
        c = model(frame[:, None], state=None).slots[:, 0]
        d = model(frame[:, None], state=model.init_state(B)).slots[:, 0]
    torch.testing.assert_close(a, b)
    torch.testing.assert_close(c, d)
    torch.testing.assert_close(a, c, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_float64_model_takes_float64_tokens(name):
    model = tiny(name).double()
    with torch.no_grad():
        out = model(x(model, B, 2, M, dtype=torch.float64))
        s, _ = model.step(x(model, B, M, dtype=torch.float64), None)
    assert out.slots.dtype == torch.float64 and s.dtype == torch.float64


@pytest.mark.parametrize("name", MODELS)
def test_autocast_dtype_is_accepted_under_autocast(name):
    model = tiny(name)
    tokens = x(model, B, 2, M, dtype=torch.bfloat16)
    with pytest.raises(ValueError, match="tokens: dtype torch.bfloat16"):
        model(tokens)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(tokens)
    assert torch.isfinite(out.slots.float()).all()
