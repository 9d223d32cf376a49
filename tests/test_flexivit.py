"""flexivit.py: PI-resize, position-embedding resize, shapes, errors, and the compute count
against the paper's Fig. 2(b) and torch's FLOP counter."""
import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import flexivit
from flexivit import FlexiViT, build, macs_per_example, pi_resize, resize_matrix, resize_posemb


@pytest.mark.parametrize("old,new,mode", [(4, 8, "bilinear"), (7, 14, "bilinear"), (3, 7, "bilinear"), (7, 14, "bicubic")])
def test_pi_resize_upsampling_preserves_token_embeddings(old, new, mode):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 3, old, old, generator=g, dtype=torch.float64)   # 5 patches, 3 channels
    w = torch.randn(16, 3, old, old, generator=g, dtype=torch.float64)  # 16 output features
    x_big = F.interpolate(x, size=(new, new), mode=mode, align_corners=False)
    w_big = pi_resize(w, new, mode=mode)
    assert w_big.shape == (16, 3, new, new)
    before = torch.einsum("nchw,dchw->nd", x, w)
    after = torch.einsum("nchw,dchw->nd", x_big, w_big)
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)


def test_pi_resize_downsampling_shape_and_grad():
    w = torch.randn(8, 1, 7, 7, requires_grad=True)
    for antialias in (False, True):
        small = pi_resize(w, 4, antialias=antialias)
        assert small.shape == (8, 1, 4, 4) and torch.isfinite(small).all()
    small.sum().backward()
    assert w.grad is not None and w.grad.shape == w.shape


def test_pi_resize_same_size_is_identity():
    w = torch.randn(4, 2, 5, 5)
    assert pi_resize(w, 5) is w


def test_resize_matrix_is_cached():
    a = resize_matrix(5, 10, "bilinear", False, "cpu", torch.float32)
    b = resize_matrix(5, 10, "bilinear", False, torch.device("cpu"), torch.float32)
    assert a is b and a.shape == (100, 25)
    assert resize_matrix(5, 10, "bicubic", False, "cpu", torch.float32) is not a
    assert resize_matrix(5, 10, "bilinear", False, "cpu", torch.float64).dtype == torch.float64


def test_resize_posemb():
    pe = torch.randn(1, 7, 7, 32)
    assert resize_posemb(pe, 7) is pe
    assert resize_posemb(pe, (7, 7)) is pe
    assert resize_posemb(pe, 4).shape == (1, 4, 4, 32)
    assert resize_posemb(pe, (2, 3)).shape == (1, 2, 3, 32)
    # a constant grid stays constant under bilinear resizing
    const = torch.ones(1, 7, 7, 3) * torch.tensor([1.0, -2.0, 3.0])
    torch.testing.assert_close(resize_posemb(const, 14), torch.ones(1, 14, 14, 3) * torch.tensor([1.0, -2.0, 3.0]))



def test_posemb_trains_every_row_at_a_coarse_patch():
    """Training at patch 14 of 28 px (a 2x2 grid of the 7x7 position embedding) reaches every underlying row, so
    a later switch to a finer patch reads no untrained entry; and growing the grid is plain bilinear."""
    torch.manual_seed(0)
    model = FlexiViT(image_size=28, width=32, depth=1, heads=1, posemb_grid=7)
    model.features(torch.randn(2, 1, 28, 28), 14).square().sum().backward()
    rows = model.posemb.grad.abs().sum(dim=(0, 2, 3))
    assert (rows > 0).all(), rows
    pe = torch.randn(1, 7, 7, 8)
    plain = torch.nn.functional.interpolate(pe.permute(0, 3, 1, 2), size=(14, 14), mode="bilinear",
                                            align_corners=False).permute(0, 2, 3, 1)
    torch.testing.assert_close(resize_posemb(pe, 14, antialias=True), plain)

# Paper Fig. 2(b): name -> (GFLOPs at patch 8, at patch 24), 120 px images, no class token.
FIG2B = {"V256-6": (1.22, 0.120), "V192-12": (1.43, 0.136), "V256-12": (2.44, 0.240), "V384-12": (5.25, 0.538),
         "V512-12": (9.13, 0.953), "V640-12": (14.1, 1.49), "V768-12": (20.1, 2.14)}


