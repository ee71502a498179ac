import pytest
import torch

from slotssm.layers import Attention, InvertedAttention

B, L, S, D, H = 2, 5, 7, 16, 4


def _clone_grads(module, *tensors):
    grads = [p.grad.clone() for p in module.parameters()] + [t.grad.clone() for t in tensors]
    module.zero_grad()
    for t in tensors:
        t.grad = None
    return grads


@pytest.mark.parametrize("d_context", [None, 12])
def test_attention_shapes(d_context):
    attn = Attention(D, H, d_context=d_context)
    x = torch.randn(B, L, D)
    ctx = torch.randn(B, S, d_context or D)
    out, w = attn(x, ctx)
    assert out.shape == (B, L, D) and w is None
    out, w = attn(x, ctx, return_attention=True)
    assert w.shape == (B, H, L, S)
    torch.testing.assert_close(w.sum(-1), torch.ones(B, H, L))


def _mask_kwargs(case):
    if case == "none":
        return {}
    if case == "causal":
        return {"causal": True}
    if case == "bias":
        return {"attn_bias": torch.randn(B, 1, L, S)}
    if case == "mask":
        m = torch.rand(1, L, S) > 0.3
        m[..., 0] = True  # every query keeps one key
        return {"attn_mask": m}
    if case == "padding":
        pad = torch.zeros(B, S, dtype=torch.bool)
        pad[0, -2:] = True
        return {"key_padding_mask": pad, "attn_bias": torch.randn(1, H, L, S)}
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["none", "causal", "bias", "mask", "padding"])
def test_sdpa_path_equals_explicit_path(case):
    torch.manual_seed(1)
    attn = Attention(D, H).double()
    s = L if case == "causal" else S
    x = torch.randn(B, L, D, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(B, s, D, dtype=torch.float64, requires_grad=True)
    kw = {k: (v.double() if v.is_floating_point() else v) for k, v in _mask_kwargs(case).items() if k != "causal"}
    if case == "causal":
        kw["causal"] = True
    fast, none = attn(x, ctx, **kw)
    assert none is None
    fast.square().sum().backward()
    g_fast = _clone_grads(attn, x, ctx)
    slow, w = attn(x, ctx, return_attention=True, **kw)
    slow.square().sum().backward()
    g_slow = _clone_grads(attn, x, ctx)
    torch.testing.assert_close(fast, slow)
    for a, b in zip(g_fast, g_slow):
        torch.testing.assert_close(a, b)
    if case == "causal":
        assert (w.triu(1) == 0).all()
    if case == "padding":
        assert (w[0, :, :, -2:] == 0).all()


def test_causal_output_ignores_future():
    attn = Attention(D, H)
    x = torch.randn(B, L, D)
    out, _ = attn(x, causal=True)
    for i in range(L - 1):
        x2 = x.clone()
        x2[:, i + 1:] = torch.randn(B, L - i - 1, D)
        out2, _ = attn(x2, causal=True)
        torch.testing.assert_close(out2[:, : i + 1], out[:, : i + 1])
        assert not torch.allclose(out2[:, i + 1:], out[:, i + 1:])


def test_cached_queries_match_full_causal():
    """q of the last positions against the whole sequence == the same rows of the full causal pass."""
    attn = Attention(D, H)
    x = torch.randn(B, L, D)
    full, _ = attn(x, causal=True)
    last, _ = attn(x[:, -1:], x)  # one query, no mask: KV-cache step
    torch.testing.assert_close(last, full[:, -1:])
    tail, _ = attn(x[:, -3:], x, causal=True)  # three queries, causal mask aligned bottom-right
    torch.testing.assert_close(tail, full[:, -3:])


def test_self_attention_permutation_equivariant():
    attn = Attention(D, H)
    x = torch.randn(B, L, D)
    perm = torch.randperm(L)
    out, _ = attn(x)
    out_p, _ = attn(x[:, perm])
    torch.testing.assert_close(out_p, out[:, perm])


def test_attention_bad_shapes():
    attn = Attention(D, H)
    x = torch.randn(B, L, D)
    with pytest.raises(ValueError, match="x:"):
        attn(torch.randn(B, L, D + 1))
    with pytest.raises(ValueError, match="context:"):
        attn(x, torch.randn(B + 1, S, D))
    with pytest.raises(ValueError, match="attn_bias"):
        attn(x, torch.randn(B, S, D), attn_bias=torch.randn(B, H, S, L))
    with pytest.raises(ValueError, match="attn_bias"):
        attn(x, torch.randn(B, S, D), attn_bias=torch.randn(L, S))  # rank must be 4: no silent broadcast
    with pytest.raises(ValueError, match="attn_mask"):
        attn(x, torch.randn(B, S, D), attn_mask=torch.ones(3, L, S, dtype=torch.bool))
    with pytest.raises(ValueError, match="key_padding_mask"):
        attn(x, torch.randn(B, S, D), key_padding_mask=torch.zeros(B, L, dtype=torch.bool))
    with pytest.raises(ValueError, match="causal"):
        attn(torch.randn(B, S, D), x, causal=True)  # more queries than keys
    with pytest.raises(ValueError, match="num_heads"):
        Attention(10, 3)


def test_inverted_normalisations():
    torch.manual_seed(2)
    inv = InvertedAttention(D, H, d_context=12)
    x, ctx = torch.randn(B, L, D), torch.randn(B, S, 12)
    out, w = inv(x, ctx, return_attention=True)
    assert out.shape == (B, L, D) and w.shape == (B, H, L, S)
    # softmax over heads x queries: sums to 1 for every key
    torch.testing.assert_close(w.sum(dim=(1, 2)), torch.ones(B, S))
    # the renormalised weights (recomputed here) sum to total / (total + eps) over the keys for every query: 1 - 1e-4
    assert inv.eps == 1e-5
    total = w.sum(-1, keepdim=True)
    renorm = w / (total + inv.eps)
    torch.testing.assert_close(renorm.sum(-1, keepdim=True), total / (total + inv.eps))
    torch.testing.assert_close(renorm.sum(-1), torch.ones(B, H, L), atol=1e-4, rtol=0)
    # output == weighted mean of the projected values
    v = inv.v_proj(ctx).view(B, S, H, D // H).transpose(1, 2)  # (B, H, S, P)
    o = (renorm @ v).transpose(1, 2).reshape(B, L, D)
    torch.testing.assert_close(out, inv.out_proj(o))


def test_inverted_mask_gives_no_weight():
    inv = InvertedAttention(D, H)
    x, ctx = torch.randn(B, L, D), torch.randn(B, S, D)
    allowed = torch.rand(B, L, S) > 0.4
    allowed[:, :, 0] = False  # key 0: nobody may see it -> no NaN, no weight
    out, w = inv(x, ctx, attn_mask=allowed, return_attention=True)
    assert torch.isfinite(out).all()
    assert (w.masked_select(~allowed[:, None].expand_as(w)) == 0).all()
    col = w.sum(dim=(1, 2))  # (B, S)
    has_query = allowed.any(1)  # (B, S)
    torch.testing.assert_close(col[has_query], torch.ones_like(col[has_query]))
    assert (col[~has_query] == 0).all()
    # the same via an additive float mask
    additive = torch.zeros(B, L, S).masked_fill(~allowed, float("-inf"))
    out2, w2 = inv(x, ctx, attn_mask=additive, return_attention=True)
    torch.testing.assert_close(out2, out)
    torch.testing.assert_close(w2, w)
    # gradients stay finite with fully masked keys
    x.requires_grad_(True)
    inv(x, ctx, attn_mask=additive)[0].sum().backward()
    assert torch.isfinite(x.grad).all()


def test_inverted_causal_and_padding():
    inv = InvertedAttention(D, H)
    x = torch.randn(B, L, D)
    _, w = inv(x, causal=True, return_attention=True)
    assert (w.triu(1) == 0).all()
    pad = torch.zeros(B, L, dtype=torch.bool)
    pad[1, -1] = True
    _, w = inv(x, key_padding_mask=pad, return_attention=True)
    assert (w[1, ..., -1] == 0).all()


def test_inverted_permutation_equivariant_in_queries():
    inv = InvertedAttention(D, H)
    x, ctx = torch.randn(B, L, D), torch.randn(B, S, D)
    perm = torch.randperm(L)
    out, _ = inv(x, ctx)
    out_p, _ = inv(x[:, perm], ctx)
    torch.testing.assert_close(out_p, out[:, perm])


def test_inverted_gradcheck():
    inv = InvertedAttention(8, 2).double()
    x = torch.randn(1, 3, 8, dtype=torch.float64, requires_grad=True)
    ctx = torch.randn(1, 4, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: inv(a, b)[0], (x, ctx))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_sdpa_path_equals_explicit_path_cuda(dtype):
    attn = Attention(64, 4).cuda().to(dtype)
    x, ctx = torch.randn(2, 9, 64, device="cuda", dtype=dtype), torch.randn(2, 33, 64, device="cuda", dtype=dtype)
    pad = torch.zeros(2, 33, dtype=torch.bool, device="cuda")
    pad[1, -5:] = True
    for kw in ({}, {"key_padding_mask": pad}):
        fast, _ = attn(x, ctx, **kw)
        slow, _ = attn(x, ctx, return_attention=True, **kw)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(fast, slow, atol=tol, rtol=tol)
    y = torch.randn(2, 9, 64, device="cuda", dtype=dtype)
    torch.testing.assert_close(attn(y, causal=True)[0], attn(y, causal=True, return_attention=True)[0],
                               atol=1e-5 if dtype == torch.float32 else 2e-2, rtol=1e-2)
