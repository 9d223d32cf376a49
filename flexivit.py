"""
FlexiViT: a Vision Transformer whose patch size is an argument of every forward pass.

Paper, Sec. 4 ("Adaptive patch size"): to move from the scaling law of patch size P
to that of patch size Q during training, the model must map f_P to f_Q without
losing what it learnt. FlexiViT (Beyer et al., 2023, "FlexiViT: One model for all
patch sizes") does this by keeping ONE underlying patch-embedding weight at a base
patch size and ONE underlying position-embedding grid, and resizing both on the fly
in each forward pass:

- the patch embedding by PI-resize: with B the linear map that resizes a p x p patch
  to q x q (bilinear by default), the new weight is w_q = pinv(B^T) w_p, so that
  <x, w_p> = <B x, w_q> for every patch x when upsampling (q >= p), and the least
  squares fit of that identity when downsampling;
- the position embedding by bilinear interpolation of the underlying grid.

The underlying parameters never change shape, so an optimizer keeps its state when
the patch size changes, and one model serves every patch size. There is no class
token: the final tokens are averaged (global average pooling), so a forward pass
holds exactly n = (image_size / patch)^2 tokens, as the paper's FLOPs count assumes.
Only square images are supported (the patch must divide the side).

Compute (paper Fig. 2(b)): `macs_per_example(width, depth, tokens)` counts the
multiply-accumulates of the transformer blocks of one forward pass,
L * (12 n d^2 + 2 n^2 d); the paper's "GFLOPs" column is this number / 1e9.

Use:
    >>> import flexivit
    >>> model = flexivit.build("V128-6", image_size=28, in_chans=1, num_classes=10)
    >>> logits = model(images, patch=7)           # images [B, 1, 28, 28]
    >>> model.tokens(7), model.macs(7)            # 16 tokens, MACs of one forward pass

torch.compile: no data-dependent control flow beyond the patch int; the first call at a new patch size builds its
resize matrix outside the graph (one graph break, cached after), later calls compile to one graph per patch size.

Copying: this file needs only torch; drop it into another repository as it is.
"""
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

# name -> (width, depth, heads): the paper's Fig. 2(b) models and small ones for a CPU
SIZES = {
    "V64-4": (64, 4, 2), "V128-6": (128, 6, 4), "V192-6": (192, 6, 3), "V256-6": (256, 6, 8),
    "V192-12": (192, 12, 3), "V256-12": (256, 12, 4), "V384-12": (384, 12, 6),
    "V512-12": (512, 12, 8), "V640-12": (640, 12, 10), "V768-12": (768, 12, 12),
}


def macs_per_example(width, depth, tokens, mlp_dim=None):
    """Multiply-accumulates of one forward pass through the transformer blocks (patch
    embedding and head excluded, as in the paper): per block 4nd^2 for qkv and the output
    projection, 2nd*mlp_dim for the MLP (= 8nd^2 at mlp_dim = 4d) and 2n^2d for the
    attention scores and their weighted sum. A training step costs 3x, 2 FLOPs per MAC."""
    mlp_dim = 4 * width if mlp_dim is None else mlp_dim
    return depth * (4 * tokens * width**2 + 2 * tokens * width * mlp_dim + 2 * tokens**2 * width)


# ----------------------------------------------------------------------------- resizing

_RESIZE_CACHE = {}


def _check_mode(mode):
    if mode not in ("bilinear", "bicubic"):
        raise ValueError(f"resize mode must be 'bilinear' or 'bicubic', got {mode!r}")


def _build_resize_matrix(old, new, mode, antialias, device, dtype):
    # Column j of B is basis patch e_j resized: one batched interpolate of the identity.
    basis = torch.eye(old * old, dtype=torch.float64).reshape(old * old, 1, old, old)
    resized = F.interpolate(basis, size=(new, new), mode=mode, align_corners=False, antialias=antialias)
    B = resized.reshape(old * old, new * new).T                     # [new^2, old^2]: x_new = B x_old
    return torch.linalg.pinv(B.T).to(device=device, dtype=dtype)    # [new^2, old^2]


def resize_matrix(old, new, mode="bilinear", antialias=False, device="cpu", dtype=torch.float32):
    """The PI-resize matrix pinv(B^T) [new*new, old*old], built once per
    (old, new, mode, antialias, device, dtype) and cached; a cache hit returns the same tensor."""
    key = (old, new, mode, antialias, torch.device(device), dtype)
    if key not in _RESIZE_CACHE:
        _check_mode(mode)
        build = torch.compiler.disable(_build_resize_matrix)   # never traced by torch.compile (pinv); wrapped here,
        _RESIZE_CACHE[key] = build(old, new, mode, antialias, torch.device(device), dtype)   # not at import (2 s)
    return _RESIZE_CACHE[key]


def pi_resize(weight, new_patch, *, mode="bilinear", antialias=False):
    """PI-resize a patch-embedding weight [out, in, p, p] to [out, in, q, q], q = new_patch.
    Differentiable in `weight`; the same size returns `weight` itself."""
    out, cin, p, _ = weight.shape
    if new_patch == p:
        return weight
    mat = resize_matrix(p, new_patch, mode, antialias, weight.device, weight.dtype)
    return (weight.reshape(out * cin, p * p) @ mat.T).reshape(out, cin, new_patch, new_patch)


