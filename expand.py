"""Growing a transformer during training: width (App. C of the paper) and depth (review discussion).

Sec. 6.1 / App. C of "Navigating Scaling Laws" grow a ViT's width d -> d' mid-training. Every linear
layer W [out, in] becomes

    W' = [[W,  W1],
          [W2, W3]],     W1, W2, W3 ~ N(0, gamma * sigma^2),   sigma^2 = mean(W**2) of the old W

(the old weights stay in the top-left block). Attention grows by concatenating new heads with the head
size fixed (heads' = d' / head_dim); the MLP hidden size grows in proportion (mlp_ratio kept); the
patch embedding, its bias, the position embedding (and a `cls_token` if the model has one) and all
LayerNorms get the new channels (new biases 0, new LayerNorm gains 1; position embedding and
cls token drawn like a matrix). gamma=0 is the zero-init the paper compares against (Fig. 17).
The review discussion adds depth growth (6 -> 12 -> 18 blocks); `expand_depth` inserts blocks.

Usage (the model is changed in place; each expand_* returns a mapping for the optimizer):

    >>> import expand
    >>> mapping = expand.expand_width(model, 128)               # paper's init, gamma=1
    >>> expand.expand_optimizer(optimizer, mapping)             # AdamW moments carried over
    >>> mapping = expand.expand_depth(model, 12, preserve=True) # new blocks start as identities
    >>> expand.expand_optimizer(optimizer, mapping)

`mapping` is a dict {new Parameter: (old Parameter, index)}: `new.data[index]` holds the old values
(index = a tuple of slices / index tensors, one per dimension). For a brand-new parameter (a new
block) index is None and the old Parameter is the neighbour it was copied from (its optimizer param
group is used). Parameters whose shape did not change keep their identity and are not in the mapping.

preserve=True (exactly function preserving, after Gesmundo & Maile 2023). Zero-padding the residual
stream, x' = [x, 0], is NOT exact with LayerNorm: the mean and variance over d' differ from those
over d. Our scheme: every new residual channel carries the per-token MEAN of the old channels,
x' = [x, mu(x), ..., mu(x)]. Then, for every token,
    mean over d' = mu                        (the new channels add (d'-d) * mu)
    var  over d' = (d / d') * var over d     (the new channels sit exactly at the mean)
so LayerNorm_{d'}(x')[:d] = sqrt(d'/d) * LayerNorm_d(x) and LayerNorm_{d'}(x')[d:] = 0 (before the
affine part). We scale the old LayerNorm gains by sqrt(d/d') and eps by d/d' (nn.LayerNorm's `eps`
attribute; the model code needs nothing) and set the new biases to 0: every LayerNorm output is
exactly the old one on the old channels and exactly zero on the new ones. The invariant "new channels
= mean of old channels" is linear, so every layer that WRITES to the residual stream keeps it by
giving each new output row the mean of the old rows (patch embedding and bias, position embedding,
cls token, attn.proj, mlp.fc2); the new heads / MLP units must not write anything, so the new
INPUT columns of attn.proj and mlp.fc2 are zero. Layers that READ the stream (qkv, fc1, head) see
zeros on the new channels, so their new entries can be random (N(0, gamma sigma^2), as in the
paper's mode): they change nothing now but give gradients to the new channels and heads at once.
PI-resize of the patch embedding and the interpolation of the position embedding are linear per
channel, so the growth is exact at every patch size. Caveats: a model rebuilt from a checkpoint
gets the constructor's eps back (a change of order eps, ~1e-6 relative); with gamma=0 and
preserve=True the new heads and MLP units are dead (zero in and zero out): use gamma > 0.

Depth: a new block is a copy of its neighbour (init="copy", "stacking", Gong et al. 2019) or freshly
drawn (init="random": every matrix N(0, gamma sigma^2) with sigma^2 of the neighbour's, biases 0,
norms 1/0). preserve=True zeroes the new block's output layers (attn.proj, mlp.fc2, weights and
biases): a pre-norm residual block then is the identity, exactly. where="end" appends copies of the
last block; where="interleave" spreads the new blocks evenly, each after the block it copies.

Optimizer (`expand_optimizer`): every state tensor shaped like the parameter (AdamW's exp_avg and
exp_avg_sq, SGD's momentum_buffer) is copied into the old slice and zero elsewhere; the step count is
kept; param groups point at the new Parameters; a brand-new parameter gets no state (Adam starts it
fresh, step 0, at its first update). Because the step count is kept, Adam's bias correction is ~1, so
a new entry with zero exp_avg_sq moves ~(1-beta1^t)/sqrt(1-beta2^t), 3 to 6 times lr, in its
first hundred steps t (plain Adam: ~lr). We recommend the trainer re-warm the learning rate for a
short while after growing (e.g. linear warm-up over ~5% of the steps since the start);
`sq_fill="mean"` (new exp_avg_sq entries = the mean of the old ones) is a milder alternative.

Width growth of lm.py's LM (recognised by its layout: embed, blocks with qk/v/proj/gate/up/down) pads the
residual stream with zeros, exact under RMSNorm (see _expand_width_llama; a model rebuilt from a checkpoint
gets the constructor's eps back, a relative change of order eps). Otherwise width growth needs the FlexiViT attribute layout (model.width/heads/head_dim/mlp_dim, patch_weight,
patch_bias, posemb [1, g, g, width], blocks[i].norm1/attn(qkv, proj)/norm2/mlp(fc1, fc2), norm, head);
depth growth needs only `model.blocks` (or `model.layers`) and the names of the blocks' output
layers, which it recognises by layout (OUTPUT_LAYERS: FlexiViT's attn.proj/mlp.fc2, lm.py's proj/down,
Hugging Face's and Meta's Llama) or takes as `zero=`; so it also grows lm.py's LM (train_lm.py's depth
stages): with pre-norm blocks, RMSNorm or LayerNorm, a block whose output layers are zero is the
identity. It also sets `model.depth` where the model has one (lm.LM.model_args() reads len(blocks)).
Imports torch only: copy this file alone.
"""
import copy
import math

