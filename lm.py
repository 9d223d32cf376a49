"""A Llama-style language model whose context length may change during training (paper Sec. 5, App. B.5).

Pre-norm decoder blocks: RMSNorm -> causal attention with RoPE -> RMSNorm -> SwiGLU MLP (hidden
`mlp_dim`, 4*width by default); no biases; a final RMSNorm; embeddings TIED to the output layer. With
width 768, depth 12, a 32000-token vocabulary and SwiGLU hidden 4d the model has exactly the
137,841,408 parameters of App. B.5, so that is the paper's model. RoPE rotates channel pairs (2j, 2j+1)
as complex numbers (Meta's layout; Hugging Face's rotate-half is a permutation of q, k rows away); its
tables are sized for the largest context a run will use, so a context switch touches no parameter.

Compute (Sec. 3, as for the ViT): a token's forward pass through the blocks costs, in
multiply-accumulates, `macs_per_token(width, depth, mlp_dim, T) = depth * (4 d^2 + 3 d h + 2 T d)`:
q, k, v and output projections, the three SwiGLU matrices, and the scores Q K^T and A V (causal
counted as full). Embedding and output layer (d * vocab MACs a token) are excluded, as the ViT's patch
embedding and head are; a training token costs 6x (forward + backward, 2 FLOPs a MAC).

    >>> import lm
    >>> model = lm.LM(**lm.model_args("L128-4", vocab_size=256, max_context=512))
    >>> logits = model(tokens)                   # tokens [B, T] int64, any T <= max_context
    >>> model.macs_per_token(T)                  # MACs of one token's forward pass at context T

Attention path (`attention()`): torch's fused kernel on CUDA and in float32 on a CPU; under CPU bf16 autocast two
products and a masked softmax, whose backward is faster there than the flash kernel's (bench/bench_attention.py).

Copying: this file needs only torch; drop it into another repository as it is.
"""
import math
import re

import torch
import torch.nn as nn
import torch.nn.functional as F

PRESETS = ("L64-4", "L128-4", "L128-6", "L192-6", "L256-6", "L384-6", "L512-8", "L768-12")


def model_args(name, vocab_size, max_context):
    """'L{width}-{depth}' -> LM's keyword arguments; head size 32 below width 256, 64 from 256 on."""
    m = re.fullmatch(r"L(\d+)-(\d+)", name)
    head_dim = 32 if m and int(m[1]) < 256 else 64
    if not m or int(m[1]) < head_dim or int(m[1]) % head_dim or int(m[2]) < 1:
        raise ValueError(f"--model {name!r}: expected L<width>-<depth> with width a positive multiple of 32 "
                         f"(64 from 256 on) and depth >= 1, e.g. one of {', '.join(PRESETS)}")
    width, depth = int(m[1]), int(m[2])
    return dict(vocab_size=vocab_size, width=width, depth=depth, heads=width // head_dim,
                mlp_dim=4 * width, max_context=max_context)


def macs_per_token(width, depth, mlp_dim, context):                 # the module docstring's count
    return depth * (4 * width**2 + 3 * width * mlp_dim + 2 * context * width)


def rope_freqs(head_dim, max_context, theta=10000.0):
    """(cos, sin) of position * theta^(-2j/head_dim): [max_context, 1, head_dim/2, 2]."""
    inv_freq = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(max_context).float(), inv_freq)
    return torch.stack([angles.cos(), angles.sin()], dim=-1)[:, None]


def apply_rope(x, freqs):
    """Rotate x [B, T, heads, head_dim] by position: channel pairs (2j, 2j+1) as complex numbers."""
    xr = x.float().unflatten(-1, (-1, 2))
    if torch.compiler.is_compiling():   # inductor has no complex kernels: the same product in real numbers
        (a, b), (cos, sin) = xr.unbind(-1), freqs.unbind(-1)
        return torch.stack([a * cos - b * sin, b * cos + a * sin], dim=-1).flatten(-2).type_as(x)
    rotated = torch.view_as_complex(xr) * torch.view_as_complex(freqs)    # eager: one kernel each way
    return torch.view_as_real(rotated).flatten(-2).type_as(x)


