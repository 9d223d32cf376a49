"""Growing a trained transformer: width (Sec. 6.1, App. C of the paper) and depth (the review discussion).

Width d -> d'. Every linear layer W [out, in] becomes

    W' = [[W,  W1],
          [W2, W3]],     W1, W2, W3 ~ N(0, gamma sigma^2),   sigma^2 = mean(W**2) of the old W

(gamma=0: the zero-init of Fig. 17). Attention gains heads of the same size (heads' = d' / head_dim), the
MLP grows in proportion (mlp_ratio kept); the patch embedding and its bias, the position embedding (and a
cls_token) and every LayerNorm gain the new channels (biases 0, gains 1, embeddings drawn like a matrix).

preserve=True: exactly function preserving (after Gesmundo & Maile 2023). Zero-padding, x' = [x, 0], is not
exact under LayerNorm; so every new channel carries the per-token mean of the old ones, x' = [x, mu, .., mu]:

    mean_d'(x') = mu,   var_d'(x') = (d/d') var_d(x)   =>   LN_d'(x')[:d] = sqrt(d'/d) LN_d(x),   LN_d'(x')[d:] = 0

(before the affine part): old gains x sqrt(d/d') and eps x d/d' restore every LayerNorm's output, 0 on the new
channels. The invariant is linear: each layer that WRITES the residual stream (patch embedding and bias,
posemb, cls token, attn.proj, mlp.fc2) gives its new rows the mean of its old rows; new heads / MLP units write
nothing (zero new columns of attn.proj, mlp.fc2). Readers (qkv, fc1, head) see zeros on the new channels, so
their new entries stay random: no change now, gradients at once. PI-resize and posemb interpolation are linear
per channel: exact at every patch size. gamma=0 leaves the new heads dead. FlexiViT's model_args() carry the
scaled eps, so a model rebuilt from a checkpoint is the grown one. lm.py's LM (RMSNorm) pads with zeros instead.

Depth. A new block copies the block before it (init="copy", stacking, Gong et al. 2019) or is drawn afresh
(init="random"); preserve=True zeroes its output layers: a pre-norm residual block is then the identity.

Optimizer. Each state tensor shaped like its parameter (AdamW's exp_avg, exp_avg_sq) is copied into the old
slice, zero elsewhere (sq_fill="mean": new exp_avg_sq = mean of the old); the step is kept, so Adam's bias
correction is ~1 and a new entry moves ~(1-beta1^t)/sqrt(1-beta2^t), 3-6x lr, over its first hundred steps:
re-warm the LR briefly (~5% of the steps so far). A new block's parameters start without state.

    >>> mapping = expand.expand_width(model, 128)               # the paper's init, gamma=1
    >>> expand.expand_optimizer(optimizer, mapping)             # AdamW moments carried over
    >>> expand.expand_optimizer(optimizer, expand.expand_depth(model, 12, preserve=True))

The model changes in place; a mapping is {new Parameter: (old Parameter, index)}, new.data[index] = old
(index None: a new block's parameter, old = its source); unchanged parameters keep their identity. Width
needs FlexiViT's attributes (width/heads/head_dim/mlp_dim, patch_weight, posemb [1, g, g, width], blocks of
norm1/attn.qkv/attn.proj/norm2/mlp.fc1/mlp.fc2, norm, head) or lm.py's; depth only model.blocks (or .layers).
Imports torch only: copy this file alone.
"""
import copy
import math

import torch
from torch import nn


def _sigma(w):
    return w.detach().float().pow(2).mean().sqrt().item()


def _random(shape, std, like):
    """N(0, std^2) entries; std 0 draws nothing (zeros, the random stream untouched)."""
    kw = dict(dtype=like.dtype, device=like.device)
    return torch.zeros(shape, **kw) if std == 0.0 else torch.randn(shape, **kw) * std


def _head_rows(parts, heads, new_heads, head_dim, device):
    """Where the old rows land in a grown fused projection [parts, new_heads, head_dim] (qkv: parts q | k | v)."""
    return (torch.arange(parts)[:, None, None] * new_heads * head_dim + torch.arange(heads)[None, :, None] * head_dim
            + torch.arange(head_dim)[None, None, :]).flatten().to(device)


