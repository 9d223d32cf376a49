"""Tests for expand.py: exact function-preserving growth, the paper's App. C init, optimizer carry-over."""
import pytest
import torch
from torch import nn

import expand
from flexivit import FlexiViT

PATCHES = (4, 7, 14)


def trained_like(width=32, depth=2, heads=2, seed=0):
    """A tiny FlexiViT whose weights look trained: no zero head, non-trivial norms and biases."""
    torch.manual_seed(seed)
    model = FlexiViT(image_size=28, width=width, depth=depth, heads=heads)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    return model


def images(n=4, seed=1):
    return torch.randn(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed))


def logits(model, x):
    with torch.no_grad():
        return {p: model(x, p) for p in PATCHES}


def max_change(before, after):
    return max((before[p] - after[p]).abs().max().item() for p in before)


def new_entries(new, index):
    """Boolean mask of the entries of `new` that are not old values."""
    mask = torch.ones(new.shape, dtype=torch.bool)
    mask[index] = False
    return mask


@pytest.mark.parametrize("new_width", [48, 64, 96])
def test_expand_width_preserve_is_exact(new_width):
    model, x = trained_like(), images()
    before = logits(model, x)
    expand.expand_width(model, new_width, preserve=True)
    assert max_change(before, logits(model, x)) < 1e-5
    expand.expand_width(model, new_width + 32, preserve=True)          # grow twice
    assert max_change(before, logits(model, x)) < 1e-5


@pytest.mark.parametrize("where", ["end", "interleave"])
@pytest.mark.parametrize("init", ["copy", "random"])
def test_expand_depth_preserve_is_exact(where, init):
    model, x = trained_like(depth=3), images()
    before = logits(model, x)
    mapping = expand.expand_depth(model, 7, preserve=True, where=where, init=init)
    assert max_change(before, logits(model, x)) < 1e-5
    assert len(model.blocks) == model.depth == 7
    assert len(mapping) == 4 * len(list(model.blocks[0].parameters()))


def test_insertion_plan():
    assert expand._insertions(3, 4, "end") == [0, 0, 4]
    assert expand._insertions(4, 2, "interleave") == [0, 1, 0, 1]
    assert expand._insertions(3, 6, "interleave") == [2, 2, 2]
    with pytest.raises(ValueError, match="where"):
        expand._insertions(3, 1, "middle")


def test_preserve_growth_still_learns():
    """The new channels and heads get gradients at once (nothing is stuck at zero)."""
    model = trained_like()
    expand.expand_width(model, 64, preserve=True)
    model(images(), 7).square().sum().backward()
    blk = model.blocks[0]
    assert blk.attn.proj.weight.grad[:, 32:].abs().sum() > 0                # new heads' outputs
    assert blk.mlp.fc2.weight.grad[:, 128:].abs().sum() > 0                # new MLP units' outputs
    assert model.patch_weight.grad[32:].abs().sum() > 0                    # new residual channels


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0])
def test_expand_width_paper_init(gamma):
    model = trained_like(width=64, heads=2)
    old = {name: p.detach().clone() for name, p in model.named_parameters()}
    mapping = expand.expand_width(model, 128, gamma=gamma)
    named = {p: name for name, p in model.named_parameters()}
    for new, (old_p, index) in mapping.items():
        name = named[new]
        assert torch.equal(new.detach()[index], old[name]), name                # old block unchanged
        if name.endswith("weight") and new.dim() >= 2:
            fresh = new.detach()[new_entries(new, index)]
            sigma2 = old[name].pow(2).mean().item()
            if name.endswith("qkv.weight"):    # per q/k/v section; here the q section's new rows
                sigma2 = old[name][:64].pow(2).mean().item()
                fresh = new.detach()[:128][new_entries(new, index)[:128]]
            if gamma == 0.0:
                assert fresh.abs().max() == 0, name
            elif fresh.numel() > 2000:
                assert fresh.mean().abs() < 0.1 * (gamma * sigma2) ** 0.5, name
                assert abs(fresh.var().item() / (gamma * sigma2) - 1) < 0.1, name
    blk = model.blocks[0]
    assert blk.attn.qkv.weight.shape == (3 * 128, 128) and blk.attn.proj.weight.shape == (128, 128)
    assert blk.mlp.fc1.weight.shape == (512, 128) and blk.mlp.fc2.weight.shape == (128, 512)
    assert model.patch_weight.shape[0] == 128 and model.posemb.shape == (1, 7, 7, 128)
    assert model.head.weight.shape == (10, 128) and blk.norm1.weight.shape == (128,)
    # the q/k/v of the old heads keep their place inside the new [q | k | v] layout
    q_old, k_old, v_old = old["blocks.0.attn.qkv.weight"].view(3, 2, 32, 64).unbind(0)
    q_new, k_new, v_new = blk.attn.qkv.weight.detach().view(3, 4, 32, 128).unbind(0)
    assert torch.equal(k_new[:2, :, :64], k_old) and torch.equal(v_new[:2, :, :64], v_old)


