import pytest
import torch

from slotssm.layers import MLP, CrossAttentionBlock, SelfAttentionBlock, TransformerLayer

B, L, S, D, H = 2, 4, 6, 16, 4


def _all_params_have_grad(module):
    return all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_mlp():
    mlp = MLP(D, hidden_mult=2.0, d_out=5)
    assert mlp(torch.randn(3, 2, D)).shape == (3, 2, 5)
    with pytest.raises(ValueError, match="x:"):
        mlp(torch.randn(3, D + 1))


@pytest.mark.parametrize("mlp", [True, False])
def test_self_attention_block(mlp):
    blk = SelfAttentionBlock(D, H, mlp=mlp)
    x = torch.randn(B, L, D)
    y, maps = blk(x)
    assert y.shape == x.shape and maps is None
    y, maps = blk(x, return_attention=True)
    assert set(maps) == {"self"} and maps["self"].shape == (B, H, L, L)
    y.sum().backward()
    assert _all_params_have_grad(blk)
    assert (blk.mlp is None) == (not mlp)


@pytest.mark.parametrize("inverted", [False, True])
def test_cross_attention_block(inverted):
    blk = CrossAttentionBlock(D, H, d_context=10, inverted=inverted, mlp=True)
    x, ctx = torch.randn(B, L, D), torch.randn(B, S, 10)
    y, maps = blk(x, ctx, return_attention=True)
    assert y.shape == x.shape and maps["cross"].shape == (B, H, L, S)
    y.sum().backward()
    assert _all_params_have_grad(blk)


@pytest.mark.parametrize("cross", [False, True])
def test_transformer_layer(cross):
    layer = TransformerLayer(D, H, cross=cross, d_context=10 if cross else None)
    x, ctx = torch.randn(B, L, D), (torch.randn(B, S, 10) if cross else None)
    y, maps = layer(x, ctx, return_attention=True)
    assert y.shape == x.shape
    assert set(maps) == ({"self", "cross"} if cross else {"self"})
    y.sum().backward()
    assert _all_params_have_grad(layer)


def test_transformer_layer_context_checks():
    with pytest.raises(ValueError, match="context"):
        TransformerLayer(D, H, cross=True)(torch.randn(B, L, D))
    with pytest.raises(ValueError, match="context"):
        TransformerLayer(D, H)(torch.randn(B, L, D), torch.randn(B, S, D))


def test_causal_layer_kv_cache_step_equals_forward():
    """Two causal layers run one step at a time with cached layer inputs == the full causal forward."""
    layers = torch.nn.ModuleList([TransformerLayer(D, H, causal=True) for _ in range(2)]).eval()
    x = torch.randn(B, L, D)
    full = x
    for layer in layers:
        full, _ = layer(full)
    caches = [torch.zeros(B, 0, D) for _ in layers]
    steps = []
    for t in range(L):
        h = x[:, t: t + 1]  # (B, 1, D)
        for i, layer in enumerate(layers):
            caches[i] = torch.cat([caches[i], h], 1)
            h, _ = layer(h, memory=caches[i])
        steps.append(h)
    torch.testing.assert_close(torch.cat(steps, 1), full)


def test_causal_block_ignores_future():
    blk = TransformerLayer(D, H, causal=True)
    x = torch.randn(B, L, D)
    y, _ = blk(x)
    x2 = x.clone()
    x2[:, -1] += 1.0
    y2, _ = blk(x2)
    torch.testing.assert_close(y2[:, :-1], y[:, :-1])


def test_self_block_permutation_equivariant():
    blk = SelfAttentionBlock(D, H)
    x = torch.randn(B, L, D)
    perm = torch.randperm(L)
    torch.testing.assert_close(blk(x[:, perm])[0], blk(x)[0][:, perm])