class _Grower:
    """Replaces parameters by grown copies (App. C's W') and records {new: (old, index)}."""

    def __init__(self, d, new_d, gamma, preserve, zero_pad=False):
        self.d, self.new_d, self.gamma, self.preserve = d, new_d, gamma, preserve
        self.zero_pad, self.mapping = zero_pad, {}     # zero_pad (RMSNorm): new residual channels 0, not the mean

    def replace(self, module, name, tensor, index):
        old = getattr(module, name)
        if tensor.shape == old.shape:                            # e.g. the head's bias: keep it
            old.copy_(tensor)
            return
        new = nn.Parameter(tensor, requires_grad=old.requires_grad)
        setattr(module, name, new)
        self.mapping[new] = (old, index)

    def matrix(self, w, new_out, new_in, row_index, sections=1, writer=False):
        """W [out, in] -> W' [new_out, new_in], the old W at (row_index, :in), new entries N(0, gamma sigma^2);
        `sections` equal row blocks (qkv) each with its own sigma. writer: its rows are residual channels."""
        w = w.detach()
        out, inp = w.shape
        k, nk = out // sections, new_out // sections
        new = torch.cat([_random((nk, new_in), math.sqrt(self.gamma) * _sigma(w[s * k:(s + 1) * k]), w)
                         for s in range(sections)])
        if self.preserve and writer:
            new[:, inp:] = 0.0                                   # new heads / units write nothing
            new[self.d:, :inp] = 0.0 if self.zero_pad else w.mean(0)   # new channels = 0 / mean of old
        new[row_index, :inp] = w
        return new

    def vector(self, b, new_n, index, writer=False, fill=0.0):
        """Grow a bias-like vector: new entries `fill` (0), or the mean of the old ones for a writer."""
        b, mean = b.detach(), self.preserve and writer and not self.zero_pad
        new = torch.full((new_n,), b.mean().item() if mean else fill, dtype=b.dtype, device=b.device)
        new[index] = b
        return new

    def linear(self, lin, new_out, new_in, row_index=None, sections=1, writer=False):
        out, inp = lin.weight.shape
        row_index = slice(0, out) if row_index is None else row_index
        self.replace(lin, "weight", self.matrix(lin.weight, new_out, new_in, row_index, sections, writer),
                     (row_index, slice(0, inp)))
        if lin.bias is not None:
            self.replace(lin, "bias", self.vector(lin.bias, new_out, row_index, writer), (row_index,))
        lin.in_features, lin.out_features = new_in, new_out

    def channels_last(self, module, name):
        """Grow the last dim (residual channels) of a tensor such as posemb / cls_token: a writer."""
        t = getattr(module, name)
        flat = t.detach().reshape(-1, self.d).t()                # [d, rest]: rows = channels
        new = self.matrix(flat, self.new_d, flat.shape[1], slice(0, self.d), writer=True)
        new = new.t().reshape(*t.shape[:-1], self.new_d).contiguous()
        self.replace(module, name, new, (slice(None),) * (t.dim() - 1) + (slice(0, self.d),))

    def norm(self, ln):
        """New gains 1, biases 0; preserve: old gains x sqrt(d/d'), eps x d/d' (the module docstring)."""
        rms = "rmsnorm" in type(ln).__name__.lower()
        if self.preserve and not (isinstance(ln, nn.LayerNorm) or (rms and self.zero_pad)):
            raise ValueError(f"preserve=True needs nn.LayerNorm (or RMSNorm in a Llama-style LM), got {type(ln).__name__}")
        idx = slice(0, self.d)
        if getattr(ln, "weight", None) is not None:
            w = ln.weight.detach() * (math.sqrt(self.d / self.new_d) if self.preserve else 1.0)
            self.replace(ln, "weight", self.vector(w, self.new_d, idx, fill=1.0), (idx,))
        if getattr(ln, "bias", None) is not None:
            self.replace(ln, "bias", self.vector(ln.bias, self.new_d, idx), (idx,))
        if self.preserve and getattr(ln, "eps", None) is not None:
            ln.eps = ln.eps * self.d / self.new_d
        if hasattr(ln, "normalized_shape"):
            ln.normalized_shape = (self.new_d,)