def resize_posemb(posemb, new_grid, mode="bilinear", antialias=False):
    """Resize a channels-last position-embedding grid [1, gh, gw, d] to [1, nh, nw, d]
    (new_grid: an int or (nh, nw)). The same grid returns `posemb` itself."""
    nh, nw = (new_grid, new_grid) if isinstance(new_grid, int) else new_grid
    if posemb.shape[1] == nh and posemb.shape[2] == nw:
        return posemb
    x = F.interpolate(posemb.permute(0, 3, 1, 2), size=(nh, nw), mode=mode, align_corners=False, antialias=antialias)
    return x.permute(0, 2, 3, 1)


def valid_patches(image_size):
    """Patch sizes that divide a square image of side `image_size`."""
    return [p for p in range(1, image_size + 1) if image_size % p == 0]


# ----------------------------------------------------------------------------- model

def attention(q, k, v, impl="auto"):
    """softmax(q k^T / sqrt(head_dim)) v over [B, heads, N, head_dim]: "sdpa" torch's fused kernel, "matmul" two
    products and a softmax; "auto" as measured (bench/bench_attention.py): sdpa on CUDA and in float32 on a CPU,
    matmul under CPU bf16 autocast, where the CPU flash kernel's bf16 backward is 2-3x slower."""
    if impl == "auto":
        impl = "matmul" if q.device.type == "cpu" and torch.is_autocast_enabled("cpu") else "sdpa"
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v)
    if impl != "matmul":
        raise ValueError(f"attention impl must be 'auto', 'sdpa' or 'matmul', got {impl!r}")
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return scores.softmax(-1).to(v.dtype) @ v


