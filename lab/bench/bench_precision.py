"""Training-step speed by precision, side by side in one process (run by hand; prints a table).

For each ViT shape (batch 128, 28-pixel images) and the LM (L128-4 at context 256, 4096 tokens a step),
three training steps (forward, loss, backward, AdamW) are timed in interleaved repeats, median:

  before  the float32 path the trainers had before --precision: fused SDPA attention, unfused AdamW
  fp32    today's float32 path: attention() picks its kernel, fused AdamW
  bf16    bf16 autocast (master weights and AdamW state float32), attention() picks the matmul path
  compile fp32 under torch.compile (inductor; compiled before timing)     (only with --variants ... compile)
  tanh    fp32 with the tanh-approximated GELU (big_vision's choice)      (only with --variants ... tanh)

and reported as ms per step, GFLOP/s (6 x blocks-only MACs per example, the paper's count), the ratio to
"before", and the share of this process's own 2048^2 matmul rate in that precision. The "ceiling" column
times the step's GEMMs alone at their exact shapes in bf16: no implementation on these kernels beats it.
The first line says whether this CPU has bf16 matrix units (AMX-BF16); without them bf16 matmuls run on
avx512_bf16 dot products, slower than float32, and the bf16 column shows that.

    python bench/bench_precision.py --threads 1
    python bench/bench_precision.py --threads 1 --shapes V128-6/4 --lm ''     # one shape
    python bench/bench_precision.py --threads 1 --clock cpu                    # on a busy machine
    python bench/bench_precision.py --threads 1 --clock cpu --shapes V64-4/14 V64-4/7 --lm '' \
        --variants before fp32 compile tanh                                    # torch.compile, tanh GELU
"""
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, HERE)
import flexivit  # noqa: E402
import lm  # noqa: E402
import runtime  # noqa: E402
from bench_vit_speed import best_seconds, gemm_ceiling, time_interleaved  # noqa: E402


@dataclass
class Config:
    shapes: tuple[str, ...] = ("V128-6/4", "V256-6/7", "V64-4/7", "V64-4/14")
    """ViT model/patch pairs to time (batch --batch, 28-pixel single-channel images)"""
    lm: str = "L128-4/256"  # LM model/context to time ('' = none); 4096 tokens a step
    batch: int = 128  # ViT examples per step
    steps: int = 3  # timed steps per repeat
    repeats: int = 5  # interleaved repeats; the median is reported
    threads: int = 1  # torch threads (0 = torch's default)
    warmup: int = 1  # untimed steps of each variant first
    clock: str = "wall"  # 'wall' (perf_counter) or 'cpu' (this process's CPU time: steadier on a loaded machine)
    variants: tuple[str, ...] = ("before", "fp32", "bf16")
    """which steps to time: before, fp32, bf16, compile, tanh (ViT only for the last two)"""


def vit_step(name, patch, batch, variant):
    torch.manual_seed(0)
    model = flexivit.build(name).set_attention("sdpa" if variant == "before" else "auto")
    for block in model.blocks:
        block.mlp.act.approximate = "tanh" if variant == "tanh" else "none"
    fwd = torch.compile(model, dynamic=False) if variant == "compile" else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=variant != "before")
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "bf16" else nullcontext
    x, y = torch.randn(batch, 1, 28, 28), torch.randint(0, 10, (batch,))

    def step():
        with amp():
            loss = F.cross_entropy(fwd(x, patch), y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, 6 * model.macs(patch) * batch, model


def lm_step(name, context, variant, tokens=4096):
    torch.manual_seed(0)
    model = lm.LM(**lm.model_args(name, 256, context)).set_attention("sdpa" if variant == "before" else "auto")
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=variant != "before")
    amp = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if variant == "bf16" else nullcontext
    x = torch.randint(0, 256, (tokens // context, context))

    def step():
        with amp():
            logits = model(x)
        F.cross_entropy(logits.float().flatten(0, 1), x.flatten()).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return step, 6 * model.macs_per_token(context) * tokens, model


def matmul_rate(dtype, clock, n=2048):
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    return 2 * n**3 / best_seconds(lambda: a @ b, clock, repeats=5) / 1e9


def bf16_ceiling(model, patch, batch, clock):
    """Seconds of the step's GEMMs alone in bf16 (bench_vit_speed.gemm_ceiling at bf16 inputs)."""
    class C:   # gemm_ceiling reads cfg.batch
        pass
    c = C()
    c.batch = batch
    default = torch.get_default_dtype()
    try:
        torch.set_default_dtype(torch.bfloat16)
        return gemm_ceiling(c, model.width, model.depth, model.heads, model.mlp_dim, model.tokens(patch), clock)
    finally:
        torch.set_default_dtype(default)


def main(cfg):
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    units, what = runtime.bf16_matrix_units(torch.device("cpu"))
    clock = time.process_time if cfg.clock == "cpu" else time.perf_counter
    rate = {"fp32": matmul_rate(torch.float32, clock), "bf16": matmul_rate(torch.bfloat16, clock)}
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s); bf16 matrix units: "
          f"{'yes (' + what + ')' if units else 'no (lacks ' + what + ')'}; 2048^2 matmul: "
          f"fp32 {rate['fp32']:.0f} GFLOP/s, bf16 {rate['bf16']:.0f} GFLOP/s; median of {cfg.repeats} x {cfg.steps} steps")
    print(f"{'shape':<14} {'variant':<7} {'ms/step':>8} {'GFLOP/s':>8} {'vs before':>9} {'% of matmul':>11}")
    cases = [(s, "vit") for s in cfg.shapes] + ([(cfg.lm, "lm")] if cfg.lm else [])
    for shape, kind in cases:
        name, n = shape.split("/")
        variants = [v for v in cfg.variants if kind == "vit" or v not in ("compile", "tanh")]
        made = {v: (vit_step(name, int(n), cfg.batch, v) if kind == "vit" else lm_step(name, int(n), v))
                for v in variants}
        sec = time_interleaved({v: m[0] for v, m in made.items()}, cfg)   # A B C A B C ..., median
        flops = next(iter(made.values()))[1]
        for v, s in sec.items():
            prec = "bf16" if v == "bf16" else "fp32"
            print(f"{shape:<14} {v:<7} {s * 1e3:8.1f} {flops / s / 1e9:8.1f} {sec.get('before', s) / s:8.2f}x "
                  f"{100 * flops / s / 1e9 / rate[prec]:10.0f}%")
        if kind == "vit" and "bf16" in made:
            ceil = bf16_ceiling(made["bf16"][2], int(n), cfg.batch, clock)
            print(f"{shape:<14} {'ceiling':<7} {ceil * 1e3:8.1f} {flops / ceil / 1e9:8.1f} {sec.get('before', ceil) / ceil:8.2f}x "
                  f"{100 * flops / ceil / 1e9 / rate['bf16']:10.0f}%   (bf16 GEMMs alone)")


if __name__ == "__main__":
    import tyro
    main(tyro.cli(Config))