@torch.no_grad()
def expand_width(model, new_width, gamma=1.0, preserve=False):
    """Grow the model's width in place to new_width (App. C, the module docstring); returns {new: (old, index)}."""
    d, H, M = model.width, model.heads, model.mlp_dim
    hd = getattr(model, "head_dim", None) or d // H            # lm.py's LM keeps heads, not head_dim
    if new_width < d or new_width % hd:
        raise ValueError(f"new_width={new_width} must be >= width={d} and a multiple of "
                         f"head_dim={hd} (the head size stays fixed)")
    if (M * new_width) % d:
        raise ValueError(f"mlp_dim={M} * new_width={new_width} / width={d} is not an integer; "
                         f"pick a new_width that keeps mlp_ratio")
    new_mlp_dim = M * new_width // d
    if new_width == d:
        return {}
    if gamma < 0:
        raise ValueError(f"gamma={gamma} must be >= 0")
    new_H = new_width // hd
    g = _Grower(d, new_width, float(gamma), preserve, zero_pad=_is_llama(model))
    if g.zero_pad:
        return _expand_width_llama(model, g, new_H, hd, new_mlp_dim)
    pw = model.patch_weight                                      # [d, C, p, p]: rows = residual channels
    flat = g.matrix(pw.detach().reshape(d, -1), new_width, pw[0].numel(), slice(0, d), writer=True)
    g.replace(model, "patch_weight", flat.reshape(new_width, *pw.shape[1:]).contiguous(), (slice(0, d),))
    if getattr(model, "patch_bias", None) is not None:
        g.replace(model, "patch_bias", g.vector(model.patch_bias, new_width, slice(0, d), writer=True), (slice(0, d),))
    g.channels_last(model, "posemb")
    if isinstance(getattr(model, "cls_token", None), nn.Parameter):
        g.channels_last(model, "cls_token")
    qkv_rows = _head_rows(3, H, new_H, hd, pw.device)
    for blk in model.blocks:
        g.norm(blk.norm1)
        g.linear(blk.attn.qkv, 3 * new_H * hd, new_width, qkv_rows, sections=3)
        g.linear(blk.attn.proj, new_width, new_H * hd, writer=True)
        blk.attn.heads = new_H
        g.norm(blk.norm2)
        g.linear(blk.mlp.fc1, new_mlp_dim, new_width)
        g.linear(blk.mlp.fc2, new_width, new_mlp_dim, writer=True)
    g.norm(model.norm)
    g.linear(model.head, model.head.weight.shape[0], new_width)
    model.width, model.heads, model.mlp_dim = new_width, new_H, new_mlp_dim
    return g.mapping


def _is_llama(model):
    """lm.py's layout: a tied `embed`, blocks with qk (q|k rows), v, proj, gate, up, down, norm1, norm2."""
    return hasattr(model, "embed") and all(hasattr(model.blocks[0], n) for n in ("qk", "v", "proj", "gate", "up", "down"))


def _expand_width_llama(model, g, new_H, hd, new_mlp_dim):
    """Width growth of lm.py's LM. RMSNorm subtracts no mean, so zero-padding x' = [x, 0] is exact:
    rms_d'(x') = sqrt(d/d') rms_d(x), absorbed by the old gains (x sqrt(d/d')) and eps (x d/d'); every writer
    (the tied embedding's new columns, proj's and down's new rows) writes 0 on the new channels. New heads
    (RoPE acts per head) and MLP units are read at random and, with preserve=True, write nothing."""
    H, new_d = model.heads, g.new_d
    g.channels_last(model.embed, "weight")                   # [vocab, d]: tied, writer and output layer
    model.embed.embedding_dim = new_d
    qk_rows = _head_rows(2, H, new_H, hd, model.embed.weight.device)
    for blk in model.blocks:
        g.norm(blk.norm1)
        g.linear(blk.qk, 2 * new_H * hd, new_d, qk_rows, sections=2)
        g.linear(blk.v, new_H * hd, new_d)
        g.linear(blk.proj, new_d, new_H * hd, writer=True)
        g.norm(blk.norm2)
        g.linear(blk.gate, new_mlp_dim, new_d)
        g.linear(blk.up, new_mlp_dim, new_d)
        g.linear(blk.down, new_d, new_mlp_dim, writer=True)
        blk.heads = new_H
    g.norm(model.norm)
    model.width, model.heads, model.mlp_dim = new_d, new_H, new_mlp_dim
    return g.mapping


