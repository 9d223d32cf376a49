"""Timing and grid convergence of schedule.py (paper Sec. 4, Eq. 2): the exact greedy partition and the DP.

For M random laws E = a (C + d)^-b + c over joint configs {"patch", "width"} it times make_schedule
  greedy: --allow-any, free switches (the grid argmin + brentq refinement),
  dp:     a switch cost, so the dynamic programme over the error grid runs (+ boundary refinement),
and reports how far the predicted compute at each grid size is from a very fine grid (relative).

    OMP_NUM_THREADS=1 python bench/bench_schedule.py
    python bench/bench_schedule.py --configs 2 20 --grids 200 2000 --repeats 3     # quick
"""
import itertools
import os
import statistics
import sys
import time
from dataclasses import dataclass

import numpy as np
import tyro

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import schedule as sch  # noqa: E402


@dataclass
class Config:
    configs: tuple[int, ...] = (2, 5, 10, 20, 50)  # numbers of configurations (laws)
    grids: tuple[int, ...] = (500, 2000, 8000)  # error grid sizes (--grid of schedule.py)
    reference_grid: int = 64000  # grid of the reference for the convergence column
    repeats: int = 5  # timed repeats per cell (the median is printed)
    seed: int = 0


def random_laws(M, rng):
    """M configs ordered from cheap-and-limited to expensive-and-better (smaller c, larger d), jittered."""
    keys = list(itertools.product((32, 28, 16, 14, 8, 7, 4, 2), (64, 128, 192, 256, 384, 512, 640, 768)))
    laws = []
    for k, i in enumerate(sorted(rng.choice(len(keys), M, replace=False))):
        p, w = keys[i]
        c, b = 0.3 * 0.85 ** (k * 20 / M) * rng.uniform(0.95, 1.05), rng.uniform(0.4, 0.6)
        d, f0 = 1e10 * 2.0 ** (k * 20 / M) * rng.uniform(0.8, 1.25), rng.uniform(0.88, 0.92)
        laws.append(sch.Law(f"patch={p},width={w}", {"patch": int(p), "width": int(w)}, (f0 - c) * d ** b, b, c, d))
    return laws


def main(cfg):
    rng = np.random.default_rng(cfg.seed)
    print(f"{'M':>4} {'grid':>6} {'mode':>7} {'method':>7} {'median ms':>10} {'stages':>6} {'savings':>8} "
          f"{'rel. diff vs fine grid':>22}")
    for M in cfg.configs:
        laws = random_laws(M, rng)
        target = min(l.c for l in laws) * 1.1
        modes = {"greedy": dict(rules=sch.parse_rules(allow_any=True)),
                 "dp": dict(rules=sch.parse_rules(), switch_cost=1e9)}
        for mode, kw in modes.items():
            ref = sch.make_schedule(laws, target, grid=cfg.reference_grid, **kw)["predicted"]["flops"]
            for n in cfg.grids:
                times = []
                for _ in range(cfg.repeats):
                    t = time.perf_counter()
                    doc = sch.make_schedule(laws, target, grid=n, **kw)
                    times.append(time.perf_counter() - t)
                pr = doc["predicted"]
                print(f"{M:>4} {n:>6} {mode:>7} {doc['method']:>7} {1e3 * statistics.median(times):>10.2f} "
                      f"{len(doc['stages']):>6} {100 * pr['savings']:>7.2f}% {abs(pr['flops'] - ref) / ref:>22.2e}")


if __name__ == "__main__":
    main(tyro.cli(Config))
