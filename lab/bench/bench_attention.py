"""Which attention path is fastest at the sequence lengths this project trains, per precision (run by hand).

Times forward + backward of `flexivit.attention` (ViT: 1-196 tokens) and `lm.attention` (causal, LM
contexts 64-1024) for each path, "sdpa" (torch's fused kernel) and "matmul" (two batched products and a
softmax), in float32 and under CPU bf16 autocast, with q, k, v laid out as the models make them (views of
one projection). Interleaved repeats, median; prints ms per call and which path `auto` takes, so the
choice in attention() can be checked on any machine:

    python bench/bench_attention.py --threads 1
"""
import os
import sys
from contextlib import nullcontext
from dataclasses import dataclass

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import flexivit  # noqa: E402
import lm  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_vit_speed import time_interleaved  # noqa: E402


@dataclass
class Config:
    threads: int = 1  # torch threads (0 = torch's default)
    repeats: int = 7  # interleaved repeats; the median is reported
    steps: int = 3  # timed calls per repeat
    warmup: int = 1  # untimed calls of each path first
    clock: str = "wall"  # 'wall' (perf_counter) or 'cpu' (this process's CPU time)
    vit_tokens: tuple[int, ...] = (1, 4, 16, 49, 196)  # ViT token counts (patch 28, 14, 7, 4, 2 of a 28-pixel image)
    lm_contexts: tuple[int, ...] = (64, 128, 256, 512, 1024)  # LM context lengths (4096 tokens a batch)


def case(module, batch, heads, n, head_dim, impl, amp):
    """A closure: attention forward + backward on q, k, v that are views of one [B, N, 3*H*D] projection."""
    x = torch.randn(batch, n, 3 * heads * head_dim, requires_grad=True)

    def call():
        with amp():
            q, k, v = x.view(batch, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
            out = module.attention(q, k, v, impl)
        out.float().sum().backward()
    return call


def main(cfg):
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    amps = {"fp32": nullcontext, "bf16": lambda: torch.autocast("cpu", dtype=torch.bfloat16)}
    shapes = [("vit", flexivit, 128, 2, n, 32) for n in cfg.vit_tokens] + \
             [("lm", lm, 4096 // t, 4, t, 32) for t in cfg.lm_contexts]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); ms per forward+backward, median of "
          f"{cfg.repeats}")
    print(f"{'model':<5} {'batch':>5} {'heads':>5} {'tokens':>6} {'prec':>5} {'sdpa':>9} {'matmul':>9} "
          f"{'auto takes':>10} {'auto/best':>9}")
    for kind, module, batch, heads, n, d in shapes:
        for prec, amp in amps.items():
            sec = time_interleaved({impl: case(module, batch, heads, n, d, impl, amp) for impl in ("sdpa", "matmul")}, cfg)
            ms = {k: v * 1e3 for k, v in sec.items()}
            with amp():
                auto = "matmul" if torch.is_autocast_enabled("cpu") else "sdpa"   # attention()'s rule on a CPU
            print(f"{kind:<5} {batch:5d} {heads:5d} {n:6d} {prec:>5} {ms['sdpa']:9.2f} {ms['matmul']:9.2f} "
                  f"{auto:>10} {ms[auto] / min(ms.values()):9.2f}")


if __name__ == "__main__":
    import tyro
    main(tyro.cli(Config))