def _insertions(depth, new, where):
    """How many new blocks follow each old block."""
    if where == "end":
        return [0] * (depth - 1) + [new]
    if where == "interleave":
        return [((i + 1) * new) // depth - (i * new) // depth for i in range(depth)]
    raise ValueError(f"where={where!r}: use 'end' or 'interleave'")


# A pre-norm block's layers that write the residual stream, per known layout: all zero, the block is the identity.
OUTPUT_LAYERS = (("attn.proj", "mlp.fc2"),                  # FlexiViT / timm ViT
                 ("proj", "down"),                          # lm.py's Llama-style Block
                 ("self_attn.o_proj", "mlp.down_proj"),     # Hugging Face Llama
                 ("attention.wo", "feed_forward.w2"))       # Meta's Llama


def output_layers(block):
    names = dict(block.named_modules())
    if layout := next((lo for lo in OUTPUT_LAYERS if all(n in names for n in lo)), None):
        return layout
    raise ValueError(f"{type(block).__name__}: unknown block layout; pass zero=(names of the block's output "
                     f"layers), e.g. {OUTPUT_LAYERS[0]}")


def _new_block(blk, init, gamma, zero, mapping):
    """A copy of `blk` (init="random": matrices redrawn N(0, gamma sigma^2) with its sigma, norms 1, biases 0),
    the layers named in `zero` zeroed; its parameters recorded in `mapping` as {new: (blk's, None)}."""
    nb, src = copy.deepcopy(blk), dict(blk.named_parameters())
    if init == "random":
        norms = {id(p) for m in nb.modules() if "norm" in type(m).__name__.lower() for p in m.parameters(recurse=False)}
        for name, p in nb.named_parameters():
            if name.endswith("bias"):
                p.zero_()
            elif id(p) in norms:
                p.fill_(1.0)
            else:
                p.copy_(_random(p.shape, math.sqrt(gamma) * _sigma(src[name]), p))
    for name in zero:
        try:
            layer = nb.get_submodule(name)
        except AttributeError:
            raise ValueError(f"block has no layer {name!r}; pass zero=(names of the block's output layers)") from None
        for p in layer.parameters():
            p.zero_()
    for name, p in nb.named_parameters():
        p.grad = None
        mapping[p] = (src[name], None)
    return nb


@torch.no_grad()
def expand_depth(model, new_depth, preserve=False, where="end", init="copy", gamma=1.0, zero=None):
    """Insert blocks in place up to new_depth, each after the block it copies (`init`), all after the last block
    (where="end") or spread evenly ("interleave"); preserve=True zeroes their layers named in `zero` (None:
    OUTPUT_LAYERS by layout), so each is the identity. Returns {new Parameter: (src, None)}."""
    blocks = getattr(model, attr := "blocks" if hasattr(model, "blocks") else "layers")
    depth = len(blocks)
    if isinstance(new_depth, bool) or not isinstance(new_depth, int) or new_depth < depth:
        raise ValueError(f"new_depth={new_depth!r} must be a whole number of blocks >= depth={depth}")
    if preserve and zero is None and depth:
        zero = output_layers(blocks[0])
    if init not in ("copy", "random"):
        raise ValueError(f"init={init!r}: use 'copy' or 'random'")
    mapping, new_blocks = {}, []
    for blk, n in zip(blocks, _insertions(depth, new_depth - depth, where)):
        new_blocks += [blk] + [_new_block(blk, init, gamma, zero if preserve else (), mapping) for _ in range(n)]
    setattr(model, attr, nn.ModuleList(new_blocks))
    if hasattr(model, "depth"):
        model.depth = new_depth
    return mapping


@torch.no_grad()
def expand_optimizer(optimizer, mapping, sq_fill="zero"):
    """Point the optimizer at the grown parameters, its state carried over (App. C, the module docstring)."""
    if sq_fill not in ("zero", "mean"):
        raise ValueError(f"sq_fill={sq_fill!r}: use 'zero' or 'mean'")
    by_old = {}
    for new, (old, index) in mapping.items():
        by_old.setdefault(old, []).append((new, index))
    for group in optimizer.param_groups:
        params = []
        for p in group["params"]:
            grown = [(n, i) for n, i in by_old.get(p, []) if i is not None]
            params.extend([n for n, _ in grown] or [p])
            params.extend(n for n, i in by_old.get(p, []) if i is None)     # new blocks join their source's group
            if grown and (state := optimizer.state.pop(p, None)):
                (new, index), = grown
                optimizer.state[new] = {k: _grow_state(k, v, p, new, index, sq_fill) for k, v in state.items()}
        group["params"] = params
    return optimizer


def _grow_state(key, value, old, new, index, sq_fill):
    if not torch.is_tensor(value) or value.dim() == 0:
        return value                                             # step count etc.: kept
    if value.shape != old.shape:
        raise ValueError(f"cannot grow optimizer state {key!r} of shape {tuple(value.shape)} "
                         f"(parameter shape {tuple(old.shape)})")
    fill = value.mean().item() if (key == "exp_avg_sq" and sq_fill == "mean") else 0.0
    grown = torch.full(new.shape, fill, dtype=value.dtype, device=value.device)
    grown[index] = value
    return grown
