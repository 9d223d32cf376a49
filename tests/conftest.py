"""Shared pytest set-up: the repo root on sys.path, one thread per test process (tests are tiny)."""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


def make_images(n, rng, size=16):
    """n tiny images whose class is where a bright square sits (learnable in a few dozen steps), and labels."""
    y = rng.integers(0, 10, n)
    x = rng.integers(0, 60, (n, size, size)).astype(np.uint8)
    for i, c in enumerate(y):                                # a bright square whose place is the class
        r, col = divmod(int(c), 4)
        x[i, r * 4:r * 4 + 4, col * 4:col * 4 + 4] = 250
    return x, y