@pytest.mark.parametrize("name", list(FIG2B))
def test_macs_reproduce_paper_fig2b(name):
    width, depth, _ = flexivit.SIZES[name]
    for patch, gflops in zip((8, 24), FIG2B[name]):
        macs = macs_per_example(width, depth, (120 // patch) ** 2)
        assert macs / 1e9 == pytest.approx(gflops, rel=0.01), (name, patch, macs / 1e9)


def test_model_macs_matches_formula():
    model = FlexiViT(image_size=120, in_chans=3, width=64, depth=2, heads=2, base_patch=12, posemb_grid=8)
    assert model.tokens(8) == 225
    assert model.macs(8) == macs_per_example(64, 2, 225)


@pytest.mark.parametrize("width,depth,heads,tokens", [(64, 2, 2, 16), (96, 1, 3, 49), (128, 3, 4, 4), (32, 2, 1, 196)])
def test_macs_match_flop_counter(width, depth, heads, tokens):
    model = FlexiViT(width=width, depth=depth, heads=heads)
    x = torch.randn(2, tokens, width)
    # the math backend decomposes attention into matmuls that the counter knows (the fused CPU kernel is not counted)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        for block in model.blocks:
            x = block(x)
    macs = counter.get_total_flops() / 2 / x.shape[0]
    assert macs == pytest.approx(macs_per_example(width, depth, tokens), rel=0.02)


def test_forward_shapes_at_several_patch_sizes():
    torch.manual_seed(0)
    model = FlexiViT(image_size=28, in_chans=1, num_classes=10, width=32, depth=2, heads=2, base_patch=7, posemb_grid=7)
    x = torch.randn(3, 1, 28, 28)
    for patch in (4, 7, 14, 28, 2):
        assert model(x, patch).shape == (3, 10)
        assert model.features(x, patch).shape == (3, 32)
        assert model.embed(x, patch).shape == (3, model.tokens(patch), 32)
    # the underlying parameters keep their shapes
    assert model.patch_weight.shape == (32, 1, 7, 7) and model.posemb.shape == (1, 7, 7, 32)


def test_embed_matches_strided_conv():
    torch.manual_seed(0)
    model = FlexiViT(image_size=24, in_chans=3, width=16, depth=1, heads=2, base_patch=6, posemb_grid=4)
    x = torch.randn(2, 3, 24, 24)
    for patch in (4, 6, 12):
        w = pi_resize(model.patch_weight, patch)
        ref = F.conv2d(x, w, model.patch_bias, stride=patch).flatten(2).transpose(1, 2)
        ref = ref + resize_posemb(model.posemb, 24 // patch, antialias=True).reshape(1, -1, 16)
        torch.testing.assert_close(model.embed(x, patch), ref, rtol=1e-5, atol=1e-5)


def test_gradients_reach_underlying_parameters():
    model = FlexiViT(width=32, depth=1, heads=2)
    torch.nn.init.normal_(model.head.weight, std=0.1)   # the head starts at zero
    model(torch.randn(2, 1, 28, 28), 4).sum().backward()
    assert model.patch_weight.grad.abs().sum() > 0 and model.posemb.grad.abs().sum() > 0


def test_bad_patch_raises_listing_valid_sizes():
    model = FlexiViT(width=32, depth=1, heads=2)
    with pytest.raises(ValueError, match=r"valid patch sizes: \[1, 2, 4, 7, 14, 28\]"):
        model(torch.randn(1, 1, 28, 28), 5)
    with pytest.raises(ValueError, match="valid patch sizes"):
        model.tokens(3)
    with pytest.raises(ValueError, match="square"):
        model(torch.randn(1, 1, 28, 14), 7)
    with pytest.raises(ValueError, match="valid patch sizes"):
        FlexiViT(width=32, depth=1, heads=2, patch_sizes=[7, 5])
    assert flexivit.valid_patches(model.image_size) == [1, 2, 4, 7, 14, 28]
    assert flexivit.valid_patches(120)[-3:] == [40, 60, 120]


def test_build_by_name():
    model = build("V64-4")
    assert (model.width, model.depth, model.heads, model.head_dim, model.mlp_dim) == (64, 4, 2, 32, 256)
    model = build("V192-6", image_size=120, in_chans=3, num_classes=5, base_patch=12, posemb_grid=8)
    assert model.heads == 3 and model.head_dim == 64 and model.patch_weight.shape == (192, 3, 12, 12)
    assert model.head.weight.shape == (5, 192) and model.tokens(8) == 225
    assert build("V96-2").heads == 3 and build("V320-1").heads == 5
    with pytest.raises(ValueError, match="unknown model"):
        build("ViT-B/16")


def test_model_args_rebuild_same_state():
    model = build("V64-4", base_patch=4, posemb_grid=5)
    torch.nn.init.normal_(model.head.weight)
    copy = FlexiViT(**model.model_args())
    copy.load_state_dict(model.state_dict())
    x = torch.randn(2, 1, 28, 28)
    torch.testing.assert_close(copy(x, 7), model(x, 7))


def test_layout_for_expand():
    model = build("V64-4")
    block = model.blocks[0]
    assert block.attn.qkv.weight.shape == (3 * 64, 64) and block.attn.proj.weight.shape == (64, 64)
    assert block.mlp.fc1.weight.shape == (256, 64) and block.norm1.eps == 1e-6
    assert model.patch_bias.shape == (64,) and model.head.weight.shape == (10, 64)