import torch
from torch import nn


def _sigma(w):
    """Standard deviation of the paper's new entries' distribution: sqrt(mean of the old W**2)."""
    return w.detach().float().pow(2).mean().sqrt().item()


def _random(shape, std, like):
    if std == 0.0:
        return torch.zeros(shape, dtype=like.dtype, device=like.device)
    return torch.randn(shape, dtype=like.dtype, device=like.device) * std


class _Grower:
    """Replaces parameters by grown copies and records {new: (old, index)}."""

    def __init__(self, d, new_d, gamma, preserve, zero_pad=False):
        self.d, self.new_d, self.gamma, self.preserve = d, new_d, gamma, preserve
        self.zero_pad = zero_pad     # RMSNorm models: new residual channels are 0 (LayerNorm: the mean)
        self.mapping = {}

    def replace(self, module, name, tensor, index):
        old = getattr(module, name)
        if tensor.shape == old.shape:                            # e.g. the head's bias: keep it
            old.copy_(tensor)
            return
        new = nn.Parameter(tensor, requires_grad=old.requires_grad)
        setattr(module, name, new)
        self.mapping[new] = (old, index)

    def matrix(self, w, new_out, new_in, row_index, sections=1, writer=False):
        """Grow w [out, in] to [new_out, new_in]; the old rows land at row_index (old columns first).

        sections > 1 splits the rows into equal parts (qkv: q | k | v), each with its own sigma.
        writer=True marks a layer that writes the residual stream (its rows are residual channels)."""
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
        b = b.detach()
        new = torch.full((new_n,), fill, dtype=b.dtype, device=b.device)
        if self.preserve and writer and not self.zero_pad:
            new[:] = b.mean()
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
        """Grow the last dim (residual channels) of a tensor parameter such as posemb / cls_token."""
        t = getattr(module, name)
        flat = t.detach().reshape(-1, self.d).t()                # [d, rest]: rows = channels
        new = self.matrix(flat, self.new_d, flat.shape[1], slice(0, self.d), writer=True)
        new = new.t().reshape(*t.shape[:-1], self.new_d).contiguous()
        self.replace(module, name, new, (slice(None),) * (t.dim() - 1) + (slice(0, self.d),))

    def norm(self, ln):
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
    """Grow the model's width in place to new_width (App. C); returns {new Parameter: (old, index)}.

    gamma scales the variance of the new entries (gamma=0: zero-init); preserve=True makes the growth
    exactly function preserving (see the module docstring). Heads grow with head_dim fixed; mlp_dim
    grows in proportion (mlp_ratio kept)."""
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
    if _is_llama(model):
        return _expand_width_llama(model, _Grower(d, new_width, float(gamma), preserve, zero_pad=True), new_H,
                                   hd, new_mlp_dim)
    g = _Grower(d, new_width, float(gamma), preserve)

    # Patch embedding [d, C, p, p]: rows = residual channels; position embedding and cls token.
    pw = model.patch_weight
    flat = g.matrix(pw.detach().reshape(d, -1), new_width, pw[0].numel(), slice(0, d), writer=True)
    g.replace(model, "patch_weight", flat.reshape(new_width, *pw.shape[1:]).contiguous(),
              (slice(0, d),))
    if getattr(model, "patch_bias", None) is not None:
        g.replace(model, "patch_bias", g.vector(model.patch_bias, new_width, slice(0, d), writer=True),
                  (slice(0, d),))
    g.channels_last(model, "posemb")
    if isinstance(getattr(model, "cls_token", None), nn.Parameter):
        g.channels_last(model, "cls_token")

    # Old q/k/v rows inside the new qkv output [3, new_H, hd]: sections of heads, head-major.
    qkv_rows = (torch.arange(3)[:, None, None] * new_H * hd + torch.arange(H)[None, :, None] * hd
                + torch.arange(hd)[None, None, :]).flatten().to(pw.device)
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
    """Width growth of lm.py's Llama-style LM. RMSNorm has no mean to subtract, so zero-padding the residual
    stream, x' = [x, 0], is exact: rms over d' = sqrt(d/d') rms over d, which the old gains (x sqrt(d/d')) and
    eps (x d/d') absorb; the new gains are 1, and every writer (the tied embedding's new columns, proj's and
    down's new rows) writes 0 on the new channels. New heads (RoPE acts per head of the same head_dim) and
    MLP units are read in at random and write nothing (proj's and down's new columns 0) with preserve=True."""
    d, H, new_d = g.d, model.heads, g.new_d
    g.channels_last(model.embed, "weight")                   # [vocab, d]: tied, writer and output layer
    model.embed.embedding_dim = new_d
    qk_rows = (torch.arange(2)[:, None, None] * new_H * hd + torch.arange(H)[None, :, None] * hd
               + torch.arange(hd)[None, None, :]).flatten().to(model.embed.weight.device)
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


