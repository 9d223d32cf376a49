"""Training throughput of lm.py's model (train_lm.py's) against Hugging Face's LlamaForCausalLM (Sec. 5's model).

Both models get the identical configuration: same width, depth, heads, SwiGLU hidden size (4*width),
vocabulary 256, tied embeddings, no biases, RMSNorm eps 1e-6, RoPE theta 1e4, SDPA attention, float32 on
the CPU, the same batch and context, the same loss code and the same AdamW. The weights of ours are
copied into Hugging Face's model and the logits compared first, so the two compute the same function.
Timed repeats alternate between the two in one process; the medians are reported, and the median of
the ratios of adjacent repeats, which is robust to other load on the machine drifting over the run.

    .venv-bench/bin/python bench/bench_lm_speed.py                       # needs `transformers`
    .venv-bench/bin/python bench/bench_lm_speed.py --model L256-6 --context 128 --threads 2
"""
import os
import statistics
import sys
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from lm import LM, model_args  # noqa: E402


@dataclass
class Config:
    model: str = "L128-4"  # Model size, as train_lm.py's --model.
    context: int = 128  # Context length.
    tokens_per_step: int = 4096  # Tokens per training step (batch = tokens_per_step // context).
    steps: int = 2  # Timed training steps per repeat.
    repeats: int = 15  # Repeats per model, interleaved (the order alternates each repeat).
    threads: int = 0  # CPU threads (0 = torch's default).


def hf_llama(ours, args):
    """Hugging Face's LlamaForCausalLM with our configuration and our weights."""
    from transformers import LlamaConfig, LlamaForCausalLM
    d, h = args["width"], args["mlp_dim"]
    config = LlamaConfig(vocab_size=args["vocab_size"], hidden_size=d, intermediate_size=h,
                         num_hidden_layers=args["depth"], num_attention_heads=args["heads"],
                         num_key_value_heads=args["heads"], max_position_embeddings=args["max_context"],
                         rms_norm_eps=1e-6, rope_theta=10000.0, tie_word_embeddings=True, attention_bias=False,
                         mlp_bias=False, hidden_act="silu", attention_dropout=0.0)
    config._attn_implementation = "sdpa"
    hf = LlamaForCausalLM(config).float()
    with torch.no_grad():
        hf.model.embed_tokens.weight.copy_(ours.embed.weight)
        hf.model.norm.weight.copy_(ours.norm.weight)
        for b, layer in zip(ours.blocks, hf.model.layers):
            # our RoPE pairs channels (2i, 2i+1) of a head, Hugging Face's (i, i + head_dim/2): permute rows
            q, k = (w.view(args["heads"], -1, 2, d).transpose(1, 2).reshape(d, d) for w in b.qk.weight.chunk(2))
            a, m = layer.self_attn, layer.mlp
            for dst, src in [(a.q_proj, q), (a.k_proj, k), (a.v_proj, b.v.weight), (a.o_proj, b.proj.weight),
                             (m.gate_proj, b.gate.weight), (m.up_proj, b.up.weight), (m.down_proj, b.down.weight),
                             (layer.input_layernorm, b.norm1.weight), (layer.post_attention_layernorm, b.norm2.weight)]:
                dst.weight.copy_(src)
    return hf


def train_steps(model, logits_of, opt, x, y, steps):
    t = time.perf_counter()
    for _ in range(steps):
        loss = F.cross_entropy(logits_of(model, x).flatten(0, 1), y.flatten())
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps * x.numel() / (time.perf_counter() - t)


def main(cfg: Config):
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    torch.manual_seed(0)
    args = model_args(cfg.model, 256, cfg.context)
    ours = LM(**args)
    hf = hf_llama(ours, args)
    batch = cfg.tokens_per_step // cfg.context
    x = torch.randint(0, 256, (batch, cfg.context))
    y = torch.randint(0, 256, (batch, cfg.context))
    with torch.no_grad():
        diff = (ours(x[:2]) - hf(x[:2]).logits).abs().max().item()
    print(f"{cfg.model} context {cfg.context} batch {batch} threads {torch.get_num_threads()}: "
          f"max |logits difference| {diff:.2e}, params ours {sum(p.numel() for p in ours.parameters())} "
          f"hf {sum(p.numel() for p in hf.parameters())}")
    assert diff < 1e-4, "the two models differ"
    runs = {"train_lm": (ours, lambda m, x: m(x)), "hf_llama": (hf, lambda m, x: m(input_ids=x).logits)}
    opts = {k: torch.optim.AdamW(m.parameters(), lr=1e-4, betas=(0.9, 0.95), weight_decay=0.1)
            for k, (m, _) in runs.items()}
    rates = {k: [] for k in runs}
    for k, (m, f) in runs.items():                               # warm-up
        train_steps(m, f, opts[k], x, y, 1)
    for r in range(cfg.repeats):
        for k in (list(runs) if r % 2 == 0 else list(runs)[::-1]):
            m, f = runs[k]
            rates[k].append(train_steps(m, f, opts[k], x, y, cfg.steps))
    med = {k: statistics.median(v) for k, v in rates.items()}
    for k, v in rates.items():
        print(f"{k:9s} median {med[k]:9.0f} tokens/s  (repeats: {', '.join(f'{r:.0f}' for r in v)})")
    paired = statistics.median(a / b for a, b in zip(rates["train_lm"], rates["hf_llama"]))
    print(f"speed-up train_lm / hf_llama: {med['train_lm'] / med['hf_llama']:.2f}x (ratio of medians), "
          f"{paired:.2f}x (median of adjacent pairs)")


if __name__ == "__main__":
    main(tyro.cli(Config))