def test_attributes_updated_and_checkpoint_round_trip():
    model = trained_like()
    macs = model.macs(7)
    expand.expand_width(model, 64)
    expand.expand_depth(model, 4, where="interleave")
    assert (model.width, model.heads, model.head_dim, model.mlp_dim, model.depth) == (64, 4, 16, 256, 4)
    assert all(b.attn.heads == 4 and b.attn.head_dim == 16 for b in model.blocks)
    assert model.blocks[0].attn.qkv.in_features == 64 and model.blocks[0].mlp.fc2.in_features == 256
    assert model.blocks[0].norm1.normalized_shape == (64,)
    assert model.macs(7) > 4 * macs
    rebuilt = FlexiViT(**model.model_args())
    rebuilt.load_state_dict(model.state_dict())
    x = images()
    assert torch.equal(rebuilt(x, 7), model(x, 7))


def test_cls_token_grows_if_present():
    model = trained_like()
    model.cls_token = nn.Parameter(torch.randn(1, 1, 32))
    mapping = expand.expand_width(model, 64, preserve=True)
    assert model.cls_token.shape == (1, 1, 64) and model.cls_token in mapping
    old = mapping[model.cls_token][0]
    assert torch.allclose(model.cls_token[..., 32:], old.mean(-1, keepdim=True).expand(1, 1, 32))


def test_bad_arguments():
    model = trained_like()
    with pytest.raises(ValueError, match="head_dim"):
        expand.expand_width(model, 40)
    with pytest.raises(ValueError, match="width"):
        expand.expand_width(model, 16)
    with pytest.raises(ValueError, match="gamma"):
        expand.expand_width(model, 64, gamma=-1)
    with pytest.raises(ValueError, match="new_depth"):
        expand.expand_depth(model, 1)
    with pytest.raises(ValueError, match="zero="):
        expand.expand_depth(model, 3, preserve=True, zero=("attention.wo",))
    assert expand.expand_width(model, 32) == {}


def train_steps(model, opt, n=3):
    for _ in range(n):
        loss = nn.functional.cross_entropy(model(images(8), 7), torch.arange(8) % 10)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return loss.item()


@pytest.mark.parametrize("sq_fill", ["zero", "mean"])
def test_expand_optimizer(sq_fill):
    model = trained_like()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-3)
    train_steps(model, opt)
    before = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}

    mapping = expand.expand_width(model, 64)
    expand.expand_optimizer(opt, mapping, sq_fill=sq_fill)
    mapping2 = expand.expand_depth(model, 3, preserve=True)
    expand.expand_optimizer(opt, mapping2)

    # every parameter of the grown model is in the group it belongs to, no stale ones remain
    assert {id(p) for p in opt.param_groups[0]["params"]} == {id(p) for p in model.parameters() if p.dim() >= 2}
    assert {id(p) for p in opt.param_groups[1]["params"]} == {id(p) for p in model.parameters() if p.dim() < 2}
    assert set(opt.state) <= set(model.parameters())
    for new, (old, index) in mapping.items():
        s, s0 = opt.state[new], before[old]
        assert torch.equal(s["step"], s0["step"])
        for k in ("exp_avg", "exp_avg_sq"):
            assert s[k].shape == new.shape and torch.equal(s[k][index], s0[k])
        mask = new_entries(new, index)
        assert s["exp_avg"][mask].abs().sum() == 0
        fill = s0["exp_avg_sq"].mean() if sq_fill == "mean" else 0.0
        assert torch.allclose(s["exp_avg_sq"][mask], torch.full_like(s["exp_avg_sq"][mask], fill))
    assert all(new not in opt.state for new in mapping2)                  # new blocks start fresh

    loss = train_steps(model, opt, n=2)                                     # steps without error
    assert torch.isfinite(torch.tensor(loss))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert opt.state[model.blocks[2].mlp.fc1.weight]["step"].item() == 2
    opt.load_state_dict(opt.state_dict())                                   # state dict consistent


class _LlamaBlock(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.attention_norm, self.ffn_norm = nn.RMSNorm(d), nn.RMSNorm(d)
        self.wo, self.w1, self.w2 = nn.Linear(d, d, bias=False), nn.Linear(d, 2 * d), nn.Linear(2 * d, d)

    def forward(self, x):
        x = x + self.wo(self.attention_norm(x))
        return x + self.w2(torch.relu(self.w1(self.ffn_norm(x))))


def test_expand_depth_other_layouts():
    """Depth growth needs only `layers`/`blocks` and the output layers' names (e.g. a Llama LM)."""
    torch.manual_seed(0)
    model = nn.Module()
    model.layers = nn.ModuleList(_LlamaBlock(16) for _ in range(2))
    run = lambda x: [x := layer(x) for layer in model.layers][-1]           # noqa: E731
    x = torch.randn(3, 5, 16)
    with torch.no_grad():
        before = run(x)
        expand.expand_depth(model, 4, preserve=True, where="interleave", zero=("wo", "w2"))
        assert len(model.layers) == 4 and torch.equal(run(x), before)