# The layers of a pre-norm block that write into the residual stream, per known layout (duck typing:
# this file imports no model code). A block whose writers are all zero adds nothing: the identity.
OUTPUT_LAYERS = (("attn.proj", "mlp.fc2"),                  # FlexiViT / timm ViT
                 ("proj", "down"),                          # lm.py's Llama-style Block
                 ("self_attn.o_proj", "mlp.down_proj"),     # Hugging Face Llama
                 ("attention.wo", "feed_forward.w2"))       # Meta's Llama


def output_layers(block):
    """The names of `block`'s output layers, recognised by layout; ValueError for an unknown layout."""
    names = dict(block.named_modules())
    for layout in OUTPUT_LAYERS:
        if all(n in names for n in layout):
            return layout
    raise ValueError(f"{type(block).__name__}: unknown block layout; pass zero=(names of the block's output "
                     f"layers), e.g. {OUTPUT_LAYERS[0]}")


@torch.no_grad()
def expand_depth(model, new_depth, preserve=False, where="end", init="copy", gamma=1.0, zero=None):
    """Insert blocks in place until the model has new_depth blocks; returns {new Parameter: (src, None)}.

    init="copy": a new block is a copy of the block before it; init="random": fresh weights
    N(0, gamma sigma^2) with sigma^2 of that block's. preserve=True zeroes the new blocks' output
    layers (`zero`, names inside a block; None: recognised from the block's layout, OUTPUT_LAYERS) so
    each new block is exactly the identity. new_depth must be a whole number of blocks >= the depth."""
    attr = "blocks" if hasattr(model, "blocks") else "layers"
    blocks = getattr(model, attr)
    depth = len(blocks)
    if isinstance(new_depth, bool) or not isinstance(new_depth, int) or new_depth < depth:
        raise ValueError(f"new_depth={new_depth!r} must be a whole number of blocks >= depth={depth}")
    if preserve and zero is None and depth:
        zero = output_layers(blocks[0])
    if init not in ("copy", "random"):
        raise ValueError(f"init={init!r}: use 'copy' or 'random'")
    counts = _insertions(depth, new_depth - depth, where)
    mapping, new_blocks = {}, []
    for blk, n in zip(blocks, counts):
        new_blocks.append(blk)
        for _ in range(n):
            nb = copy.deepcopy(blk)
            src = dict(blk.named_parameters())
            if init == "random":
                norms = {id(p) for m in nb.modules() if "norm" in type(m).__name__.lower()
                         for p in m.parameters(recurse=False)}
                for name, p in nb.named_parameters():
                    if name.endswith("bias"):
                        p.zero_()
                    elif id(p) in norms:
                        p.fill_(1.0)
                    else:
                        p.copy_(_random(p.shape, math.sqrt(gamma) * _sigma(src[name]), p))
            if preserve:
                for name in zero:
                    try:
                        layer = nb.get_submodule(name)
                    except AttributeError:
                        raise ValueError(f"block has no layer {name!r}; pass zero=(names of the "
                                         f"block's output layers)") from None
                    for p in layer.parameters():
                        p.zero_()
            for name, p in nb.named_parameters():
                p.grad = None
                mapping[p] = (src[name], None)
            new_blocks.append(nb)
    setattr(model, attr, nn.ModuleList(new_blocks))
    if hasattr(model, "depth"):
        model.depth = new_depth
    return mapping


@torch.no_grad()
def expand_optimizer(optimizer, mapping, sq_fill="zero"):
    """Point the optimizer at the grown parameters and carry its state over (see module docstring).

    Per-parameter state tensors are copied into the old slice, zero elsewhere (sq_fill="mean": the
    new entries of exp_avg_sq get the mean of the old ones); scalar state (step) is kept."""
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
            params.extend(n for n, i in by_old.get(p, []) if i is None)
            if not grown:
                continue
            (new, index), = grown
            state = optimizer.state.pop(p, None)
            if state:
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