def attention(q, k, v, impl="auto"):
    """Causal softmax(q k^T / sqrt(d)) v over [B, heads, T, d]; impl "auto", "sdpa" or "matmul" (module docstring)."""
    if impl == "auto":
        impl = "matmul" if q.device.type == "cpu" and torch.is_autocast_enabled("cpu") else "sdpa"
    if impl == "sdpa":
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if impl != "matmul":
        raise ValueError(f"attention impl must be 'auto', 'sdpa' or 'matmul', got {impl!r}")
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    future = torch.ones(scores.shape[-2:], dtype=torch.bool, device=q.device).triu(1)   # [T, T]: j > i is masked
    return scores.masked_fill(future, float("-inf")).softmax(-1).to(v.dtype) @ v


class Block(nn.Module):
    def __init__(self, width, heads, mlp_dim):
        super().__init__()
        self.heads, self.head_dim, self.impl = heads, width // heads, "auto"
        self.norm1, self.norm2 = nn.RMSNorm(width, eps=1e-6), nn.RMSNorm(width, eps=1e-6)
        self.qk = nn.Linear(width, 2 * width, bias=False)   # [q | k], each [heads, head_dim]: one RoPE call
        self.v, self.proj = nn.Linear(width, width, bias=False), nn.Linear(width, width, bias=False)
        self.gate = nn.Linear(width, mlp_dim, bias=False)   # separate matrices run faster on CPU than a
        self.up = nn.Linear(width, mlp_dim, bias=False)     # fused one (no strided halves, no cat in backward)
        self.down = nn.Linear(mlp_dim, width, bias=False)

    def forward(self, x, freqs):
        B, T, C = x.shape
        h = self.norm1(x)
        qk = apply_rope(self.qk(h).view(B, T, 2 * self.heads, self.head_dim), freqs)
        q, k = qk.transpose(1, 2).split(self.heads, dim=1)       # [B, heads, T, head_dim]
        v = self.v(h).view(B, T, self.heads, self.head_dim).transpose(1, 2)
        x = x + self.proj(attention(q, k, v, self.impl).transpose(1, 2).reshape(B, T, C))
        h = self.norm2(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


class LM(nn.Module):
    def __init__(self, vocab_size=256, width=128, depth=4, heads=4, mlp_dim=512, max_context=256):
        super().__init__()
        self.vocab_size, self.heads = vocab_size, heads
        self.width, self.depth, self.mlp_dim, self.max_context = width, depth, mlp_dim, max_context
        self.embed = nn.Embedding(vocab_size, width)              # tied: also the output layer
        self.blocks = nn.ModuleList(Block(width, heads, mlp_dim) for _ in range(depth))
        self.norm = nn.RMSNorm(width, eps=1e-6)
        self.register_buffer("freqs", rope_freqs(width // heads, max_context), persistent=False)
        for name, p in ((n, p) for n, p in self.named_parameters() if p.dim() == 2):    # GPT-2 init
            nn.init.normal_(p, std=0.02 / math.sqrt(2 * depth if name.endswith(("proj.weight", "down.weight")) else 1))

    def model_args(self):
        """kwargs that rebuild a model of the current shape (after any growth): LM(**model_args())."""
        return dict(vocab_size=self.vocab_size, width=self.width, depth=len(self.blocks), heads=self.heads,
                    mlp_dim=self.mlp_dim, max_context=self.max_context)

    def set_attention(self, impl):
        """Every block's attention path: "auto" (default), "sdpa" or "matmul"."""
        for block in self.blocks:
            block.impl = impl
        return self

    def forward(self, idx):
        T = idx.shape[1]
        if T > self.max_context:
            raise ValueError(f"context {T} exceeds the model's RoPE tables ({self.max_context})")
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.freqs[:T])
        return F.linear(self.norm(x), self.embed.weight)

    def macs_per_token(self, context):
        return macs_per_token(self.width, len(self.blocks), self.mlp_dim, context)