class Attention(nn.Module):
    def __init__(self, width, heads, head_dim):
        super().__init__()
        self.heads, self.head_dim, self.impl = heads, head_dim, "auto"   # impl: attention(), set_attention
        self.qkv = nn.Linear(width, 3 * heads * head_dim)   # output [q | k | v], each [heads, head_dim]
        self.proj = nn.Linear(heads * head_dim, width)

    def forward(self, x):
        B, N, _ = x.shape   # heads are read off qkv's shape, so a grown model needs no other change here
        q, k, v = self.qkv(x).view(B, N, 3, -1, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        return self.proj(attention(q, k, v, self.impl).transpose(1, 2).reshape(B, N, -1))   # heads back to width


class Mlp(nn.Module):
    def __init__(self, width, mlp_dim):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(width, mlp_dim), nn.GELU(), nn.Linear(mlp_dim, width)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then x + mlp(norm2(x))."""

    def __init__(self, width, heads, head_dim, mlp_dim, eps=1e-6):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width, eps=eps), Attention(width, heads, head_dim)
        self.norm2, self.mlp = nn.LayerNorm(width, eps=eps), Mlp(width, mlp_dim)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FlexiViT(nn.Module):
    """ViT with a flexible patch size. `forward(x, patch)`: x [B, in_chans, S, S] float images,
    patch an int dividing S. `image_size` is the side used by `tokens`/`macs`/`valid_patches`;
    the forward pass takes any square side that `patch` divides. `patch_sizes` (default: every
    valid patch) is a record of the sizes meant for this model (e.g. FlexiViT's random draw).
    `resize_mode` ('bilinear' | 'bicubic') and `antialias` set the PI-resize of the patch
    embedding; the position embedding is always resized bilinearly, antialiased (see embed())."""

    def __init__(self, image_size=28, in_chans=1, num_classes=10, width=128, depth=6, heads=4,
                 mlp_ratio=4, base_patch=7, posemb_grid=7, patch_sizes=None,
                 resize_mode="bilinear", antialias=False, eps=1e-6):
        super().__init__()
        if min(width, depth, heads, in_chans, num_classes, image_size) < 1:
            raise ValueError(f"width {width}, depth {depth}, heads {heads}, channels {in_chans}, classes "
                             f"{num_classes} and image size {image_size} must all be positive")
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        _check_mode(resize_mode)
        self.image_size, self.in_chans, self.num_classes = image_size, in_chans, num_classes
        self.width, self.depth, self.heads, self.head_dim = width, depth, heads, width // heads
        self.mlp_ratio, self.mlp_dim = mlp_ratio, int(width * mlp_ratio)
        self.base_patch, self.posemb_grid = base_patch, posemb_grid
        self.resize_mode, self.antialias = resize_mode, antialias
        self.patch_sizes = tuple(patch_sizes) if patch_sizes else tuple(valid_patches(image_size))
        for p in self.patch_sizes:
            self._check_patch(image_size, image_size, p)

        self.patch_weight = nn.Parameter(torch.empty(width, in_chans, base_patch, base_patch))
        self.patch_bias = nn.Parameter(torch.zeros(width))
        self.posemb = nn.Parameter(torch.empty(1, posemb_grid, posemb_grid, width))
        self.blocks = nn.ModuleList(Block(width, heads, self.head_dim, self.mlp_dim, eps) for _ in range(depth))
        self.norm = nn.LayerNorm(width, eps=eps)
        self.head = nn.Linear(width, num_classes)
        self.reset_parameters()

    def reset_parameters(self):
        # patch embedding: LeCun normal over the base patch's fan-in (big_vision's conv init)
        fan_in = self.in_chans * self.base_patch**2
        nn.init.trunc_normal_(self.patch_weight, std=1 / math.sqrt(fan_in), a=-2 / math.sqrt(fan_in), b=2 / math.sqrt(fan_in))
        nn.init.zeros_(self.patch_bias)
        nn.init.normal_(self.posemb, std=0.02)
        for m in self.modules():                              # LayerNorms keep torch's gains 1, biases 0
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02, a=-0.04, b=0.04)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.head.weight)

    def model_args(self):
        """kwargs that rebuild the current shape (after any growth, eps included): FlexiViT(**model_args())."""
        return dict(image_size=self.image_size, in_chans=self.in_chans, num_classes=self.num_classes,
                    width=self.width, depth=self.depth, heads=self.heads, mlp_ratio=self.mlp_ratio,
                    base_patch=self.base_patch, posemb_grid=self.posemb_grid, patch_sizes=list(self.patch_sizes),
                    resize_mode=self.resize_mode, antialias=self.antialias, eps=self.norm.eps)

    def set_attention(self, impl):
        """Every block's attention path: "auto" (default), "sdpa" or "matmul" (see attention())."""
        for block in self.blocks:
            block.attn.impl = impl
        return self

    # --- shapes and compute
    def _check_patch(self, h, w, patch):
        if h != w:
            raise ValueError(f"FlexiViT takes square images only; got {h}x{w}")
        if not isinstance(patch, int) or patch < 1 or h % patch:
            raise ValueError(f"patch size {patch!r} does not divide the image size {h}; "
                             f"valid patch sizes: {valid_patches(h)}")

    def tokens(self, patch):
        self._check_patch(self.image_size, self.image_size, patch)
        return (self.image_size // patch) ** 2

    def macs(self, patch):
        """MACs of one forward pass of one example through the blocks at this patch size."""
        return macs_per_example(self.width, self.depth, self.tokens(patch), self.mlp_dim)

    # --- forward
    def embed(self, x, patch):
        """Images [B, C, S, S] -> tokens [B, n, width] (patch embedding + position embedding)."""
        B, C, H, W = x.shape
        self._check_patch(H, W, patch)
        gh, gw = H // patch, W // patch
        w = pi_resize(self.patch_weight, patch, mode=self.resize_mode, antialias=self.antialias)
        # patchify by reshape, then one matmul (faster on CPU than a strided conv, same result)
        x = x.reshape(B, C, gh, patch, gw, patch).permute(0, 2, 4, 1, 3, 5).reshape(B, gh * gw, C * patch * patch)
        x = F.linear(x, w.reshape(w.shape[0], C * patch * patch), self.patch_bias)
        # Antialiased, as big_vision (jax.image.resize) and timm resize position embeddings: when the grid
        # shrinks (posemb_grid 7 -> 2 at patch 14 of 28 px), plain bilinear reads 4 of the 7 rows, so the other
        # rows never train and a later, finer patch (grid 4 at patch 7) reads untrained rows. Antialiasing
        # averages every row into the small grid. Growing the grid, it is plain bilinear (the same numbers).
        return x + resize_posemb(self.posemb, (gh, gw), antialias=True).reshape(1, gh * gw, -1)

    def features(self, x, patch):
        """Pre-logits [B, width]: blocks, final norm, global average pool."""
        x = self.embed(x, patch)
        for block in self.blocks:
            x = block(x)
        return self.norm(x).mean(dim=1)

    def forward(self, x, patch):
        return self.head(self.features(x, patch))


def spec(name):
    """(width, depth, heads) of a model name: a key of SIZES, or any "V{width}-{depth}", whose heads are then
    width // 64 (width // 32 below width 128), i.e. head size 64 (32 for small widths). Allocates nothing."""
    if name in SIZES:
        return SIZES[name]
    m = re.fullmatch(r"V(\d+)-(\d+)", name)
    if not m:
        raise ValueError(f"unknown model {name!r}: use V{{width}}-{{depth}}, e.g. one of {', '.join(SIZES)}")
    width, depth = int(m[1]), int(m[2])
    heads = max(1, width // 64 if width >= 128 else width // 32)
    if min(width, depth) < 1 or width % heads:
        raise ValueError(f"model {name!r}: width and depth must be positive, the width a multiple of {heads} heads")
    return width, depth, heads


def build(name, image_size=28, in_chans=1, num_classes=10, **kw):
    """A FlexiViT by name (spec). Other FlexiViT kwargs (base_patch, posemb_grid, ...) pass through."""
    width, depth, heads = spec(name)
    return FlexiViT(image_size=image_size, in_chans=in_chans, num_classes=num_classes,
                    width=width, depth=depth, heads=heads, **kw)
